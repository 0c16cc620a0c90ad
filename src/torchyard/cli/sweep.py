"""``torchyard sweep ...``: look at a sweep's trials, ranked; resume or cancel a sweep.

Hooked into the main parser with ``add_parser(subparsers)``; ``run(args, workspace)`` runs the chosen
subcommand. Bad input raises torchyard errors, which the main CLI prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_USAGE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` and its subcommands to the main parser's ``subparsers``."""
    sw = subparsers.add_parser("sweep", help="sweeps (HyperDrive): show, resume, cancel",
                               description="Hyperparameter sweeps: a parent run and its trials.")
    sw.set_defaults(sweep_help=sw.format_help)
    sub = sw.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="the sweep's trials ranked by the primary metric")
    show.add_argument("run_id", help="the sweep's (parent) run id")
    show.add_argument("--top", type=int, default=0, help="only the N best trials (default: all)")
    show.add_argument("--json", action="store_true")
    res = sub.add_parser("resume", help="restart the sweep's controller (finished trials are not rerun)")
    res.add_argument("run_id")
    can = sub.add_parser("cancel", help="cancel the sweep and every running trial")
    can.add_argument("run_id")
    return sw


def _open(ws: Any, run_id: str) -> Any:
    from torchyard.experiment import Experiment  # noqa: PLC0415
    from torchyard.sweeps.run import HyperDriveRun  # noqa: PLC0415

    if getattr(ws, "is_remote", False):  # a team server's workspace: the server answers
        from torchyard.errors import NotFoundError  # noqa: PLC0415
        from torchyard.remote.run import RemoteSweepRun  # noqa: PLC0415

        found = ws.get_run(run_id)
        if not isinstance(found, RemoteSweepRun):
            raise NotFoundError(f"run {run_id!r} is not a sweep (HyperDrive) run", run_id=run_id)
        return found
    row = ws.store.get_run(run_id)
    return HyperDriveRun(Experiment(ws, row["experiment"]), run_id)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def show(hd: Any, top: int = 0, as_json: bool = False, out: Any = None) -> None:
    out = out or sys.stdout
    ranked = hd.get_children_sorted_by_primary_metric(top=top)
    details = hd.get_details()
    metric = hd.get_primary_metric_config()
    if as_json:
        print(json.dumps({"run_id": hd.id, "status": details["status"], "primary_metric": metric,
                          "sweep": details.get("sweep"), "trials": ranked}, indent=2, default=str), file=out)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    props = details["properties"]
    print(f"sweep:    {hd.id} ({details['status']})", file=out)
    print(f"metric:   {metric['name']} ({metric['goal'].lower()})", file=out)
    print(f"sampling: {props.get('sampling')} (seed {props.get('seed')}); policy: {props.get('policy')}; "
          f"trials: {len(hd.get_children())} of {props.get('max_total_runs')}, "
          f"{props.get('max_concurrent_runs')} at once", file=out)
    table = Table(show_edge=False, header_style="bold")
    for col in ("rank", "child run id", "status", metric["name"], "intervals", "hyperparameters"):
        table.add_column(col, no_wrap=True)
    for i, row in enumerate(ranked, 1):
        params = " ".join(f"{k}={_fmt(v)}" for k, v in row["hyperparameters"].items())
        rank = str(i) if row["best_primary_metric"] is not None else "-"
        table.add_row(rank, row["run_id"], row["status"], _fmt(row["best_primary_metric"]), str(row["intervals"]), params)
    Console(file=out, width=None if out.isatty() else 250).print(table)


def run(args: argparse.Namespace, ws: Any) -> int:
    command = getattr(args, "sweep_command", None)
    if command is None:
        print(args.sweep_help(), file=sys.stderr)
        return EXIT_USAGE
    hd = _open(ws, args.run_id)
    if command == "show":
        show(hd, top=args.top, as_json=args.json)
    elif command == "resume":
        started = hd.resume()
        print(f"torchyard: sweep {hd.id}: " + ("controller restarted" if started else f"nothing to do ({hd.get_status()}; "
              "its controller is running or it has ended)"))
    else:
        before = hd.get_status()
        hd.cancel()
        print(f"torchyard: sweep {hd.id}: " + (f"already {before}" if before in ("Completed", "Failed", "Canceled")
                                                else "cancel requested"))
    return 0


def register(subparsers: Any) -> None:
    """Add this group to the ``torchyard`` parser; its handler runs the chosen subcommand."""
    from torchyard.cli.common import workspace  # noqa: PLC0415

    add_parser(subparsers).set_defaults(func=lambda args: run(args, workspace(args)))
