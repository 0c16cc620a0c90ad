"""The real-node tier: the Kubernetes target on a real kubelet + containerd + runc (1.20.2, built by
``scripts/build_k8s.sh --kubelet``), not the suite's node runner. Slow (its build, the Debian packages
and ~20 s of node start), so it runs only with ``TORCHYARD_TEST_K8S_NODE=1`` (marker ``k8s_node``).

The pods run in containers of an image built from local files (``tests/integration/k8s_node.py``:
busybox, ``/bin/python`` pointing at this machine's Python install, which the pods mount read-only
by hostPath with ``/usr``, and a copy of ``src/torchyard``); they use the host network (node 0's
address is its node's IP), and their logs are read from the kubelet's CRI log files
(``log_files="/var/log/pods"``: the API server cannot reach this kubelet's log endpoint)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES, wait_until, write_script
from tests.integration.k8s_cluster import Cluster
from tests.integration.k8s_node import HOST_PATHS, NODE_IMAGE, POD_LOGS, RealNode, node_bin, node_ip

from torchyard import ComputeTarget, Experiment, PyTorch
from torchyard.compute import k8s_manifests as m
from torchyard.compute.kubernetes import KubernetesCompute
from torchyard.launch.contract import AZURE_NAMES, PET_NAMES, TORCH_NAMES

WANTED = os.environ.get("TORCHYARD_TEST_K8S_NODE") == "1"
BIN = node_bin() if WANTED else None
IP = node_ip() if WANTED else None
pytestmark = [
    pytest.mark.k8s_node,
    pytest.mark.skipif(not WANTED, reason="the real-node tier runs with TORCHYARD_TEST_K8S_NODE=1 "
                                          "(after bash scripts/build_k8s.sh --kubelet)"),
    pytest.mark.skipif(WANTED and BIN is None, reason="not built: bash scripts/build_k8s.sh --kubelet"),
    pytest.mark.skipif(WANTED and IP is None, reason="the kubelet's --node-ip needs a non-loopback address"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("etcd") is None, reason="needs root and etcd"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    assert BIN is not None and IP is not None
    root = tmp_path_factory.mktemp("k8snode")
    cluster = Cluster(root / "control-plane", BIN, nodes=())
    (root / "control-plane").mkdir()
    real = RealNode(cluster, root / "node", BIN, IP)
    try:
        cluster.start()
        t0 = time.time()
        real.start()
        real.timings["control_plane_ready"] = cluster.timings["apiserver_ready"]
        real.timings["tier_ready"] = cluster.timings["nodes_ready"] + (time.time() - t0)
        print("real-node tier timings (s):", json.dumps({k: round(v, 2) for k, v in real.timings.items()}))
        yield real
    finally:
        real.stop()
        cluster.stop()


@pytest.fixture
def kws(ws, node):
    # 1 CPU per rank: the kubelet turns the request into cpu.shares (1 CPU = 1024, what any host process
    # has, e.g. local compute's ranks), and the node's 2 CPUs hold both pods
    ComputeTarget.attach(ws, "kubelet", KubernetesCompute(
        image=NODE_IMAGE, kubeconfig=str(node.cluster.kubeconfig), cpus_per_process=1.0, host_network=True,
        host_paths=HOST_PATHS, log_files=POD_LOGS))
    return ws


def _pods(node, run) -> list[dict]:
    from kubernetes import client as kc

    api = node.cluster.api()
    try:
        return [p.to_dict() for p in kc.CoreV1Api(api).list_namespaced_pod(
            "default", label_selector=m.selector(run.id, m.object_name(run.id))).items]
    finally:
        api.close()


def test_ddp_digits_2x1_on_a_real_kubelet_in_containers(kws, node):
    est = PyTorch(str(EXAMPLES / "digits"), entry_script="train.py", compute_target="kubelet", node_count=2,
                  distributed_backend="pytorch", script_params={"--epochs": 3})
    t0 = time.time()
    run = Experiment(kws, "k8s-node").submit(est)
    seen: list[dict] = []

    def both_running() -> bool:
        pods = _pods(node, run)
        seen[:] = pods or seen
        return len(pods) == 2 and all(p["status"]["phase"] in ("Running", "Succeeded") for p in pods)

    wait_until(both_running, timeout=90, interval=0.2)
    running = time.time() - t0
    details = run.wait_for_completion(timeout=180, raise_on_error=False)
    wall = time.time() - t0
    print(f"real-node tier: submit -> both pods running {running:.2f} s, DDP digits 2x1 wall {wall:.2f} s")
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert sorted(every) == [0, 1]
    assert every[0]["param_checksum"] == every[1]["param_checksum"]  # DDP kept the replicas equal
    assert len(every[0]["accuracy"]) == 3
    names = run.get_file_names()
    assert "outputs/model.pt" in names and "logs/rank_1.txt" in names  # came back through the CRI log files
    assert "epoch 2:" in Path(run.workdir, "logs", "rank_0.txt").read_text()
    # they ran in containers on the kubelet's node: runc's container ids, the image, the host network
    assert {p["spec"]["node_name"] for p in seen} == {node.name}
    for p in seen:
        assert p["spec"]["host_network"] is True
        status = p["status"]["container_statuses"][0]
        assert status["container_id"].startswith("containerd://") and status["image"].endswith(NODE_IMAGE.split("/")[-1])
        assert p["status"]["host_ip"] == node.ip
    info = details["compute"]["kubernetes"]
    assert set(info["pods"]) == {"0", "1"} and set(info["nodes"].values()) == {node.name}


ENV_SCRIPT = """
    import json, os, sys
    names = {names!r}
    print("ENV " + json.dumps({{n: os.environ.get(n) for n in names}}), flush=True)
    print("SEES " + json.dumps({{"workspace": os.path.exists(os.environ["TORCHYARD_WORKSPACE"]),
                                "busybox": os.path.exists("/bin/busybox"), "cwd": os.getcwd()}}), flush=True)
