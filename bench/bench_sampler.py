"""The system sampler's cost (issue #24): training throughput of the digits DDP job (1 node x 2
processes, gloo) with the launcher's system sampler at its default interval (5 s), at an aggressive
0.5 s, and off, interleaved in one run. Throughput is taken from the script's own per-epoch times
(``--verbose`` prints each epoch's seconds), so process start-up does not blur it. Target: <= 1 %
slower at the default interval.

Usage: python bench/bench_sampler.py [--repeat N] [--epochs E]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "examples", "digits")
EPOCH = re.compile(r"^epoch \d+: .*\(([0-9.]+) s\)$", re.M)


def train_seconds(exp, interval: str, epochs: int) -> tuple[float, int]:
    """Rank 0's summed epoch times, and how many system samples the run stored."""
    from torchyard import PyTorch

    os.environ["TORCHYARD_SYSTEM_METRICS_SECONDS"] = interval
    run = exp.submit(PyTorch(DIGITS, entry_script="train.py", process_count_per_node=2, distributed_backend="pytorch",
                             script_params={"--epochs": epochs, "--verbose": ""}))
    details = run.wait_for_completion(raise_on_error=False, timeout=600)
    assert details["status"] == "Completed", details.get("error")
    with open(os.path.join(run.workdir, "logs", "rank_0.txt")) as fh:
        times = [float(t) for t in EPOCH.findall(fh.read())]
    assert len(times) == epochs, times
    samples = run.get_metrics().get("system/cpu_percent", [])
    return sum(times[1:]), len(samples) if isinstance(samples, list) else 1  # epoch 0 warms up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    from torchyard import Experiment, Workspace

    os.environ["OMP_NUM_THREADS"] = "1"
    work = tempfile.mkdtemp(prefix="tybench_sampler_")
    exp = Experiment(Workspace(path=os.path.join(work, ".torchyard")), "bench")
    settings = (("off", "0"), ("every 5 s (default)", "5"), ("every 0.5 s", "0.5"))
    got: dict[str, list[float]] = {name: [] for name, _ in settings}
    samples: dict[str, int] = {}
    train_seconds(exp, "0", 3)  # warm the page cache
    for _ in range(args.repeat):
        for name, interval in settings:
            seconds, n = train_seconds(exp, interval, args.epochs)
            got[name].append(seconds)
            samples[name] = n
    base = statistics.median(got["off"])
    rows = []
    for name, _ in settings:
        med = statistics.median(got[name])
        rows.append((f"sampler {name}", f"{med:.3f} s", f"{100 * (med / base - 1):+.1f} %", samples[name],
                     ", ".join(f"{x:.3f}" for x in got[name])))
    print(f"digits DDP 1x2 (gloo), {args.epochs} epochs, epochs 1.. summed from rank 0's own times; "
          f"{args.repeat} interleaved repeats, medians; target: the default interval <= +1 %")
    print_table(("what", "training time", "vs off", "system samples stored", "runs"), rows)


if __name__ == "__main__":
    main()
