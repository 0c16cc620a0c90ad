"""``torchyard top``: every running run's nodes, live, from their launchers' ``system/...`` samples
(torchyard.launch.sampler; docs/guides/sharing-a-machine.md)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from torchyard.cli.common import add_output, command, emit, output_format, table, workspace

#: the columns of a node's row: (heading, series name, format)
COLUMNS = (
    ("cpu %", "system/cpu_percent", "{:.0f}"),
    ("mem %", "system/memory_percent", "{:.0f}"),
    ("disk r/w MB/s", ("system/disk_read_mb_s", "system/disk_write_mb_s"), "{:.1f}"),
    ("net in/out MB/s", ("system/net_recv_mb_s", "system/net_sent_mb_s"), "{:.1f}"),
)


def _last(value: Any) -> float | None:
    if isinstance(value, list):
        value = value[-1] if value else None
    return float(value) if isinstance(value, int | float) else None


def node_rows(ws: Any) -> list[dict[str, Any]]:
    """One row per node of every running run: its latest system/... sample (names without ``system/``)."""
    rows = []
    for record in ws.store.list_runs(status="Running"):
        run = ws.get_run(record["id"])
        try:
            nproc = int(run.get_details()["runDefinition"]["distribution"]["process_count_per_node"])
        except (KeyError, TypeError, ValueError):
            nproc = 1
        for rank, metrics in sorted(run.get_metrics(rank="all").items()):
            sample = {name[len("system/"):]: _last(v) for name, v in metrics.items() if name.startswith("system/")}
            if sample:
                rows.append({"run_id": run.id, "node": int(rank) // max(nproc, 1), "rank": int(rank),
                             "target": record.get("compute_target"), **sample})
    return rows


def _cell(row: dict[str, Any], names: Any, fmt: str) -> str:
    names = (names,) if isinstance(names, str) else names
    values = [row.get(n.removeprefix("system/")) for n in names]
    return "/".join("-" if v is None else fmt.format(v) for v in values)


def _gpus(row: dict[str, Any]) -> str:
    found = sorted({k.split("/")[0] for k in row if k.startswith("gpu_")}, key=lambda g: int(g[4:]))
    parts = []
    for gpu in found:
        util, mem, power, temp = (row.get(f"{gpu}/{n}") for n in
                                  ("utilization_percent", "memory_used_gb", "power_w", "temperature_c"))
        bits = [f"{util:.0f}%" if util is not None else "", f"{mem:.1f}GB" if mem is not None else "",
                f"{power:.0f}W" if power is not None else "", f"{temp:.0f}C" if temp is not None else ""]
        parts.append(f"{gpu[4:]}: " + " ".join(b for b in bits if b))
    return "; ".join(parts) or "-"


def _render(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no running run has system metrics yet (the launchers sample every TORCHYARD_SYSTEM_METRICS_SECONDS, "
              "default 5 s)")
        return
    table(None, ["run id", "node", *(c[0] for c in COLUMNS), "GPUs (util mem power temp)"],
          [[r["run_id"], str(r["node"]), *(_cell(r, names, fmt) for _h, names, fmt in COLUMNS), _gpus(r)]
           for r in rows])


def cmd_top(args: argparse.Namespace) -> int:
    """Show every running run's nodes live: CPU, memory, disk and network I/O, and each GPU.

    The values are the latest samples of each node's launcher (its system/... metrics, every
    TORCHYARD_SYSTEM_METRICS_SECONDS, default 5 s). Refreshes every --interval seconds until Ctrl-C;
    --once prints once (-o json|yaml gives the rows).

    Example:
      torchyard top --once"""
    ws = workspace(args)
    if args.once or output_format(args) != "table":
        rows = node_rows(ws)
        emit(args, rows, lambda: _render(rows))
        return 0
    try:
        while True:
            rows = node_rows(ws)
            if sys.stdout.isatty():
                sys.stdout.write("\033[H\033[2J")
            print(time.strftime("torchyard top  %H:%M:%S"), flush=True)
            _render(rows)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def register(subparsers: Any) -> None:
    """Add ``torchyard top`` to the ``torchyard`` parser."""
    p = command(subparsers, "top", cmd_top)
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes (default 2)")
    add_output(p)
