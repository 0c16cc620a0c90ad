"""Ray compute target benchmarks (issue: Ray). Prints one table; figures go to BENCHMARKS.md.

Starts its own two-node Ray cluster on this machine (tests/integration/raycluster.py), then:
1. `torchyard submit job.yml` (warm local agent) → every rank's script running, 2 nodes x 1 process,
   default environment (nothing to build): on Ray vs on local compute (simulated 2 nodes), median of
   --repeat runs (target on Ray <= 1 s), with the Ray run's phases.
2. DDP digits 2x1 for --epochs epochs, submit → Completed: Ray vs local compute, same run: ratio.
   Also Ray's own floor: an empty actor (num_cpus=0, no placement group) from a fresh driver.
3. Peak memory (RSS) of the run's supervisor and of each node's NodeAgent actor while digits trains.

With ``--machines`` the worker nodes are two simulated separate machines
(tests/integration/machines.py: own network namespace, address, hostname and /tmp; the workspace
is not visible there), and the head has no CPUs, so every job node is on a machine. Root only.

``--keep-agents`` attaches the target with ``keep_agents=True`` (a warm node agent per Ray node
between runs; the warm-up runs create them, so the measured runs start no actor).

Usage: python bench/bench_ray.py [--repeat N] [--epochs E] [--machines] [--keep-agents]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
DIGITS = os.path.join(REPO, "examples", "digits")
TORCHYARD = os.path.join(os.path.dirname(sys.executable), "torchyard")

UP = """
import time
t = time.time()
import os
from torchyard import Run
Run.get_context().log("t_up", t)
"""


def submit(ws, target: str, folder: str, script: str, args: dict | None = None):
    from torchyard import Experiment, PyTorch

    est = PyTorch(folder, entry_script=script, node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", script_params=args, compute_target=target)
    return Experiment(ws, "bench").submit(est)


PHASES: dict[str, list[float]] = {}


def cli_submit(ws, target: str, folder: str):
    """`torchyard submit job.yml` as a user types it (through the warm local agent)."""
    job = os.path.join(folder, f"job-{target}.yml")
    with open(job, "w") as fh:
        fh.write(f"command: python up.py\ncode: .\ncompute: {target}\nexperiment_name: bench\n"
                 "distribution: {type: pytorch, process_count_per_instance: 1}\nresources: {instance_count: 2}\n")
    out = subprocess.run([TORCHYARD, "-w", ws.path, "submit", job], capture_output=True, text=True, check=True)
    return ws.get_run(out.stdout.strip().splitlines()[-1])


def time_to_ranks(ws, target: str, folder: str) -> float:
    t0 = time.time()
    run = cli_submit(ws, target, folder)
    details = run.wait_for_completion(timeout=300)
    last_up = max(m["t_up"] for m in run.get_metrics(rank="all").values())
    if target == "ray":
        starting = next(h["time"] for h in details["statusHistory"] if h["status"] == "Starting")
        t = details["compute"]["timings"]
        for name, a, b in (
            ("  submit -> Starting (supervisor process, Preparing)", t0, starting),
            ("  Starting -> connected (import ray, ray.init)", starting, t["connected"]),
            ("  connected -> placement group ready", t["connected"], t["placed"]),
            ("  -> actors up, code unpacked (Ray worker start)", t["placed"], t["set_up"]),
            ("  -> launchers started", t["set_up"], t["started"]),
            ("  -> last rank's first line (Python start)", t["started"], last_up),
        ):
            PHASES.setdefault(name, []).append(b - a)
    return last_up - t0


EMPTY_ACTOR = """
import logging, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.WARNING)
@ray.remote
class Empty:
    pass
