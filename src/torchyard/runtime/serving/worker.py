"""One service worker: ``python -m torchyard.runtime.serving.worker SPEC.json FD LABEL STATUS_DIR [--load-first]``.

It serves the scoring app (uvicorn) on the listening socket ``FD`` inherited from the service's
supervisor (every worker of every generation shares that one socket, so a connection waiting in
its queue is taken by whichever worker accepts next: nothing is dropped when a worker goes).

By default it answers at once (503 until the user's code has loaded); with ``--load-first`` it
loads, then serves (an update's new workers, a restarted worker). It writes ``LABEL.ready`` into
STATUS_DIR when loaded, or ``LABEL.failed`` (the traceback) and exits 3 if loading raised.

SIGTERM drains: the worker stops accepting, answers what it has with ``connection: close``, waits
until its connections are closed (at most ``drain_seconds``), then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

DRAIN_SECONDS = 10.0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    load_first = "--load-first" in args
    args = [a for a in args if a != "--load-first"]
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    spec_path, fd_text, label, status_dir = args
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:
        return 1
    with open(spec_path) as fh:
        spec = json.load(fh)
    os.environ.setdefault("OMP_NUM_THREADS", str(spec["config"].get("threads_per_worker", 1)))
    import uvicorn  # noqa: PLC0415

    from torchyard.runtime.serving.app import ScoringApp  # noqa: PLC0415

    app = ScoringApp(spec, label, os.path.join(os.path.dirname(os.path.dirname(spec_path)), "keys.json"),
                     metrics_dir=status_dir)  # /metrics sums every worker's counters
    sock = socket.socket(fileno=int(fd_text))
    ready_path = os.path.join(status_dir, f"{label}.ready")
    failed_path = os.path.join(status_dir, f"{label}.failed")

    def failed() -> int:
        text = traceback.format_exc()
        print(f"torchyard: worker {label}: loading the scoring code failed:\n{text}", file=sys.stderr, flush=True)
        _write(failed_path, text)
        return 3

    if load_first:
        try:
            app.load()
        except BaseException:  # noqa: BLE001 - the user's init() may raise anything
            return failed()
        _write(ready_path, str(time.time()))

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # our own handlers (drain), installed below

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=30, backlog=2048)
    server = Server(config)
    outcome: dict[str, Any] = {"code": 0}

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def drain() -> None:
            if app.draining:
                server.should_exit = True
                return
            app.draining = True
            loop.create_task(_drain(server, app))

        loop.add_signal_handler(signal.SIGTERM, drain)
        loop.add_signal_handler(signal.SIGINT, drain)
        if not load_first:

            async def load() -> None:
                try:
                    await app.load_async()
                except BaseException:  # noqa: BLE001
                    outcome["code"] = failed()
                    server.should_exit = True
                    return
                _write(ready_path, str(time.time()))
                print(f"torchyard: worker {label}: ready", file=sys.stderr, flush=True)

            loop.create_task(load())
        await server.serve(sockets=[sock])

    loop_factory = config.get_loop_factory()
    if loop_factory is not None:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run())
    else:  # pragma: no cover
        asyncio.run(run())
    code: int = outcome["code"]
    return code


async def _drain(server: Any, app: Any) -> None:
    """Stop accepting; let clients finish (their next answer says ``connection: close``)."""
    for srv in getattr(server, "servers", []):
        srv.close()
    deadline = time.monotonic() + DRAIN_SECONDS
    state = server.server_state
    idle_rounds = 0
    while time.monotonic() < deadline:
        busy = any(not _idle(c) for c in list(state.connections))
        if not state.connections:
            break
        # Connections still open but idle for a while (clients holding a keep-alive without
        # sending): closed by uvicorn's shutdown below.
        idle_rounds = 0 if busy or app.metrics.inflight else idle_rounds + 1
        if idle_rounds >= 20:
            break
        await asyncio.sleep(0.05)
    server.should_exit = True


def _idle(connection: Any) -> bool:
    cycle = getattr(connection, "cycle", None)
    return cycle is None or bool(getattr(cycle, "response_complete", True))


if __name__ == "__main__":
    sys.exit(main())
