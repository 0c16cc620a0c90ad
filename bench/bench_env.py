"""Environment benchmarks (issue: environments). Prints one table; figures go to BENCHMARKS.md.

1. Cache hit: resolving the environment of a run whose package list was built before (target <= 50 ms).
2. First build of an environment with 3 small packages: torchyard's uv-layered build vs a plain
   `python -m venv` + `pip install` of the same packages, same run (both with warm download caches).

Usage: python bench/bench_env.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

PACKAGES = ["tomli-w==1.2.0", "six==1.16.0", "packaging"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from torchyard.environments import resolve
    from torchyard.spec.job import EnvironmentSpec

    work = tempfile.mkdtemp(prefix="tybench_env_")
    rows = []
    builds, pips = [], []
    for i in range(args.repeat):
        ws = os.path.join(work, f"ws{i}")
        spec = EnvironmentSpec(pip_packages=tuple(PACKAGES))
        t0 = time.perf_counter()
        got = resolve(ws, spec, os.path.join(ws, "env.log"))
        builds.append(time.perf_counter() - t0)
        assert not got.cached
        venv = os.path.join(work, f"venv{i}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", *PACKAGES], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pips.append(time.perf_counter() - t0)
        shutil.rmtree(venv)
    rows.append(("first build, 3 small packages", f"{statistics.median(builds):.2f} s",
                 "python -m venv + pip install", f"{statistics.median(pips):.2f} s",
                 f"{statistics.median(pips) / statistics.median(builds):.1f}x faster"))
    hits = []
    ws = os.path.join(work, "ws0")
    for _ in range(20):
        t0 = time.perf_counter()
        got = resolve(ws, EnvironmentSpec(pip_packages=tuple(PACKAGES)), os.path.join(ws, "env.log"))
        hits.append(time.perf_counter() - t0)
        assert got.cached
    rows.append(("cache hit: resolve a built environment (median of 20)", f"{statistics.median(hits) * 1000:.1f} ms",
                 "", "", "target <= 50 ms"))
    header = ("what", "torchyard", "peer", "peer figure", "note")
    print_table(header, rows)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
