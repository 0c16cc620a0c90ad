"""What every command group shares: the workspace option, one-line errors, tables, waiting on a run.

Each group lives in a module of its own with ``register(subparsers)``; :func:`command` makes a leaf
command whose ``--help`` is its handler's docstring.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def command(subparsers: Any, name: str, handler: Handler, **kw: Any) -> argparse.ArgumentParser:
    """A leaf command: its help is the first line of ``handler``'s docstring, its description the rest."""
    doc = (handler.__doc__ or "").strip()
    first, _, rest = doc.partition("\n\n")
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=first.replace("\n", " "), description=doc.replace("\n", " ") if not rest else
        first.replace("\n", " ") + "\n\n" + rest, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    p.set_defaults(func=handler)
    return p


def group(subparsers: Any, name: str, help: str, dest: str) -> Any:
    """A command group (``runs``, ``env``...): without a subcommand it prints its help and exits 2."""
    p = subparsers.add_parser(name, help=help, description=help)
    p.set_defaults(func=lambda _args: _usage(p))
    return p.add_subparsers(dest=dest, metavar="SUBCOMMAND")


def _usage(p: argparse.ArgumentParser) -> int:
    print(p.format_help(), file=sys.stderr, end="")
    return EXIT_USAGE


class UsageError(Exception):
    pass


def kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def workspace(args: argparse.Namespace) -> Any:
    """The workspace a command works on: ``--workspace`` (a folder or a team server's URL), else
    TORCHYARD_WORKSPACE / TORCHYARD_SERVER, else ``./.torchyard`` or a parent's, else the server
    ``torchyard login`` saved, else a new ``./.torchyard``."""
    import os  # noqa: PLC0415

    from torchyard.sdk import Workspace  # noqa: PLC0415

    chosen = args.workspace
    if chosen is None and not os.environ.get("TORCHYARD_WORKSPACE") and not os.environ.get("TORCHYARD_SERVER"):
        from torchyard.workspace.workspace import find_workspace  # noqa: PLC0415

        if find_workspace() is None:
            from torchyard.remote.client import load_credentials  # noqa: PLC0415

            chosen = load_credentials().get("current") or None
    return Workspace(chosen)


def rank_arg(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--rank: expected a rank number or 'all', got {value!r}") from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console(width=None if sys.stdout.isatty() else 250).print(table)


def wait(run: Any, stream: bool, ranks: int | str = 0) -> int:
    from torchyard.status import RunStatus  # noqa: PLC0415

    tty = sys.stderr.isatty()

    def on_status(status: str) -> None:
        if tty or not stream:
            print(f"torchyard: {run.id}: {status}", file=sys.stderr, flush=True)

    try:
        details = run.wait_for_completion(show_output=stream, raise_on_error=False, ranks=ranks, on_status=on_status)
    except KeyboardInterrupt:
        print(f"\ntorchyard: stopped waiting; run {run.id} goes on (`torchyard cancel {run.id}` stops it)", file=sys.stderr)
        return 130
    status = details["status"]
    if not stream:
        print(f"torchyard: {run.id}: {status}", file=sys.stderr)
    if status != RunStatus.COMPLETED:
        reason = (details.get("error") or {}).get("message") or details.get("cancel_reason") or status
        print(f"torchyard: run {run.id} ended {status}: {reason}", file=sys.stderr)
        return 1
    return 0
