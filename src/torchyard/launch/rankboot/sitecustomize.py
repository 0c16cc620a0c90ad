"""Loaded by every Python rank torchyard starts (the launcher puts this folder first on PYTHONPATH).

It registers :mod:`faulthandler` on a real-time signal (SIGRTMIN+4: SIGUSR1 is taken by Lightning's
Slurm requeue and others), writing every thread's stack to ``$TORCHYARD_STACKS_DIR/rank_$RANK.txt``,
and leaves ``rank_$RANK.pid`` (pid, host, node rank, signal number) beside it, so the launcher can ask a
hung rank where it is (``logs/stacks_rank_N.txt``). Then it imports the
``sitecustomize`` this one hides, if any. Stdlib only, and nothing when the variables are not set (a
process that is not a rank: torchrun's agent, a tool the script runs); a rank's own children (spawned
data loader workers) inherit the variables and skip it, as the rank's pid is already recorded.

It also registers, first (so it runs last), an exit hook for ranks of a distributed job (WORLD_SIZE
above 1, or a backend set) that used ``torch.distributed``:
a gloo worker thread can still be dropping its last finished work object, which holds a Python
object, when the interpreter starts finalizing; the thread then cannot take the GIL, CPython ends it
with ``pthread_exit`` inside a ``noexcept`` C++ destructor, and the whole rank dies by SIGABRT
("terminate called without an active exception") after the script has finished. The hook collects
garbage (a process group still held by a model is destroyed with the GIL released, joining its
threads) and then gives the GIL away for a short while, so such a thread finishes while the
interpreter is whole.
"""

from __future__ import annotations

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_file = None  # the open stacks file: faulthandler writes to its descriptor when the signal comes


def _install() -> None:
    global _file
    folder = os.environ.get("TORCHYARD_STACKS_DIR")
    rank = os.environ.get("RANK")
    owner = os.environ.get("TORCHYARD_STACKS_OWNER")
    if not folder or rank is None or (owner and owner != str(os.getpid())):
        return
    import faulthandler  # noqa: PLC0415
    import signal  # noqa: PLC0415

    try:
        os.makedirs(folder, exist_ok=True)
        _file = open(os.path.join(folder, f"rank_{rank}.txt"), "w")  # noqa: SIM115 - open for the process's life
        signum = signal.SIGRTMIN + 4
        faulthandler.register(signum, file=_file, all_threads=True, chain=False)
        pid_path = os.path.join(folder, f"rank_{rank}.pid")
        with open(pid_path + ".tmp", "w") as fh:
            fh.write(f"{os.getpid()} {os.uname().nodename} {os.environ.get('NODE_RANK', '0')} {int(signum)}\n")
        os.replace(pid_path + ".tmp", pid_path)
        os.environ["TORCHYARD_STACKS_OWNER"] = str(os.getpid())
    except (OSError, RuntimeError, ValueError, AttributeError):
        pass  # no stacks for this rank; the run goes on


#: how long a distributed rank gives the GIL away at exit (TORCHYARD_EXIT_SETTLE_SECONDS)
EXIT_SETTLE = 0.1


def _settle_native_threads() -> None:
    if "torch.distributed" not in sys.modules:
        return
    import gc  # noqa: PLC0415
    import time  # noqa: PLC0415

    try:
        seconds = float(os.environ.get("TORCHYARD_EXIT_SETTLE_SECONDS", EXIT_SETTLE))
    except ValueError:
        seconds = EXIT_SETTLE
    gc.collect()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def _guard_exit() -> None:
    # a rank of a distributed job only: a 1-process run that merely imports torch.distributed
    # (Lightning always does) has no process group's threads to wait for
    distributed = os.environ.get("WORLD_SIZE", "1") != "1" or os.environ.get("TORCHYARD_DIST_BACKEND")
    if os.environ.get("RANK") is not None and distributed:
        import atexit  # noqa: PLC0415

        atexit.register(_settle_native_threads)


def _chain() -> None:
    """Import the next ``sitecustomize`` on sys.path (the interpreter's or the environment's own)."""
    mine = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    try:
        import sitecustomize  # noqa: F401, PLC0415
    except ImportError:
        if mine is not None:
            sys.modules["sitecustomize"] = mine
    finally:
        sys.path[:] = saved


_guard_exit()
_install()
_chain()
