"""Distributed launch benchmarks (issue: distributed). Prints one table; figures go to BENCHMARKS.md.

1. A 2-rank job doing init_process_group("gloo") + barrier + exit: `torchyard run --wait` vs bare
   `torchrun --standalone --nproc_per_node=2` of the same script (target: torchyard faster).
2. DDP digits 1x2 for a fixed number of epochs: torchyard vs bare torchrun wall time (target ratio <= 1.05).
3. The launchers' own CPU while 4 ranks (2 nodes x 2) train digits (target < 1% of a core).

Usage: python bench/bench_distributed.py [--repeat N] [--epochs E]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TORCHYARD = os.path.join(BIN, "torchyard")
DIGITS = os.path.join(REPO, "examples", "digits")

INIT = """
import torch.distributed as dist
dist.init_process_group("gloo")
dist.barrier()
dist.destroy_process_group()
"""


def timed(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def torchrun(nproc: int, script: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *args]


def ty_run(src: str, entry: str, nodes: int, ppn: int, *args: str) -> list[str]:
    return [TORCHYARD, "run", "--source-dir", src, "--entry", entry, "--experiment", "bench", "--node-count", str(nodes),
            "--process-count-per-node", str(ppn), "--distributed-backend", "pytorch", "--wait", "--", *args]


def launcher_cpu(env: dict[str, str], epochs: int) -> tuple[float, float, float, int]:
    """(launcher CPU seconds, wall seconds, supervisor CPU seconds, launchers seen) of a 2x2 digits run."""
    import psutil

    from torchyard import Experiment, PyTorch, Workspace

    ws = Workspace(path=env["TORCHYARD_WORKSPACE"])
    run = Experiment(ws, "bench").submit(PyTorch(DIGITS, entry_script="train.py", node_count=2, process_count_per_node=2,
                                                 distributed_backend="pytorch", script_params={"--epochs": epochs}))
    while ws.store.get_run(run.id)["supervisor_pid"] is None:
        time.sleep(0.01)
    sup = psutil.Process(ws.store.get_run(run.id)["supervisor_pid"])
    seen: dict[int, float] = {}
    sup_cpu = 0.0
    t0 = time.time()
    first = last = None
    while run.get_status() not in ("Completed", "Failed", "Canceled"):
        try:
            for child in sup.children():
                c = child.cpu_times()
                seen[child.pid] = c.user + c.system
            s = sup.cpu_times()
            sup_cpu = s.user + s.system
            if seen and first is None:
                first = time.time()
            last = time.time()
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    assert run.get_status() == "Completed", run.get_details().get("error")
    wall = (last or time.time()) - (first or t0)
    return sum(seen.values()), wall, sup_cpu, len(seen)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tybench_dist_")
    env = {**os.environ, "TORCHYARD_WORKSPACE": os.path.join(work, ".torchyard"), "OMP_NUM_THREADS": "1"}
    src = os.path.join(work, "src")
    os.makedirs(src)
    with open(os.path.join(src, "init.py"), "w") as fh:
        fh.write(INIT)
    subprocess.run(ty_run(src, "init.py", 1, 2), check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # let the agent come up; the first run above paid its start
    rows = []
    ty_t, tr_t = [], []
    for _ in range(args.repeat):  # interleaved, so drift hits both
        ty_t.append(timed(ty_run(src, "init.py", 1, 2), env))
        tr_t.append(timed(torchrun(2, os.path.join(src, "init.py")), env, cwd=work))
    rows.append(("2 ranks: init_process_group + barrier", f"{statistics.median(ty_t):.2f} s",
                 "torchrun --standalone", f"{statistics.median(tr_t):.2f} s",
                 f"ratio {statistics.median(ty_t) / statistics.median(tr_t):.2f} (target < 1)"))
    ep = str(args.epochs)
    ty_d, tr_d = [], []
    for _ in range(args.repeat):
        ty_d.append(timed(ty_run(DIGITS, "train.py", 1, 2, "--epochs", ep), env))
        tr_d.append(timed(torchrun(2, os.path.join(DIGITS, "train.py"), "--epochs", ep), env, cwd=work))
    rows.append((f"DDP digits 1x2, {ep} epochs", f"{statistics.median(ty_d):.2f} s", "torchrun --standalone",
                 f"{statistics.median(tr_d):.2f} s",
                 f"ratio {statistics.median(ty_d) / statistics.median(tr_d):.2f} (target <= 1.05)"))
    cpu, wall, sup_cpu, n = launcher_cpu(env, args.epochs * 3)
    rows.append(("launchers' CPU, 2x2 digits", f"{100 * cpu / wall:.2f} % of a core", "", "",
                 f"{n} launchers, {cpu:.2f} s CPU over {wall:.1f} s (target < 1%)"))
    rows.append(("supervisor CPU, same run", f"{100 * sup_cpu / wall:.2f} % of a core", "", "", ""))
    header = ("what", "torchyard", "peer", "peer figure", "note")
    print_table(header, rows)


if __name__ == "__main__":
    main()
