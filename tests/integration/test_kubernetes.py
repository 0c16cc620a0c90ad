"""The Kubernetes target against a real control plane (kube-apiserver, kube-controller-manager with
the Job controller and the garbage collector, kube-scheduler, etcd; Kubernetes 1.20.2 built from
Debian's source package by scripts/build_k8s.sh) and two Nodes run by the tests' own node runner
(tests/integration/k8s_cluster.py: it runs each pod's command on this machine's Python, in a mount
namespace with a private /tmp, /etc/hosts and the pod's volumes — not in a container image).

The pods do not see the submitter's workspace: the code comes as ConfigMaps, the environment is
built in the pod, and logs, metric journals, node reports and outputs come back as mirror frames on
each pod's log stream (the pod-logs API, served by the node runner through the API server)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES, wait_until, write_script
from tests.integration.k8s_cluster import Cluster, control_plane_bin

from torchyard import ComputeTarget, Experiment, PyTorch
from torchyard.compute import k8s_manifests as m
from torchyard.compute.kubernetes import KubernetesCompute
from torchyard.errors import SpecError
from torchyard.launch.contract import AZURE_NAMES, PET_NAMES, TORCH_NAMES

BIN = control_plane_bin()
pytestmark = [
    pytest.mark.skipif(BIN is None, reason="the Kubernetes control plane is not built: bash scripts/build_k8s.sh"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("etcd") is None,
                       reason="the node runner needs root, unshare and etcd"),
]
IMAGE = "torchyard-test:local"  # the node runner runs pods on this machine's Python instead


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    assert BIN is not None
    cluster = Cluster(tmp_path_factory.mktemp("k8s"), BIN)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kws(ws, k8s):
    ComputeTarget.attach(ws, "kube", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig)))
    return ws


def _selector(run) -> str:
    return m.selector(run.id, m.object_name(run.id))


def _no_objects_left(k8s, run) -> bool:
    left = k8s.objects(_selector(run))
    return not any(left.values()) or (print("left:", left) and False)  # type: ignore[func-returns-value]


def test_ddp_digits_2x1_completes_with_logs_metrics_and_outputs_back(kws, k8s):
    est = PyTorch(str(EXAMPLES / "digits"), entry_script="train.py", compute_target="kube", node_count=2,
                  distributed_backend="pytorch", script_params={"--epochs": 3})
    run = Experiment(kws, "k8s").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert sorted(every) == [0, 1]
    assert every[0]["param_checksum"] == every[1]["param_checksum"]  # DDP kept the replicas equal
    assert len(every[0]["accuracy"]) == 3
    names = run.get_file_names()
    assert "outputs/model.pt" in names and "logs/rank_1.txt" in names  # came back over the log stream
    assert "epoch 2:" in Path(run.workdir, "logs", "rank_0.txt").read_text()
    info = details["compute"]["kubernetes"]
    assert set(info["pods"]) == {"0", "1"} and set(info["nodes"].values()) <= {"node-a", "node-b"}
    wait_until(lambda: _no_objects_left(k8s, run), timeout=30, interval=0.5)  # released: nothing left behind


def test_a_run_whose_logs_cannot_be_streamed_is_not_a_silent_success(kws, k8s, tmp_path):
    """The API server cannot reach the kubelets: no frame comes back (logs, metric journals, node reports).
    The pods succeed, and the run says what it is missing instead of reading as a plain success."""
    write_script(tmp_path / "src", "ok.py", "from torchyard import Run\nRun.get_context().log('x', 1.0)\nprint('hi')\n")
    k8s.cut_logs(True)
    try:
        est = PyTorch(str(tmp_path / "src"), entry_script="ok.py", compute_target="kube", node_count=2,
                      distributed_backend="pytorch")
        run = Experiment(kws, "k8s").submit(est)
        details = run.wait_for_completion(timeout=180, raise_on_error=False)
    finally:
        k8s.cut_logs(False)
    warnings = details.get("warnings") or []
    print("cut log stream:", details["status"], warnings or details.get("error"))
    if details["status"] == "Completed":
        assert any("node 0's launcher report did not come back" in w for w in warnings), warnings
        assert any("node 1's launcher report did not come back" in w for w in warnings), warnings
    else:  # or Failed, saying why: never a Completed run that reads as whole
        assert details["status"] == "Failed" and details.get("error"), details
    wait_until(lambda: _no_objects_left(k8s, run), timeout=30, interval=0.5)


ENV_SCRIPT = """
    import json, os, sys
    import tomli_w
    names = {names!r}
    print("ENV " + json.dumps({{n: os.environ.get(n) for n in names}}), flush=True)
    print("SEES " + json.dumps({{"workspace": os.path.exists(os.environ["TORCHYARD_WORKSPACE"]),
                                "marker": os.path.exists({marker!r}), "cwd": os.getcwd(),
                                "python": sys.executable}}), flush=True)
    import hashlib
    print("BLOB " + hashlib.sha256(open("blob.bin", "rb").read()).hexdigest(), flush=True)
