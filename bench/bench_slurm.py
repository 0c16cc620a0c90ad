"""Slurm compute target benchmarks (issue #7). Prints one table; figures go to BENCHMARKS.md.

Starts a throwaway 2-node Slurm cluster on this machine (tests/integration/slurmcluster.py: slurmctld
and two slurmd daemons, NodeAddr 127.0.0.1), then, interleaved so drift hits both:

1. From ``submit`` to every rank running (the first line of each rank's script) for a 2x1 job:
   Slurm (sbatch → scheduling → srun → launcher per node → ranks) vs local compute.
2. DDP digits 2x1 for a fixed number of epochs, submit → Completed: Slurm vs local compute (ratio).

With ``--machines`` the cluster runs on two simulated separate machines instead
(tests/integration/machines.py: each slurmd in its own network/UTS/mount namespace with its own
address, hostname and /tmp; a ``shared_dir`` every machine sees, the workspace private to the
submitter, so the job's folder is copied out and back). Root only.

Usage: python bench/bench_slurm.py [--repeat N] [--epochs E] [--machines]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
DIGITS = os.path.join(REPO, "examples", "digits")

STARTED = """
import os, time
t = time.time()
with open(os.path.join(os.environ["TORCHYARD_OUTPUT_DIR"], "started_" + os.environ["RANK"]), "w") as fh:
    fh.write(repr(t))
"""


def to_running(exp, src: str, target: str) -> float:
    from torchyard import PyTorch

    t0 = time.time()
    run = exp.submit(PyTorch(src, entry_script="started.py", node_count=2, process_count_per_node=1,
                             distributed_backend="pytorch", compute_target=target))
    assert run.wait_for_completion(raise_on_error=False, timeout=300)["status"] == "Completed", run.get_details()
    starts = []
    for rank in range(2):
        with open(os.path.join(run.workdir, "outputs", f"started_{rank}")) as fh:
            starts.append(float(fh.read()))
    return max(starts) - t0


def digits(exp, target: str, epochs: int) -> float:
    from torchyard import PyTorch

    t0 = time.time()
    run = exp.submit(PyTorch(DIGITS, entry_script="train.py", node_count=2, process_count_per_node=1,
                             distributed_backend="pytorch", compute_target=target,
                             script_params={"--epochs": epochs}))
    details = run.wait_for_completion(raise_on_error=False, timeout=600)
    assert details["status"] == "Completed", details.get("error")
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--machines", action="store_true", help="two simulated separate machines (root)")
    args = ap.parse_args()
    import contextlib

    import machines
    import slurmcluster

    from torchyard import ComputeTarget, Experiment, Workspace
    from torchyard.compute.slurm import SlurmCompute

    reason = slurmcluster.unavailable_reason()
    if reason:
        sys.exit(f"bench_slurm: {reason}")
    work = tempfile.mkdtemp(prefix="tybench_slurm_")
    src = os.path.join(work, "src")
    os.makedirs(src)
    with open(os.path.join(src, "started.py"), "w") as fh:
        fh.write(STARTED)
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.machines and machines.unavailable_reason():
        sys.exit(f"bench_slurm: {machines.unavailable_reason()}")
    with contextlib.ExitStack() as stack:
        m = stack.enter_context(machines.Machines(2, keep=[REPO, sys.prefix])) if args.machines else None
        cluster = stack.enter_context(slurmcluster.SlurmCluster(nodes=2, cpus=2, machines=m))
        os.environ["SLURM_CONF"] = cluster.conf
        ws = Workspace(path=os.path.join(work, ".torchyard"))
        ComputeTarget.attach(ws, "hpc", SlurmCompute(shared_dir=cluster.shared_dir) if m else SlurmCompute())
        exp = Experiment(ws, "bench")
        to_running(exp, src, "local")  # warm the page cache for both
        to_running(exp, src, "hpc")
        run_s, run_l, dig_s, dig_l = [], [], [], []
        for _ in range(args.repeat):
            run_s.append(to_running(exp, src, "hpc"))
            run_l.append(to_running(exp, src, "local"))
        for _ in range(args.repeat):
            dig_s.append(digits(exp, "hpc", args.epochs))
            dig_l.append(digits(exp, "local", args.epochs))
    med = statistics.median
    rows = [
        ("submit → every rank running, 2x1", f"{med(run_s):.2f} s", "local compute", f"{med(run_l):.2f} s",
         f"+{med(run_s) - med(run_l):.2f} s for sbatch, scheduling, srun; runs {', '.join(f'{x:.2f}' for x in run_s)}"),
        (f"DDP digits 2x1, {args.epochs} epochs, submit → Completed", f"{med(dig_s):.2f} s", "local compute",
         f"{med(dig_l):.2f} s", f"ratio {med(dig_s) / med(dig_l):.2f}"),
    ]
    where = ("two simulated separate machines, shared_dir apart from the workspace" if args.machines
             else "this machine")
    print(f"{args.repeat} repeats each, medians; 2-node Slurm cluster on {where} (slurm-wlm 22.05)")
    print_table(("what", "Slurm", "peer", "peer figure", "note"), rows)


if __name__ == "__main__":
    main()
