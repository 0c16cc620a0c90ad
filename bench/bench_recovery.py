"""Recovery after a lost machine (issue #25's benchmark), on local compute's simulated nodes.

A 2-node job (1 process per node) commits a checkpoint at every epoch (0.5 s each, the ranks in
step); at epoch 3 the bench kills node 1 as a machine is lost: its launcher and every rank under it,
SIGKILL, no exit code of their own. The run's supervisor classifies the failure (infrastructure),
waits its backoff (1 s for a first retry) and starts a fresh attempt on every node, which resumes from
the latest committed checkpoint. Measured: from the kill to every rank training again (its first
epoch of the new attempt), and the whole run; the target is <= 30 s. Peer: the same job
uninterrupted.

Usage: python bench/bench_recovery.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

TRAIN = """
import json, os, time
from torchyard import Run
run = Run.get_context()
rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHYARD_ATTEMPT"])
latest = run.latest_checkpoint()
start = json.load(open(latest / f"rank_{rank}.json"))["epoch"] + 1 if latest else 0
out = os.environ["TORCHYARD_OUTPUT_DIR"]
for epoch in range(start, 8):
    with open(os.path.join(out, f"epoch_{attempt}_{rank}_{epoch}"), "w") as fh:
        fh.write(repr(time.time()))
    time.sleep(0.5)
    with run.checkpoint(step=epoch) as folder:
        json.dump({"epoch": epoch}, open(folder / f"rank_{rank}.json", "w"))
    for _ in range(400):  # the ranks keep in step, as DDP's collectives would make them
        got = run.latest_checkpoint()
        if got is not None and int(got.name.split("_")[1]) >= epoch:
            break
        time.sleep(0.01)
"""


def _kill_machine(launcher_pid: int) -> None:
    """Every process of one simulated node: its launcher and everything under it."""
    import psutil

    procs = [psutil.Process(launcher_pid)]
    procs += procs[0].children(recursive=True)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def once(exp, src: str, kill: bool) -> tuple[float, float | None]:
    from torchyard import PyTorch
    from torchyard.paths import RunPaths

    t0 = time.time()
    run = exp.submit(PyTorch(src, entry_script="train.py", node_count=2, process_count_per_node=1,
                             distributed_backend="pytorch", max_retries=1))
    out = RunPaths(run.workdir).outputs
    killed = None
    if kill:
        while not os.path.exists(os.path.join(out, "epoch_0_1_3")):
            time.sleep(0.01)
        with open(RunPaths(run.workdir).handle) as fh:
            launchers = json.load(fh)["launchers"]
        killed = time.time()
        _kill_machine(int(launchers[1][0]))
    details = run.wait_for_completion(raise_on_error=False, timeout=300)
    assert details["status"] == "Completed", details.get("error")
    total = time.time() - t0
    if killed is None:
        return total, None
    assert [a["cause"] for a in details["attempts"]] == ["infrastructure", None], details["attempts"]
    back = []
    for rank in range(2):
        first = min(int(n.split("_")[3]) for n in os.listdir(out) if n.startswith(f"epoch_1_{rank}_"))
        with open(os.path.join(out, f"epoch_1_{rank}_{first}")) as fh:
            back.append(float(fh.read()))
    return total, max(back) - killed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from torchyard import Experiment, Workspace

    work = tempfile.mkdtemp(prefix="tybench_recovery_")
    src = os.path.join(work, "src")
    os.makedirs(src)
    with open(os.path.join(src, "train.py"), "w") as fh:
        fh.write(TRAIN)
    os.environ.setdefault("TORCHYARD_SYSTEM_METRICS_SECONDS", "0")
    exp = Experiment(Workspace(path=os.path.join(work, ".torchyard")), "bench")
    once(exp, src, kill=False)  # warm
    plain, hit, back = [], [], []
    for _ in range(args.repeat):
        plain.append(once(exp, src, kill=False)[0])
        total, recovered = once(exp, src, kill=True)
        hit.append(total)
        back.append(recovered or 0.0)
    med = statistics.median
    rows = [
        ("node 1 killed at epoch 3 → every rank training again", f"{med(back):.2f} s", "", "",
         f"<= 30 s; runs {', '.join(f'{x:.2f}' for x in back)}"),
        ("the whole run, 8 epochs of 0.5 s, one node lost", f"{med(hit):.2f} s", "uninterrupted", f"{med(plain):.2f} s",
         f"+{med(hit) - med(plain):.2f} s"),
    ]
    print(f"{args.repeat} repeats each, medians; local compute, 2 simulated nodes, Python {sys.version.split()[0]}")
    print_table(("what", "torchyard", "peer", "peer figure", "target / note"), rows)


if __name__ == "__main__":
    main()
