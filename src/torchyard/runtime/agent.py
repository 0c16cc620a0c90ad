"""The local agent: a warm, per-workspace helper that makes `torchyard run` start fast.

Importing SQLAlchemy and opening the store costs a fresh Python process a few hundred milliseconds;
paying it twice (CLI, then supervisor) dominated the start of a short run. The first CLI submission
starts one agent per (workspace, store URL, torchyard code version) in the background; it imports
everything once and then, per request, forks a child that records the run and *becomes* that run's
supervisor — so a run starts as soon as its launcher can. The CLI never imports SQLAlchemy on this
path: it streams the run's log files and gets the final status over the socket.

The agent listens on a Linux abstract Unix socket (nothing on disk), serves only its own user, and
exits after ``TORCHYARD_AGENT_IDLE`` seconds (default 600) without a request. Set
``TORCHYARD_AGENT=0`` to never use it; everything then works the slower, direct way.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from typing import Any

from torchyard.paths import RunPaths

PROTOCOL = 1


def _fingerprint() -> str:
    """Changes whenever torchyard's code does, so a stale agent is never used."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha1(str(PROTOCOL).encode())
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{dirpath}/{name}:{st.st_mtime_ns}:{st.st_size}".encode())
    h.update(sys.executable.encode())
    return h.hexdigest()


def address(workspace: str, db_url: str) -> str:
    key = hashlib.sha1(f"{os.getuid()}|{workspace}|{db_url}|{_fingerprint()}".encode()).hexdigest()[:24]
    return f"\0torchyard-agent-{key}"


def enabled() -> bool:
    return os.environ.get("TORCHYARD_AGENT", "1") not in ("0", "false", "no", "off")


def connect(workspace: str, db_url: str) -> socket.socket | None:
    """A connection to a live agent for this workspace, or None (and one is started for next time)."""
    addr = address(workspace, db_url)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(addr)
        return sock
    except OSError:
        sock.close()
    start(workspace, db_url)
    return None


def start(workspace: str, db_url: str) -> None:
    """Start an agent in the background, detached; it dies quietly if another already serves."""
    log = os.path.join(workspace, "agent.log")
    cmd = '"$2" -m torchyard.runtime.agent "$3" "$4" </dev/null >>"$1" 2>&1 &'
    subprocess.run(
        ["/bin/sh", "-c", cmd, "sh", log, sys.executable, workspace, db_url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        check=False,
    )


class Channel:
    """Newline-delimited JSON messages over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def ready(self, timeout: float) -> bool:
        """Whether a message can be read now (waits up to ``timeout`` seconds for one)."""
        if b"\n" in self.buffer:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None when the peer closed the connection."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        self.sock.close()


# ---- the agent process ------------------------------------------------------------------------------


def _handle(conn: socket.socket, workspace: str, db_url: str, warm: Any = None) -> int:
    from torchyard.errors import TorchyardError  # noqa: PLC0415
    from torchyard.runtime.submit import record_run  # noqa: PLC0415
    from torchyard.runtime.summary import execution_summary  # noqa: PLC0415
    from torchyard.runtime.supervisor import supervise  # noqa: PLC0415
    from torchyard.spec.job import JobSpec  # noqa: PLC0415
    from torchyard.workspace.workspace import WorkspaceFolder  # noqa: PLC0415

    chan = Channel(conn)
    request = chan.recv()
    if request is None:
        return 0
    if request.get("op") == "ping":
        chan.send({"ok": True, "pid": os.getpid()})
        return 0
    if request.get("op") != "submit":
        chan.send({"error": f"unknown request {request.get('op')!r}"})
        return 1
    if isinstance(request.get("env"), dict):  # the run sees the submitter's environment, not the agent's
        os.environ.clear()
        os.environ.update(request["env"])
    # the agent's own Workspace (its engine's pool was emptied before the fork) saves opening one
    ws = warm if warm is not None else WorkspaceFolder(workspace, db_url=db_url)
    try:
        spec = JobSpec.from_json(request["spec"])
        def progress(kind: str, value: int) -> None:  # a large snapshot: the CLI draws the bar
            chan.send({"progress": [kind, value]})

        run_id = record_run(ws, request["experiment"], spec, tags=request.get("tags") or None,
                            progress=progress if request.get("progress") else None)
    except TorchyardError as err:
        chan.send({"error": str(err)})
        return 0
    workdir = ws.run_dir(run_id)
    chan.send({"run_id": run_id, "run_dir": workdir})
    log_fd = os.open(RunPaths(workdir).supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    supervise(workdir, ws)
    if request.get("wait"):
        row = ws.store.get_run(run_id)
        details = json.loads(row["details"] or "{}")
        try:
            chan.send(
                {
                    "status": row["status"],
                    "summary": execution_summary(ws.store, row),
                    "reason": (details.get("error") or {}).get("message") or details.get("cancel_reason"),
                }
            )
        except OSError:
            pass  # the client went away; the run is recorded all the same
    return 0


def _warm_engines(ws: Any) -> None:
    """With a Ray target attached, import ray once here (it starts no thread at import, so it is safe
    to fork): every run's supervisor inherits it instead of paying about a second to import it."""
    import importlib.util  # noqa: PLC0415

    from torchyard.compute.registry import ComputeRegistry  # noqa: PLC0415

    kinds = {r.get("kind") for r in ComputeRegistry(ws.path).list()}
    if "ray" in kinds and importlib.util.find_spec("ray") is not None:
        import ray  # noqa: F401, PLC0415
        import ray.util.placement_group  # noqa: F401, PLC0415
        import ray.util.scheduling_strategies  # noqa: F401, PLC0415

        from torchyard.compute import ray_backend  # noqa: F401, PLC0415


def serve(workspace: str, db_url: str) -> int:
    idle = float(os.environ.get("TORCHYARD_AGENT_IDLE", "600"))
    from torchyard import environments  # noqa: F401, PLC0415 - warm: imported once, inherited by every fork
    from torchyard.compute import local, registry  # noqa: F401, PLC0415
    from torchyard.launch import launcher  # noqa: F401, PLC0415
    from torchyard.runtime import supervisor  # noqa: F401, PLC0415
    from torchyard.workspace.workspace import WorkspaceFolder  # noqa: PLC0415

    ws = WorkspaceFolder(workspace, db_url=db_url)
    ws.store.dispose()  # migrated; no connection may cross a fork
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address(workspace, db_url))
    except OSError:
        return 0  # another agent serves this workspace
    sock.listen(128)
    sock.settimeout(idle)
    _warm_engines(ws)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    print(f"torchyard agent {os.getpid()} serving {workspace}", flush=True)
    while True:
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            break
        if not os.path.isdir(workspace):
            conn.close()
            break
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                conn.settimeout(None)
                code = _handle(conn, workspace, db_url, ws)
            except BaseException:
                import traceback  # noqa: PLC0415

                traceback.print_exc()
            finally:
                os._exit(code)
        conn.close()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2]))
