"""What the value checks cost on the hot path (issue #27): `run.log` per call with today's checks
(torchyard.limits: the name checked once per name, the step's range, ints as float64) against the
same `run.log` before them (the tracking module at --before, loaded from git), interleaved in one
process, and tensorboardX's `add_scalar` as the peer.

Usage: python bench/bench_values.py [--calls N] [--repeat R] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _old_module(rev: str) -> object:
    text = subprocess.run(["git", "show", f"{rev}:src/torchyard/tracking/context.py"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "context_before.py")
    with open(path, "w") as fh:
        fh.write(text)
    spec = importlib.util.spec_from_file_location("context_before", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--before", default="5e4793d", help="the commit before the value checks")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(REPO, "src"))
    from torchyard.tracking import context as now

    before = _old_module(args.before)
    folder = tempfile.mkdtemp()

    def live(module: object, rank: int) -> object:
        return module.LiveRun({"TORCHYARD_RUN_ID": "bench", "RANK": str(rank),  # type: ignore[attr-defined]
                               "TORCHYARD_JOURNAL_DIR": os.path.join(folder, f"j{rank}"), "TORCHYARD_UPLOAD_DIR": folder})

    calls: dict[str, object] = {"run.log, with the checks": live(now, 0).log,  # type: ignore[attr-defined]
                                f"run.log, before them ({args.before})": live(before, 1).log}  # type: ignore[attr-defined]
    try:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(os.path.join(folder, "tb"))
        calls["tensorboardX add_scalar"] = writer.add_scalar
    except ImportError:
        writer = None
    per_call: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeat):
        for name, call in calls.items():
            n = args.calls if "tensorboardX" not in name else max(1000, args.calls // 100)
            t0 = time.perf_counter()
            for i in range(n):
                call("loss", 0.5, i)  # type: ignore[operator]
            per_call[name].append((time.perf_counter() - t0) / n * 1e6)
    if writer is not None:
        writer.close()
    base = statistics.median(per_call["run.log, with the checks"])
    rows = [[name, f"{statistics.median(v):.3f}", f"{min(v):.3f}", f"{statistics.median(v) / base:.2f}x"]
            for name, v in per_call.items()]
    print_table(["per call", "median µs", "best µs", "vs with checks"], rows)


if __name__ == "__main__":
    main()