t = time.time()
ray.get(Empty.options(num_cpus=0).remote().__ray_ready__.remote())
print(time.time() - t)
"""


def empty_actor(address: str) -> float:
    """Ray's own floor: an empty actor (no resources, no placement group) from a fresh driver."""
    out = subprocess.run([sys.executable, "-c", EMPTY_ACTOR, address], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def wall(ws, target: str, epochs: int) -> tuple[float, object]:
    t0 = time.time()
    run = submit(ws, target, DIGITS, "train.py", {"--epochs": epochs})
    run.wait_for_completion(timeout=600)
    return time.time() - t0, run


def memory_during(ws, epochs: int) -> tuple[float, list[float]]:
    """Peak RSS (MiB) of the supervisor and of each NodeAgent worker while a digits run trains."""
    run = submit(ws, "ray", DIGITS, "train.py", {"--epochs": epochs, "--epoch-sleep": 0.2})
    peak_sup = 0.0
    peak_agents: dict[int, float] = {}
    while run.get_status() not in ("Completed", "Failed", "Canceled"):
        row = ws.store.get_run(run.id)
        try:
            if row["supervisor_pid"]:
                peak_sup = max(peak_sup, psutil.Process(row["supervisor_pid"]).memory_info().rss / 2**20)
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info.get("cmdline") or [])
                if "torchyard.launch.launcher" in cmd and run.id in cmd:
                    agent = proc.parent()
                    if agent is not None:
                        rss = agent.memory_info().rss / 2**20
                        peak_agents[agent.pid] = max(peak_agents.get(agent.pid, 0.0), rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    return peak_sup, sorted(peak_agents.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--machines", action="store_true", help="two simulated separate machines (root)")
    parser.add_argument("--keep-agents", action="store_true", help="RayCompute(keep_agents=True)")
    args = parser.parse_args()

    import contextlib

    import machines
    import raycluster

    from torchyard import ComputeTarget, RayCompute, Workspace

    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    os.environ["TORCHYARD_RAY_NODE_DIR"] = os.path.join(tmp, "nodes")
    os.environ["TORCHYARD_AGENT_IDLE"] = "120"
    folder = os.path.join(tmp, "up")
    os.makedirs(folder)
    with open(os.path.join(folder, "up.py"), "w") as fh:
        fh.write(UP)
    if args.machines and machines.unavailable_reason():
        sys.exit(f"bench_ray: {machines.unavailable_reason()}")
    with contextlib.ExitStack() as stack:
        if args.machines:
            m = stack.enter_context(machines.Machines(2, keep=[REPO, sys.prefix]))
            cluster = stack.enter_context(raycluster.RayCluster(machines=m, node_env=lambda k: {
                "TORCHYARD_RAY_NODE_DIR": os.path.join(m.folder(k), "ray-node"),
                "TORCHYARD_NODE_CACHE": os.path.join(m.folder(k), "cache")}))
        else:
            cluster = stack.enter_context(raycluster.RayCluster(nodes=2))
        ws = Workspace(os.path.join(tmp, "ws"))
        ComputeTarget.attach(ws, "ray", RayCompute(address=cluster.address, keep_agents=args.keep_agents))
        time_to_ranks(ws, "ray", folder)  # warm: imports, worker processes
        time_to_ranks(ws, "local", folder)
        PHASES.clear()
        ray_up = [time_to_ranks(ws, "ray", folder) for _ in range(args.repeat)]
        local_up = [time_to_ranks(ws, "local", folder) for _ in range(args.repeat)]
        ray_wall, ray_run = wall(ws, "ray", args.epochs)
        local_wall, local_run = wall(ws, "local", args.epochs)
        acc = (ray_run.get_metrics()["accuracy"][-1], local_run.get_metrics()["accuracy"][-1])
        sup, agents = memory_during(ws, args.epochs)
        empty = [empty_actor(cluster.address) for _ in range(args.repeat)]
        state = cluster.state()
    rows = [
        ["submit -> every rank running, 2x1 (median)", f"{statistics.median(ray_up):.2f} s",
         f"{statistics.median(local_up):.2f} s", f"{statistics.median(ray_up) / statistics.median(local_up):.2f}x"],
        *[[name, f"{statistics.median(v):.2f} s", "", ""] for name, v in PHASES.items()],
        ["  (Ray's floor: an empty actor from a fresh driver)", f"{statistics.median(empty):.2f} s", "", ""],
        [f"DDP digits 2x1, {args.epochs} epochs, submit -> Completed", f"{ray_wall:.2f} s", f"{local_wall:.2f} s",
         f"{ray_wall / local_wall:.2f}x"],
        ["final accuracy (same seed)", f"{acc[0]:.4f}", f"{acc[1]:.4f}", ""],
        ["peak RSS: supervisor", f"{sup:.0f} MiB", "", ""],
        ["peak RSS: NodeAgent actors", ", ".join(f"{a:.0f} MiB" for a in agents), "", ""],
        ["left on the cluster afterwards", f"{len(state['placement_groups'])} placement groups, "
         f"{len(state['actors'])} actors", "", ""],
    ]
    where = ("Ray (2 machines)" if args.machines else "Ray (2 nodes)") + (", warm agents" if args.keep_agents else "")
    print_table(["measure", where, "local compute", "ratio"], rows)
    print(f"all figures: Ray {[round(x, 2) for x in ray_up]}, local {[round(x, 2) for x in local_up]}")


if __name__ == "__main__":
    main()
