"""Run the dashboard on uvicorn: bind first (so the printed URL answers at once), then serve."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from torchyard.errors import SpecError
from torchyard.server.security import allowed_hosts, is_loopback

DEFAULT_PORT = 8765


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address unless an access token is configured."""
    if not is_loopback(host) and not token:
        raise SpecError(
            "--host", f"{host} is reachable from other machines; set an access token first "
            "(--token or TORCHYARD_TOKEN), or keep the default 127.0.0.1"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise SpecError("--port", f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    workspace_path: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    extra_hosts: Sequence[str] = (),
    out: TextIO | None = None,
) -> None:
    """Serve the workspace's dashboard until interrupted; prints the URL once it is listening."""
    check_bind(host, token)
    import uvicorn  # noqa: PLC0415

    from torchyard.sdk import Workspace  # noqa: PLC0415
    from torchyard.server.app import create_app  # noqa: PLC0415

    ws = Workspace(path=workspace_path)
    ws.store  # noqa: B018 - open (and migrate) the store before answering anything
    sock = bind(host, port)
    port = sock.getsockname()[1]
    app = create_app(ws, hosts=allowed_hosts(host, port, extra_hosts), token=token)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{port}/"
    stream = out or sys.stdout
    print(f"torchyard dashboard for {ws.path}", file=stream)
    print(url + (f"?token={token}" if token else ""), file=stream, flush=True)
    from torchyard.runtime.liveness import readopt_in_background  # noqa: PLC0415

    readopt_in_background(ws.store)  # runs whose supervisor died while no server ran: replaced now
    config = uvicorn.Config(app, log_level=os.environ.get("TORCHYARD_UI_LOG", "warning"), access_log=False,
                            timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        ws.store.dispose()


def open_team_workspace(workspace_path: str | None, db: str | None, artifacts: str | None) -> Any:
    """The server's workspace: ``db`` (PostgreSQL URL, or SQLite for a single user) and ``artifacts``
    (a registered datastore's name, an ``s3://bucket/prefix`` URL, or ``local``)."""
    from torchyard.sdk import Workspace  # noqa: PLC0415

    ws = Workspace(path=workspace_path, db_url=db)
    ws.store  # noqa: B018 - open (and migrate) the store first
    if artifacts:
        if artifacts == "local":
            ws.set_artifact_store(None)
        elif artifacts.startswith("s3://"):
            from torchyard.data.datastore import Datastore  # noqa: PLC0415

            bucket, _, prefix = artifacts[5:].partition("/")
            Datastore.register_s3(ws, "server-artifacts", bucket, prefix or None,
                                  endpoint_url=os.environ.get("TORCHYARD_ARTIFACTS_ENDPOINT") or None)
            ws.set_artifact_store("server-artifacts")
        else:
            ws.set_artifact_store(artifacts)
    return ws


def serve_team(
    workspace_path: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    db: str | None = None,
    artifacts: str | None = None,
    extra_hosts: Sequence[str] = (),
    out: TextIO | None = None,
    report_url: str | None = None,
) -> None:
    """``torchyard server``: the dashboard and the whole API behind users and tokens, until interrupted.
    Refuses to start before an admin exists (``torchyard server create-admin``). ``report_url``:
    where nodes of targets that report over HTTP reach this server (default: the URL it prints)."""
    import uvicorn  # noqa: PLC0415

    from torchyard.server.app import create_app  # noqa: PLC0415
    from torchyard.workspace.access import AccessStore  # noqa: PLC0415

    ws = open_team_workspace(workspace_path, db, artifacts)
    if not AccessStore(ws.store.engine).has_admin():
        raise SpecError("server", "no admin user yet: run `torchyard server create-admin NAME` first "
                                  "(with the same --workspace/--db)")
    sock = bind(host, port)
    port = sock.getsockname()[1]
    app = create_app(ws, hosts=allowed_hosts(host, port, extra_hosts), users=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    stream = out or sys.stdout
    print(f"torchyard server for {ws.path} (store {_safe(ws.db_url)})", file=stream)
    # the supervisors this server starts hand it to nodes that report over HTTP (with a run token)
    os.environ["TORCHYARD_REPORT_URL"] = report_url or os.environ.get("TORCHYARD_REPORT_URL") or f"http://{shown}:{port}"
    print(f"http://{shown}:{port}/", file=stream, flush=True)
    from torchyard.runtime.liveness import readopt_in_background  # noqa: PLC0415

    readopt_in_background(ws.store)  # runs whose supervisor died while no server ran: replaced now
    config = uvicorn.Config(app, log_level=os.environ.get("TORCHYARD_UI_LOG", "warning"), access_log=False,
                            timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        ws.store.dispose()


def _safe(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
