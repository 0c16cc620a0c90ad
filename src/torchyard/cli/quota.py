"""``torchyard quota set|list|remove``: how many GPUs and runs a user or an experiment may hold at
once on this machine's allocating local targets (an admin's setting; enforced at admission)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from torchyard.cli.common import UsageError, add_output, command, emit, group, table, workspace


def _ledger(args: argparse.Namespace, create: bool = False) -> Any:
    from torchyard.compute.local_alloc import Ledger  # noqa: PLC0415

    ws = workspace(args, create=create)
    if getattr(ws, "is_remote", False):
        raise UsageError("quotas live in the workspace folder: run this where the server runs")
    return Ledger(os.path.join(str(ws.path), "local_alloc"))


def _key(args: argparse.Namespace) -> str:
    if bool(args.user) == bool(args.experiment):
        raise UsageError("name one of --user NAME or --experiment NAME")
    return f"user:{args.user}" if args.user else f"experiment:{args.experiment}"


def _limit(value: int | None, flag: str) -> int | None:
    if value is not None and value < 0:
        raise UsageError(f"{flag} must be 0 or more, got {value}")
    return value


def _rows(quotas: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for key, quota in sorted(quotas.items()):
        kind, _, name = key.partition(":")
        out.append({"kind": kind, "name": name, "gpus": quota.get("gpus"), "runs": quota.get("runs")})
    return out


def cmd_set(args: argparse.Namespace) -> int:
    """Set a user's or an experiment's quota: at most --gpus GPUs and --runs runs at once, over every
    allocating local target of this workspace (a target with GPUs or max_concurrent_runs). A run
    over a quota waits Queued with the reason; runs behind it are not held back.

    Example:
      torchyard quota set --user alice --gpus 2 --runs 3"""
    if args.gpus is None and args.runs is None:
        raise UsageError("give --gpus N and/or --runs N (`torchyard quota remove` removes a quota)")
    key = _key(args)
    _ledger(args, create=True).set_quota(key, _limit(args.gpus, "--gpus"), _limit(args.runs, "--runs"))
    row = _rows({key: {"gpus": args.gpus, "runs": args.runs}})[0]
    emit(args, row, lambda: print(f"torchyard: {row['kind']} {row['name']}: at most "
                                  f"{'any number of' if args.gpus is None else args.gpus} GPUs and "
                                  f"{'any number of' if args.runs is None else args.runs} runs at once"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List the quotas.

    Example:
      torchyard quota list -o json"""
    rows = _rows(_ledger(args).quotas())
    emit(args, rows, lambda: table(None, ["kind", "name", "gpus", "runs"],
                                   [[r["kind"], r["name"], "-" if r["gpus"] is None else r["gpus"],
                                     "-" if r["runs"] is None else r["runs"]] for r in rows]) if rows else
         print("no quotas (`torchyard quota set --user NAME --gpus N` sets one)"))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove a user's or an experiment's quota.

    Example:
      torchyard quota remove --user alice"""
    key = _key(args)
    ledger = _ledger(args)
    if key not in ledger.quotas():
        raise UsageError(f"no quota for {key.replace(':', ' ')}; `torchyard quota list` shows them")
    ledger.set_quota(key, None, None)
    print(f"torchyard: quota of {key.replace(':', ' ')} removed")
    return 0


def register(sub: Any) -> None:
    """Add ``quota`` and its subcommands to the ``torchyard`` parser."""
    quotas = group(sub, "quota", "per-user and per-experiment GPU and run quotas on local compute: set, list, remove",
                   "quota_command")
    for name, handler in (("set", cmd_set), ("remove", cmd_remove)):
        c = command(quotas, name, handler)
        c.add_argument("--user", help="the user (the team server's, or this machine's)")
        c.add_argument("--experiment", "-x", help="the experiment")
        if name == "set":
            c.add_argument("--gpus", type=int, help="at most this many GPUs at once")
            c.add_argument("--runs", type=int, help="at most this many runs at once")
            add_output(c)
    add_output(command(quotas, "list", cmd_list))
