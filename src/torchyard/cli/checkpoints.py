"""``torchyard checkpoints RUN``: the checkpoints a run committed (``run.checkpoint(step)``)."""

from __future__ import annotations

import argparse
from typing import Any

from torchyard.cli.common import (
    add_output,
    command,
    emit,
    fmt_time,
    output_format,
    table,
    with_utc,
    workspace,
)


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List a run's committed checkpoints: step, time, size, metrics and where each is kept.

    A checkpoint is listed once every rank left `with run.checkpoint(step)` without an error;
    `where` is `artifacts` once the supervisor copied it into the run's artifacts
    (`checkpoints/step_N`, for `torchyard download`), `node` before that.

    Example:
      torchyard checkpoints digits_1733600000_ab12cd34 -o json"""
    run = workspace(args).get_run(args.run_id)
    if not hasattr(run, "get_checkpoints"):
        from torchyard.errors import TorchyardError  # noqa: PLC0415

        raise TorchyardError(f"run {run.id}: a team server's runs do not list their checkpoints yet; "
                             f"`torchyard download {run.id} checkpoints/` fetches them")
    found = run.get_checkpoints()
    if output_format(args) != "table":  # -o json|yaml (--json); a time has its ISO-8601 twin, time_utc
        emit(args, [with_utc(c, "time") for c in found], lambda: None)
        return 0
    if not found:
        print(f"run {run.id} has no committed checkpoint")
        return 0
    rows = [[c["step"], fmt_time(c.get("time")), _size(int(c.get("size") or 0)),
             ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in (c.get("metrics") or {}).items())
             or "-", c["where"], c.get("artifact") or c.get("path") or "-"] for c in found]
    table(f"checkpoints of {run.id}", ["step", "time", "size", "metrics", "where", "path"], rows)
    return 0


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def register(sub: Any) -> None:
    """Add ``checkpoints`` to the top-level parser."""
    p = command(sub, "checkpoints", cmd_checkpoints)
    p.add_argument("run_id", metavar="RUN", help="the run's id")
    add_output(p)
