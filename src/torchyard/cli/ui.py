"""``torchyard ui``: serve the dashboard (runs, live charts, per-rank logs, sweeps) and its JSON API."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``ui`` to the top-level parser's ``subparsers``."""
    p = subparsers.add_parser(
        "ui",
        help="serve the dashboard and its JSON API (default http://127.0.0.1:8765/)",
        description="Serve the workspace's dashboard: runs table, run pages with live charts and per-rank "
        "logs, sweeps, and the JSON API under /api/v1 (OpenAPI at /api/v1/openapi.json). Binds "
        "127.0.0.1 unless --host is given; another address needs an access token.",
    )
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--token", default=None,
                   help="access token every request must carry (default: env TORCHYARD_TOKEN); "
                   "required for a non-loopback --host")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host header name to answer (e.g. a reverse proxy's); repeatable")
    p.add_argument("--workspace", dest="ui_workspace", default=None, metavar="DIR",
                   help="workspace folder (as the global --workspace)")
    p.set_defaults(func=cmd_ui)
    from torchyard.cli.common import example  # noqa: PLC0415

    example(p, "torchyard ui --port 8765    # then open http://127.0.0.1:8765/")


def cmd_ui(args: argparse.Namespace) -> int:
    from torchyard.cli.common import require_extra  # noqa: PLC0415
    from torchyard.errors import SpecError  # noqa: PLC0415

    require_extra("ui", "the dashboard", "starlette", "uvicorn", "numpy")
    from torchyard.server.serve import serve  # noqa: PLC0415

    if not 0 <= args.port <= 65535:
        raise SpecError("--port", f"must be between 0 and 65535, got {args.port}")
    token = args.token or os.environ.get("TORCHYARD_TOKEN") or None
    serve(args.ui_workspace or args.workspace, host=args.host, port=args.port, token=token,
          extra_hosts=args.allowed_host)
    return 0
