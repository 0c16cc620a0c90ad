"""``torchyard sweep ...``: look at a sweep's trials, ranked; resume or cancel a sweep.

Hooked into the main parser with ``add_parser(subparsers)``; ``run(args, workspace)`` runs the chosen
subcommand. Bad input raises torchyard errors, which the main CLI prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from torchyard.cli.common import add_output, console, example, output_format, print_json, print_yaml

EXIT_USAGE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` and its subcommands to the main parser's ``subparsers``."""
    sw = subparsers.add_parser("sweep", help="sweeps (HyperDrive): show, resume, cancel",
                               description="Hyperparameter sweeps: a parent run and its trials.")
    sw.set_defaults(sweep_help=sw.format_help)
    sub = sw.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="the sweep's trials ranked by the primary metric",
                          description="The sweep's trials ranked by the primary metric. -o json gives {run_id, "
                          "status, primary_metric, sweep, trials: [{run_id, status, best_primary_metric, "
                          "hyperparameters...}]}.")
    show.add_argument("run_id", help="the sweep's (parent) run id")
    show.add_argument("--top", type=int, default=0, help="only the N best trials (default: all)")
    example(add_output(show), "torchyard sweep show digits-sweep_1733600000_ab12cd34 --top 5")
    res = sub.add_parser("resume", help="restart the sweep's controller (finished trials are not rerun)",
                         description="Restart the sweep's controller (finished trials are not rerun).")
    res.add_argument("run_id")
    example(res, "torchyard sweep resume digits-sweep_1733600000_ab12cd34")
    can = sub.add_parser("cancel", help="cancel the sweep and every running trial",
                         description="Cancel the sweep and every running trial.")
    can.add_argument("run_id")
    example(can, "torchyard sweep cancel digits-sweep_1733600000_ab12cd34")
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


def show(hd: Any, top: int = 0, as_json: bool = False, out: Any = None, fmt: str | None = None) -> None:
    """Print a sweep and its ranked trials: a table, or (``fmt`` json/yaml, ``as_json``) one object."""
    out = out or sys.stdout
    fmt = fmt or ("json" if as_json else "table")
    ranked = hd.get_children_sorted_by_primary_metric(top=top)
    details = hd.get_details()
    metric = hd.get_primary_metric_config()
    if fmt in ("json", "yaml"):
        doc = {"run_id": hd.id, "status": details["status"], "primary_metric": metric,
               "sweep": details.get("sweep"), "trials": ranked}
        (print_json if fmt == "json" else print_yaml)(doc, file=out)
        return
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
    console(out).print(table)


def run(args: argparse.Namespace, ws: Any) -> int:
    command = getattr(args, "sweep_command", None)
    if command is None:
        print(args.sweep_help(), file=sys.stderr)
        return EXIT_USAGE
    hd = _open(ws, args.run_id)
    if command == "show":
        show(hd, top=args.top, fmt=output_format(args))
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