"""


def test_env_contract_on_every_rank_environment_built_in_the_pod_and_no_workspace(kws, k8s, tmp_path):
    marker = tmp_path / "submitter-only.txt"
    marker.write_text("the pods must not see this\n")
    names = [*TORCH_NAMES, *AZURE_NAMES, *PET_NAMES, "TORCHYARD_RUN_ID", "TORCHYARD_NODE_CACHE", "GROUP_RANK"]
    write_script(tmp_path / "src", "env.py", ENV_SCRIPT.format(names=names, marker=str(marker)))
    blob = os.urandom(2 * 1024 * 1024)  # incompressible: the code travels as 3 ConfigMaps
    (tmp_path / "src" / "blob.bin").write_bytes(blob)
    est = PyTorch(str(tmp_path / "src"), entry_script="env.py", compute_target="kube", node_count=2,
                  process_count_per_node=2, distributed_backend="pytorch", pip_packages=["tomli-w==1.2.0"])
    run = Experiment(kws, "k8s").submit(est)
    details = run.wait_for_completion(timeout=150, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    assert details["environment"]["placed_on"] == "nodes"
    assert not (Path(kws.path) / "envs").exists()  # nothing was built on the submitting machine
    name = m.object_name(run.id)
    for rank in range(4):
        text = Path(run.workdir, "logs", f"rank_{rank}.txt").read_text()
        env = json.loads(text.split("ENV ", 1)[1].splitlines()[0])
        sees = json.loads(text.split("SEES ", 1)[1].splitlines()[0])
        node = rank // 2
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"{name}-0.{name}"
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == str(m.MASTER_PORT)
        assert env["RANK"] == env["AZ_BATCHAI_TASK_INDEX"] == str(rank)
        assert env["LOCAL_RANK"] == str(rank % 2) and env["WORLD_SIZE"] == "4" and env["LOCAL_WORLD_SIZE"] == "2"
        assert env["NODE_RANK"] == env["GROUP_RANK"] == env["PET_NODE_RANK"] == str(node)
        assert env["PET_NNODES"] == env["AZUREML_NODE_COUNT"] == "2" and env["PET_NPROC_PER_NODE"] == "2"
        assert env["AZ_BATCH_MASTER_NODE"] == f"{name}-0.{name}:{m.MASTER_PORT}"
        assert env["TORCHYARD_RUN_ID"] == run.id
        assert sees == {"workspace": False, "marker": False, "cwd": m.WORK_DIR, "python": sees["python"]}
        assert sees["python"].startswith(m.CACHE_DIR)  # the job's environment, built in the pod's cache
        assert text.split("BLOB ", 1)[1].split()[0] == hashlib.sha256(blob).hexdigest()
    assert "logs/bootstrap_node_1.txt" in run.get_file_names()
    assert details["compute"]["kubernetes"]["code_configmaps"] == 3


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


def test_a_failing_rank_fails_the_run_fast_naming_it(kws, k8s, tmp_path):
    write_script(tmp_path / "src", "fail.py", FAIL_SCRIPT)
    est = PyTorch(str(tmp_path / "src"), entry_script="fail.py", compute_target="kube", node_count=2,
                  distributed_backend="pytorch")
    t0 = time.time()
    run = Experiment(kws, "k8s").submit(est)
    details = run.wait_for_completion(timeout=90, raise_on_error=False)
    took = time.time() - t0
    assert details["status"] == "Failed"
    error = details["error"]
    assert error["rank"] == 1 and error["node_rank"] == 1, error
    assert "rank 1 is about to fail" in json.dumps(error)
    assert took < 60, took  # not the collective's timeout
    wait_until(lambda: _no_objects_left(k8s, run), timeout=30, interval=0.5)


def test_cancel_deletes_the_objects_and_ends_canceled(kws, k8s, tmp_path):
    write_script(tmp_path / "src", "sleep.py", "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    est = PyTorch(str(tmp_path / "src"), entry_script="sleep.py", compute_target="kube", node_count=2,
                  distributed_backend="pytorch")
    run = Experiment(kws, "k8s").submit(est)
    wait_until(lambda: run.get_status() == "Running", timeout=60, interval=0.2)
    wait_until(lambda: "sleeping" in (Path(run.workdir, "logs", "rank_1.txt").read_text()
                                      if Path(run.workdir, "logs", "rank_1.txt").exists() else ""), timeout=30)
    run.cancel("enough")
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Canceled"
    wait_until(lambda: _no_objects_left(k8s, run), timeout=30, interval=0.5)


def test_a_job_too_big_is_queued_with_the_schedulers_reason_then_gives_up(ws, k8s, tmp_path):
    ComputeTarget.attach(ws, "kube-big", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig),
                                                           cpus_per_process=16.0))
    write_script(tmp_path / "src", "ok.py", "print('never runs')\n")
    est = PyTorch(str(tmp_path / "src"), entry_script="ok.py", compute_target="kube-big", max_queue_seconds=4)
    run = Experiment(ws, "k8s").submit(est)
    wait_until(lambda: "Insufficient cpu" in (run.get_details().get("queue_reason") or ""), timeout=30, interval=0.2)
    assert run.get_details()["queue_reason"].endswith("0/2 nodes are available: 2 Insufficient cpu.")
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Queued" and "Insufficient cpu" in details["error"]["message"]
    wait_until(lambda: _no_objects_left(k8s, run), timeout=30, interval=0.5)


def _start_failure(ws, tmp_path, target: str):
    write_script(tmp_path / "src", "ok.py", "print('never runs')\n")
    run = Experiment(ws, "k8s").submit(PyTorch(str(tmp_path / "src"), entry_script="ok.py", compute_target=target))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Starting"
    return run, str(details["error"]["message"])


def _fails_at_start(ws, tmp_path, target: str) -> str:
    return _start_failure(ws, tmp_path, target)[1]


def test_unreachable_api_server_forbidden_user_and_bad_settings_say_so(ws, k8s, tmp_path):
    dead = json.loads(k8s.kubeconfig.read_text())
    dead["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    (tmp_path / "dead.kubeconfig").write_text(json.dumps(dead))
    ComputeTarget.attach(ws, "kube-dead", KubernetesCompute(image=IMAGE, kubeconfig=str(tmp_path / "dead.kubeconfig")))
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:1" in _fails_at_start(ws, tmp_path, "kube-dead")
    ComputeTarget.attach(ws, "kube-nobody", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig),
                                                              context="nobody"))
    message = _fails_at_start(ws, tmp_path, "kube-nobody")
    assert "forbidden by the API server (RBAC)" in message and 'User "nobody" cannot create resource "services"' in message
    ComputeTarget.attach(ws, "kube-nons", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig),
                                                            namespace="no-such-ns"))
    assert 'namespace: namespaces "no-such-ns" not found' in _fails_at_start(ws, tmp_path, "kube-nons")
    ComputeTarget.attach(ws, "kube-noconf", KubernetesCompute(image=IMAGE, kubeconfig=str(tmp_path / "missing")))
    assert "kubeconfig: no file" in _fails_at_start(ws, tmp_path, "kube-noconf")
    with pytest.raises(SpecError, match="^namespace: "):
        KubernetesCompute(image=IMAGE, namespace="Not_Valid")


def test_kueue_suspend_is_pruned_by_1_20_and_the_submit_says_so(ws, k8s, tmp_path):
    ComputeTarget.attach(ws, "kube-q", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig), queue="team-a"))
    run, message = _start_failure(ws, tmp_path, "kube-q")
    assert "dropped or changed spec.suspend" in message and "Job suspend needs Kubernetes >= 1.21" in message
    wait_until(lambda: _no_objects_left(k8s, run), timeout=30, interval=0.5)  # the unsuspended Job went at once


def test_every_object_of_the_full_option_case_round_trips(k8s, tmp_path):
    """Each object of a 1x4 GPU job with every option set, created on the real API server: what comes
    back holds every field sent (Session.create compares; 1.20 would drop unknown ones silently)."""
    from torchyard.compute.base import PreparedJob
    from torchyard.compute.kubernetes import Session
    from torchyard.launch.plan import PYTHON

    (tmp_path / "train.py").write_text("print('hi')\n")
    spec = PyTorch(str(tmp_path), entry_script="train.py", process_count_per_node=4, distributed_backend="nccl",
                   use_gpu=True, max_run_duration_seconds=3600).to_job_spec()
    job = PreparedJob(run_id="roundtrip_1_abc", experiment="k8s", workspace="/ws", workdir="/ws/runs/x", spec=spec,
                      rank_argv=[PYTHON, "train.py"], launcher_python="python", rank_python=PYTHON)
    target = KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig), service_account="default",
                               node_selector=["pool=a100"], tolerations=["nvidia.com/gpu=present:NoSchedule", "spot:NoExecute"],
                               cpus_per_process=1.5, memory="16Gi", shm_size="2Gi", credentials_secret="s3-keys")
    plan = target.dryrun(job)
    session = Session(target.api(), "default", "test")
    service = m.render(target.settings(), run_id=job.run_id, experiment="k8s", plan=plan.common, node_count=1, nproc=4,
                       use_gpu=True, code_parts=1, owner_uid=None, max_run_seconds=3600)[0]
    try:
        uid = session.create(service)["metadata"]["uid"]
        rest = m.render(target.settings(), run_id=job.run_id, experiment="k8s", plan=plan.common, node_count=1, nproc=4,
                        use_gpu=True, code_parts=[b"x" * 10], owner_uid=uid, max_run_seconds=3600)[1:]
        assert [o["kind"] for o in rest] == ["ConfigMap", "ConfigMap", "Job"]
        for obj in rest:
            session.create(obj)  # raises ComputeError naming any field the server dropped or changed
    finally:
        session.delete_run(m.object_name(job.run_id), 1)
    wait_until(lambda: not any(k8s.objects(m.selector(job.run_id, m.object_name(job.run_id))).values()),
               timeout=30, interval=0.5)  # the garbage collector removed what the Service owned


@pytest.fixture(scope="module")
def s3_url():
    import s3server  # tests/integration is on sys.path (rootdir conftest)

    reason = s3server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with s3server.S3Server() as server:
        assert server.endpoint_url
        yield server.endpoint_url


def test_s3_inputs_are_downloaded_in_the_pods_with_keys_from_a_secret(ws, k8s, s3_url, tmp_path, aws_env):
    """The pods get no AWS settings from this machine (the node runner passes only PATH, HOME and
    package-index settings): the keys come from the Secret the target names, or the input fails."""
    import boto3
    import numpy as np
    from kubernetes import client as kc
    from sklearn.datasets import load_digits

    from torchyard.data.datastore import Datastore

    s3 = boto3.client("s3", endpoint_url=s3_url)
    s3.create_bucket(Bucket="k8s-inputs")
    s3.close()
    data = tmp_path / "digits_data"
    data.mkdir()
    d = load_digits()
    np.savez(data / "digits.npz", x=d.data, y=d.target)
    store = Datastore.register_s3(ws, "blobs", bucket="k8s-inputs", endpoint_url=s3_url)
    store.upload(str(data), "digits")
    api = k8s.api()
    core = kc.CoreV1Api(api)
    core.create_namespaced_secret("default", {"metadata": {"name": "s3-keys"}, "stringData": {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}})
    try:
        ComputeTarget.attach(ws, "kube-s3", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig),
                                                              credentials_secret="s3-keys"))
        ComputeTarget.attach(ws, "kube-nokeys", KubernetesCompute(image=IMAGE, kubeconfig=str(k8s.kubeconfig)))
        est = PyTorch(str(EXAMPLES / "digits"), entry_script="train.py", compute_target="kube-s3", node_count=2,
                      distributed_backend="pytorch",
                      script_params={"--epochs": 3, "--data_dir": store.path("digits").as_download()})
        run = Experiment(ws, "k8s").submit(est)
        details = run.wait_for_completion(timeout=120, raise_on_error=False)
        assert details["status"] == "Completed", details.get("error")
        assert run.get_metrics()["accuracy"][-1] > 0.5
        assert "logs/inputs_node_1.txt" in run.get_file_names()
        write_script(tmp_path / "src", "ok.py", "print('never runs')\n")
        bare = Experiment(ws, "k8s").submit(PyTorch(str(tmp_path / "src"), entry_script="ok.py", compute_target="kube-nokeys",
                                                    script_params={"--data": store.path("digits").as_download()}))
        details = bare.wait_for_completion(timeout=90, raise_on_error=False)
        assert details["status"] == "Failed"
        assert details["error"]["stage"] == "Preparing", details["error"]
        assert details["error"]["message"].startswith("node 0 could not be prepared"), details["error"]
        assert "no S3 credentials found" in details["error"]["message"]  # none leaked in from this machine
    finally:
        core.delete_namespaced_secret("s3-keys", "default")
        api.close()
