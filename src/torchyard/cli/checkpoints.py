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
    (`checkpoints/step_N`, for `torchyard download`), `node` before that. With `--register NAME
    --step N` the checkpoint step_N is registered as a new version of model NAME instead (its step,
    attempt and metrics as properties), as `run.register_model(NAME, checkpoint=N)` does.

    Example:
      torchyard checkpoints digits_1733600000_ab12cd34 -o json
      torchyard checkpoints digits_1733600000_ab12cd34 --register digits --step 4 --tag stage=dev"""
    from torchyard.errors import SpecError, TorchyardError  # noqa: PLC0415

    if (args.register is None) != (args.step is None) or ((args.tag or args.description) and args.register is None):
        raise SpecError("register", "give --register NAME and --step N together (--tag and --description go with them)")
    run = workspace(args).get_run(args.run_id)
    if not hasattr(run, "get_checkpoints"):
        raise TorchyardError(f"run {run.id}: a team server's runs do not list their checkpoints yet; "
                             f"`torchyard download {run.id} checkpoints/` fetches them")
    if args.register is not None:
        return _register(args, run)
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


def _register(args: argparse.Namespace, run: Any) -> int:
    from torchyard.errors import SpecError  # noqa: PLC0415

    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError("tag", f"expected KEY=VALUE, got {item!r}")
        tags[key] = value
    model = run.register_model(args.register, tags=tags, description=args.description, checkpoint=args.step)
    emit(args, with_utc(model.serialize(), "created_at"),
         lambda: print(f"registered {model.id} from {run.id} checkpoint step_{args.step} (sha256 {model.sha256[:16]}…)"))
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
    p.add_argument("--register", metavar="NAME", help="register a checkpoint as a new version of model NAME")
    p.add_argument("--step", type=int, metavar="N", help="with --register: the checkpoint's step")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="with --register: a tag (repeatable)")
    p.add_argument("--description", help="with --register: the version's description")
    add_output(p)