"""


def test_env_contract_in_the_containers(kws, node, tmp_path):
    names = [*TORCH_NAMES, *AZURE_NAMES, *PET_NAMES, "TORCHYARD_RUN_ID", "GROUP_RANK"]
    write_script(tmp_path / "src", "env.py", ENV_SCRIPT.format(names=names))
    est = PyTorch(str(tmp_path / "src"), entry_script="env.py", compute_target="kubelet", node_count=2,
                  distributed_backend="pytorch")
    run = Experiment(kws, "k8s-node").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    port = str(m.master_port({"host_network": True}, m.object_name(run.id)))
    for rank in range(2):
        text = Path(run.workdir, "logs", f"rank_{rank}.txt").read_text()
        env = json.loads(text.split("ENV ", 1)[1].splitlines()[0])
        sees = json.loads(text.split("SEES ", 1)[1].splitlines()[0])
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == node.ip  # node 0's node IP: no pod DNS here
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == port
        assert env["RANK"] == env["AZ_BATCHAI_TASK_INDEX"] == env["NODE_RANK"] == env["PET_NODE_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == "2" and env["LOCAL_RANK"] == "0" and env["PET_NNODES"] == "2"
        assert env["AZ_BATCH_MASTER_NODE"] == f"{node.ip}:{port}"
        assert env["TORCHYARD_RUN_ID"] == run.id
        assert sees == {"workspace": False, "busybox": True, "cwd": m.WORK_DIR}  # the image's root, not this machine's
    wait_until(lambda: not _pods(node, run), timeout=60, interval=0.5)  # released: the pods went


FAIL_SCRIPT = """
    import sys, time
    import torch, torch.distributed as dist
    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        print("rank 1 is about to fail", flush=True)
        raise SystemExit(3)
    dist.barrier()  # rank 0 waits here for a rank that never comes
    time.sleep(600)
"""


def test_a_failing_rank_fails_the_run_naming_it_with_its_lines_from_the_cri_log(kws, node, tmp_path):
    write_script(tmp_path / "src", "fail.py", FAIL_SCRIPT)
    est = PyTorch(str(tmp_path / "src"), entry_script="fail.py", compute_target="kubelet", node_count=2,
                  distributed_backend="pytorch")
    run = Experiment(kws, "k8s-node").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Failed"
    error = details["error"]
    assert error["rank"] == 1 and error["node_rank"] == 1, error
    assert "rank 1 is about to fail" in json.dumps(error)  # its last lines, which came over the CRI log file
    wait_until(lambda: not _pods(node, run), timeout=60, interval=0.5)  # node 0's pod was stopped and deleted
