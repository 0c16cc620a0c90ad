"""``torchyard tensorboard RUN_ID... [--port P]``: TensorBoard over runs' event files.

Each run contributes the event files its ranks wrote to ``TORCHYARD_TENSORBOARD_DIR``
(``logs/tensorboard/rank_N``); a run that wrote none gets its torchyard metrics exported as event files
first. Then this process becomes the real ``tensorboard`` server (exec), bound to 127.0.0.1, until
stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import sys
from typing import Any

from torchyard.errors import TorchyardError

DEFAULT_PORT = 6006


def register(subparsers: Any) -> None:
    """Add ``tensorboard`` to the top-level parser."""
    p = subparsers.add_parser(
        "tensorboard",
        help="start TensorBoard over runs' event files (or their metrics, exported)",
        description="Start TensorBoard over the event files the runs' ranks wrote to TORCHYARD_TENSORBOARD_DIR; "
        "a run without any has its metrics exported as event files first. Needs `pip install torchyard[tensorboard]`.",
    )
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="the runs to show (one TensorBoard run per rank)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="loopback address to bind (default: 127.0.0.1; TensorBoard has no authentication, "
                   "so other addresses are refused)")
    p.add_argument("--dry-run", action="store_true", help="export and print the TensorBoard command; start nothing")
    p.set_defaults(func=cmd_tensorboard)
    from torchyard.cli.common import example  # noqa: PLC0415

    example(p, "torchyard tensorboard digits_1733600000_ab12cd34 digits_1733600100_cd34ef56 --port 6006")


def _check(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise TorchyardError(f"--port: expected 1-65535, got {args.port}")
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TorchyardError(f"--host: {args.host!r} is not a loopback address; TensorBoard has no authentication")
    if importlib.util.find_spec("tensorboard") is None:
        raise TorchyardError("tensorboard is not installed: pip install 'torchyard[tensorboard]'")


def command(logdirs: dict[str, tuple[str, str]], host: str, port: int) -> list[str]:
    """The TensorBoard command line for ``{name: (folder, how)}``."""
    spec = ",".join(f"{name}:{folder}" for name, (folder, _how) in logdirs.items())
    return [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec, "--host", host, "--port", str(port)]


def cmd_tensorboard(args: argparse.Namespace) -> int:
    _check(args)
    from torchyard.integrations.tensorboard import logdirs  # noqa: PLC0415
    from torchyard.sdk import Workspace  # noqa: PLC0415

    ws = Workspace(args.workspace)
    found = logdirs(ws, list(dict.fromkeys(args.run_ids)))
    for run_id, (folder, how) in found.items():
        what = "event files" if how == "events" else "metrics exported as event files"
        print(f"{run_id}: {what} in {folder}")
    argv = command(found, args.host, args.port)
    if args.dry_run:
        print(" ".join(argv))
        return 0
    print(f"TensorBoard at http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    sys.stderr.flush()
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - exec does not return
