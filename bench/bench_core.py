"""Core benchmarks (issue: core). Prints one table; figures go to BENCHMARKS.md.

1. `torchyard --help` wall time vs `python -c pass` (issue #25: overhead <= 30 ms)
2. `torchyard run --wait` of a script that does nothing vs `python noop.py` (issue #25: overhead <= 80 ms)
3. run.log cost per call, 1,000,000 calls, median (target <= 5 us) vs tensorboardX add_scalar
4. from the script's last log call to all 1,000,000 values queryable (target <= 3 s), and get_metrics

Usage: python bench/bench_core.py [--repeat N] [--startup-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

HERE = os.path.dirname(os.path.abspath(__file__))
TORCHYARD = os.path.join(os.path.dirname(sys.executable), "torchyard")

LOG_SCRIPT = r"""
import json, sys, time
N = 1_000_000
BATCH = 1000
mode = sys.argv[1]
if mode == "torchyard":
    from torchyard import Run
    run = Run.get_context()
    log = run.log
    def call(i):
        log("loss", 0.5, i)
elif mode == "tensorboardX":
    from tensorboardX import SummaryWriter
    w = SummaryWriter(sys.argv[2])
    def call(i):
        w.add_scalar("loss", 0.5, i)
per_call = []
t0 = time.perf_counter()
i = 0
for _ in range(N // BATCH):
    b0 = time.perf_counter()
    if mode == "torchyard":
        for i in range(i, i + BATCH):
            log("loss", 0.5, i)
    else:
        for i in range(i, i + BATCH):
            w.add_scalar("loss", 0.5, i)
    i += 1
    per_call.append((time.perf_counter() - b0) / BATCH)
total = time.perf_counter() - t0
per_call.sort()
end = time.time()
if mode == "tensorboardX":
    w.close()
with open(sys.argv[-1], "w") as fh:
    json.dump({"median_us": per_call[len(per_call) // 2] * 1e6, "p99_us": per_call[int(len(per_call) * 0.99)] * 1e6,
               "total_s": total, "end": end}, fh)
"""


def timed(cmd: list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0


def median_of(n: int, cmd: list[str], **kw) -> float:
    return statistics.median(timed(cmd, **kw) for _ in range(n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--startup-only", action="store_true", help="only 1 and 2 (the start-up figures)")
    args = ap.parse_args()
    rows = []
    # A normal install compiles torchyard's bytecode; an editable one under PYTHONDONTWRITEBYTECODE=1
    # (set on these machines) never does, and every command would recompile it from source.
    import torchyard

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(torchyard.__file__)], check=True)
    work = tempfile.mkdtemp(prefix="tybench_")
    env = {**os.environ, "TORCHYARD_WORKSPACE": os.path.join(work, ".torchyard")}
    src = os.path.join(work, "src")
    os.makedirs(src)
    with open(os.path.join(src, "noop.py"), "w") as fh:
        fh.write("pass\n")
    with open(os.path.join(src, "logmany.py"), "w") as fh:
        fh.write(textwrap.dedent(LOG_SCRIPT))

    # 1. --help
    subprocess.run([TORCHYARD, "--help"], check=True, stdout=subprocess.DEVNULL)
    help_s = median_of(args.repeat, [TORCHYARD, "--help"])
    pass_s = median_of(args.repeat, [sys.executable, "-c", "pass"])
    rows.append(("torchyard --help", f"{help_s * 1000:.0f} ms", "python -c pass", f"{pass_s * 1000:.0f} ms",
                 f"overhead {1000 * (help_s - pass_s):.0f} ms (target <= 30)"))
    # what every command paid before the parsers were built lazily: the whole parser
    whole = [sys.executable, "-c", "from torchyard.cli.main import _parser; _parser().format_help()"]
    whole_s = median_of(args.repeat, whole)
    rows.append(("the whole parser (every command's)", f"{whole_s * 1000:.0f} ms", "python -c pass",
                 f"{pass_s * 1000:.0f} ms", f"overhead {1000 * (whole_s - pass_s):.0f} ms (before: every command)"))

    # 2. run --wait of a no-op vs python noop.py
    run_cmd = [TORCHYARD, "run", "--source-dir", src, "--entry", "noop.py", "--experiment", "bench", "--wait"]
    subprocess.run(run_cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # creates the store
    run_s = median_of(args.repeat, run_cmd, env=env)
    noop_s = median_of(args.repeat, [sys.executable, os.path.join(src, "noop.py")])
    rows.append(("torchyard run --wait noop.py", f"{run_s * 1000:.0f} ms", "python noop.py", f"{noop_s * 1000:.0f} ms",
                 f"overhead {1000 * (run_s - noop_s):.0f} ms (target <= 80)"))
    if args.startup_only:
        print_table(("what", "torchyard", "peer", "peer figure", "target"), rows)
        return

    # 3 + 4. run.log inside a real run vs tensorboardX, and exit -> queryable
    from torchyard import Workspace

    ws = Workspace(path=env["TORCHYARD_WORKSPACE"])
    stats_ty = os.path.join(work, "ty.json")
    out = subprocess.run(
        [TORCHYARD, "run", "--json", "--source-dir", src, "--entry", "logmany.py", "--experiment", "bench", "--",
         "torchyard", stats_ty],
        check=True, env=env, capture_output=True, text=True,
    )
    run_id = json.loads(out.stdout)["run_id"]
    run_dir = ws.run_dir(run_id)
    stats_path = os.path.join(run_dir, stats_ty) if not os.path.isabs(stats_ty) else stats_ty
    while not os.path.exists(stats_path):
        time.sleep(0.01)
    while ws.store.metric_count(run_id) < 1_000_000:
        time.sleep(0.02)
    done = time.time()
    with open(stats_path) as fh:
        ty = json.load(fh)
    t0 = time.perf_counter()
    metrics = ws.get_run(run_id).get_metrics()
    get_s = time.perf_counter() - t0
    assert len(metrics["loss"]) == 1_000_000
    stats_tb = os.path.join(work, "tb.json")
    subprocess.run([sys.executable, os.path.join(src, "logmany.py"), "tensorboardX", os.path.join(work, "tb"), stats_tb],
                   check=True)
    with open(stats_tb) as fh:
        tb = json.load(fh)
    rows.append(("run.log median / p99 per call", f"{ty['median_us']:.2f} / {ty['p99_us']:.2f} us",
                 "tensorboardX add_scalar", f"{tb['median_us']:.2f} / {tb['p99_us']:.2f} us", "<= 5 us"))
    rows.append(("1M run.log calls, total", f"{ty['total_s']:.2f} s", "tensorboardX, total", f"{tb['total_s']:.2f} s", ""))
    rows.append(("last log call -> 1M values in store", f"{done - ty['end']:.2f} s", "", "", "<= 3 s"))
    rows.append(("get_metrics() of 1M values", f"{get_s:.2f} s", "", "", ""))

    header = ("what", "torchyard", "peer", "peer figure", "target")
    print_table(header, rows)


if __name__ == "__main__":
    main()
