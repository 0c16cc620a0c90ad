"""Starting detached processes: run supervisors, sweep controllers, model services."""

from __future__ import annotations

import subprocess
import sys


def spawn_detached(module: str, arg: str, log: str, python: str | None = None, what: str = "it") -> int:
    """``python -m MODULE ARG`` in the background, output appended to ``log``: a shell starts it and
    exits, so it is nobody's child and outlives its starter. Returns its pid.

    SIGTERM is ignored until the process installs its own handler: whoever got the pid may signal it
    at once (an early cancel), and a process killed during its imports would leave its run without an
    owner. Such a process must check for a pending cancel in the store after installing its handler
    (the canceler writes CancelRequested before it signals)."""
    cmd = "trap '' TERM; \"$2\" -m \"$4\" \"$3\" </dev/null >>\"$1\" 2>&1 & echo $!"
    proc = subprocess.run(
        ["/bin/sh", "-c", cmd, "sh", log, python or sys.executable, arg, module],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
        check=False,
    )
    try:
        return int(proc.stdout.strip())
    except ValueError:
        raise RuntimeError(f"could not start {what} (see {log})") from None
