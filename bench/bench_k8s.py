"""Kubernetes compute target benchmarks (issue #17). Prints one table; figures go to BENCHMARKS.md.

Starts the real Kubernetes 1.20.2 control plane (tests/integration/k8s_cluster.py: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler; binaries from scripts/build_k8s.sh) with two
Nodes run by the tests' node runner (pods are processes on this machine's Python, not containers),
then, interleaved so drift hits both:

1. From ``submit`` to every rank running (the first line of each rank's script) for a 2x1 job:
   Kubernetes (Service + ConfigMaps + 2 Jobs → Job controller → scheduler → node runner → pod entry
   unpacks the code → launcher → rank) vs local compute.
2. DDP digits 2x1 for a fixed number of epochs, submit → Completed: Kubernetes vs local (ratio).

Also prints how long the control plane took to start (API server ready, both Nodes Ready).

``--real-node``: the real-node tier instead of the node runner (tests/integration/k8s_node.py: one
Node run by a real kubelet + containerd + runc, pods in containers of an image built from local files,
host network, logs from the CRI log files; ``bash scripts/build_k8s.sh --kubelet`` first).

Usage: python bench/bench_k8s.py [--repeat N] [--epochs E] [--real-node]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DIGITS = os.path.join(REPO, "examples", "digits")

STARTED = """
import os, time
t = time.time()
with open(os.path.join(os.environ["TORCHYARD_OUTPUT_DIR"], "started_" + os.environ["RANK"]), "w") as fh:
    fh.write(repr(t))
print("started", repr(t), flush=True)
"""


def to_running(exp, src: str, target: str) -> float:
    from torchyard import PyTorch

    t0 = time.time()
    run = exp.submit(PyTorch(src, entry_script="started.py", node_count=2, process_count_per_node=1,
                             distributed_backend="pytorch", compute_target=target))
    assert run.wait_for_completion(raise_on_error=False, timeout=300)["status"] == "Completed", run.get_details()
    starts = []
    for rank in range(2):  # on Kubernetes only node 0's outputs come back: read the ranks' logs
        text = Path(run.workdir, "logs", f"rank_{rank}.txt").read_text()
        starts.append(float(text.split("started ", 1)[1].split()[0]))
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
    ap.add_argument("--real-node", action="store_true", help="one Node run by a real kubelet + containerd + runc")
    args = ap.parse_args()
    from tests.integration.k8s_cluster import Cluster, control_plane_bin
    from tests.integration.k8s_node import HOST_PATHS, NODE_IMAGE, POD_LOGS, RealNode, node_bin, node_ip

    from torchyard import ComputeTarget, Experiment, Workspace
    from torchyard.compute.kubernetes import KubernetesCompute

    bin_dir = node_bin() if args.real_node else control_plane_bin()
    if bin_dir is None:
        sys.exit("bench_k8s: not built: bash scripts/build_k8s.sh" + (" --kubelet" if args.real_node else ""))
    work = tempfile.mkdtemp(prefix="tybench_k8s_")
    src = os.path.join(work, "src")
    os.makedirs(src)
    with open(os.path.join(src, "started.py"), "w") as fh:
        fh.write(STARTED)
    os.environ["OMP_NUM_THREADS"] = "1"
    root = Path(work, "k8s")
    root.mkdir()
    cluster = Cluster(root, bin_dir, nodes=() if args.real_node else ("node-a", "node-b"))
    real = None
    try:
        cluster.start()
        ws = Workspace(path=os.path.join(work, ".torchyard"))
        if args.real_node:
            ip = node_ip()
            assert ip, "the kubelet needs a non-loopback address"
            t0 = time.time()
            real = RealNode(cluster, Path(work, "node"), bin_dir, ip).start()
            real.timings["tier_ready"] = cluster.timings["nodes_ready"] + time.time() - t0
            # 1 CPU per rank: the kubelet turns the request into cpu.shares (1 CPU = 1024, what any host process
            # has, e.g. local compute's ranks), and the node's 2 CPUs hold both pods
            ComputeTarget.attach(ws, "kube", KubernetesCompute(
                image=NODE_IMAGE, kubeconfig=str(cluster.kubeconfig), cpus_per_process=1.0, host_network=True,
                host_paths=HOST_PATHS, log_files=POD_LOGS))
        else:
            ComputeTarget.attach(ws, "kube", KubernetesCompute(image="local", kubeconfig=str(cluster.kubeconfig)))
        exp = Experiment(ws, "bench")
        to_running(exp, src, "local")  # warm the page cache for both
        to_running(exp, src, "kube")
        run_k, run_l, dig_k, dig_l = [], [], [], []
        for _ in range(args.repeat):
            run_k.append(to_running(exp, src, "kube"))
            run_l.append(to_running(exp, src, "local"))
        for _ in range(args.repeat):
            dig_k.append(digits(exp, "kube", args.epochs))
            dig_l.append(digits(exp, "local", args.epochs))
    finally:
        if real is not None:
            real.stop()
        cluster.stop()
    med = statistics.median
    t = cluster.timings
    rows = [("control plane start → API server ready", f"{t['apiserver_ready']:.2f} s", "", "", "etcd + kube-apiserver")]
    if real is not None:
        r = real.timings
        rows += [
            ("real node: containerd ready / images imported / Node Ready",
             f"{r['containerd_ready']:.2f} / {r['images_imported']:.2f} / {r['node_ready']:.2f} s", "", "",
             "after the control plane; images: rootfs tar → podman import → oci-archive → ctr import"),
            ("tier start → the kubelet's Node Ready", f"{r['tier_ready']:.2f} s", "", "", "control plane + containerd + kubelet"),
        ]
    else:
        rows.append(("control plane start → 2 Nodes Ready", f"{t['nodes_ready']:.2f} s", "", "",
                     "+ controller-manager, scheduler, 2 node runners"))
    rows += [
        ("submit → every rank running, 2x1", f"{med(run_k):.2f} s", "local compute", f"{med(run_l):.2f} s",
         f"+{med(run_k) - med(run_l):.2f} s; runs {', '.join(f'{x:.2f}' for x in run_k)}"),
        (f"DDP digits 2x1, {args.epochs} epochs, submit → Completed", f"{med(dig_k):.2f} s", "local compute",
         f"{med(dig_l):.2f} s", f"ratio {med(dig_k) / med(dig_l):.2f}; runs {', '.join(f'{x:.2f}' for x in dig_k)}"),
    ]
    nodes = "1 real kubelet + containerd + runc Node" if real is not None else "2 node-runner Nodes"
    print(f"{args.repeat} repeats each, medians; Kubernetes 1.20.2 control plane + {nodes} on this machine")
    print_table(("what", "Kubernetes", "peer", "peer figure", "note"), rows)


if __name__ == "__main__":
    main()
