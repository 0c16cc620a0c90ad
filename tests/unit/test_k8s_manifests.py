"""The Kubernetes target's pure parts: settings, the rendered objects (golden files, validated with
kubernetes-validate's strict schemas of two recent Kubernetes versions), object names, chunking of the
code, the round-trip diff and the run-state machine read from Jobs and pods.

Regenerate the golden files after an intended change:
``TORCHYARD_UPDATE_GOLDEN=1 pytest tests/unit/test_k8s_manifests.py``.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
import yaml

from torchyard import PyTorch
from torchyard.compute import k8s_manifests as m
from torchyard.compute.base import PreparedJob
from torchyard.compute.kubernetes import KubernetesCompute, judge, round_trip_diff
from torchyard.errors import ComputeError, NotSupportedError, SpecError
from torchyard.launch.plan import PYTHON, NodePlan

GOLDEN = Path(__file__).parent / "golden" / "k8s"
RUN_ID = "digits_1795680000_ab12cd34"
VERSIONS = ("1.36.0", "1.37.0")  # kubernetes-validate's two most recent schema sets


def _job(tmp_path: Path, **kw) -> PreparedJob:
    (tmp_path / "train.py").write_text("print('hi')\n")
    spec = PyTorch(str(tmp_path), entry_script="train.py", **kw).to_job_spec()
    return PreparedJob(
        run_id=RUN_ID, experiment="digits", workspace="/home/me/ws", workdir=f"/home/me/ws/.torchyard/runs/{RUN_ID}",
        spec=spec, rank_argv=[PYTHON, "train.py", "--epochs", "3"], launcher_python="/usr/bin/python3",
        rank_python=PYTHON,
        bootstrap={"environment": None, "inputs": {}, "outputs": [], "cache_root": m.CACHE_DIR},
    )  # fmt: skip


CASES = {
    "jobs_2x1": ({"image": "registry.local/torchyard:1"}, {"node_count": 2, "distributed_backend": "pytorch"}),
    "jobs_1x4_gpu_all_options": (
        {"image": "registry.local/torchyard:1", "namespace": "ml", "service_account": "trainer",
         "node_selector": ["pool=a100"], "tolerations": ["nvidia.com/gpu=present:NoSchedule", "spot:NoExecute"],
         "cpus_per_process": 1.5, "memory": "16Gi", "shm_size": "2Gi", "credentials_secret": "s3-keys"},
        {"process_count_per_node": 4, "distributed_backend": "nccl", "use_gpu": True, "max_run_duration_seconds": 3600},
    ),
    "jobs_2x1_kueue": ({"image": "registry.local/torchyard:1", "queue": "team-a"}, {"node_count": 2, "distributed_backend": "pytorch"}),
    "jobs_2x1_host_network": ({"image": "localhost/torchyard-node:test", "host_network": True,
                               "host_paths": ["/opt/python", "/usr"], "log_files": "/var/log/pods"},
                              {"node_count": 2, "distributed_backend": "pytorch"}),
}  # fmt: skip


def _render(settings: dict, job: PreparedJob, parts: list[bytes] | int = 1, uid: str | None = "uid-1") -> list[dict]:
    target = KubernetesCompute(name="k8s", **settings)
    plan = target.dryrun(job)
    return m.render(target.settings(), run_id=job.run_id, experiment=job.experiment, plan=plan.common,
                    node_count=plan.node_count, nproc=plan.nproc, use_gpu=plan.use_gpu, code_parts=parts,
                    owner_uid=uid, max_run_seconds=job.spec.max_run_duration_seconds)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TORCHYARD_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with TORCHYARD_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("case", sorted(CASES))
def test_objects_match_the_golden_files_and_the_strict_schemas(case: str, tmp_path: Path) -> None:
    import kubernetes_validate

    settings, kw = CASES[case]
    objects = _render(settings, _job(tmp_path, **kw), parts=[b"code bytes"])
    _golden(f"{case}.yaml", m.to_yaml(objects))
    assert [o["kind"] for o in objects].count("Job") == kw.get("node_count", 1)
    for obj in objects:
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError


def test_strict_validation_catches_an_unknown_field(tmp_path: Path) -> None:
    import kubernetes_validate

    job = _render(*(lambda s, k: (s, _job(tmp_path, **k)))(*CASES["jobs_2x1"]))[-1]
    job["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)


def test_the_jobs_flavor_shape(tmp_path: Path) -> None:
    settings, kw = CASES["jobs_2x1"]
    objects = _render(settings, _job(tmp_path, **kw), parts=[b"a", b"b"], uid="svc-uid")
    kinds = [o["kind"] for o in objects]
    assert kinds == ["Service", "ConfigMap", "ConfigMap", "ConfigMap", "Job", "Job"]
    service, *rest = objects
    name = m.object_name(RUN_ID)
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] == name
    assert "ownerReferences" not in service["metadata"]
    for obj in rest:  # deleting the Service deletes the rest
        assert obj["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": name,
                                                       "uid": "svc-uid", "blockOwnerDeletion": True}]
        assert obj["metadata"]["labels"]["torchyard/run-id"] == RUN_ID
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "torchyard"
        assert obj["metadata"]["annotations"]["torchyard/run-id"] == RUN_ID
    for k, job in enumerate(objects[-2:]):
        assert job["spec"]["backoffLimit"] == 0
        pod = job["spec"]["template"]
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["hostname"] == f"{name}-{k}" and pod["spec"]["subdomain"] == name
        assert pod["metadata"]["labels"]["torchyard/rank"] == str(k)
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["TORCHYARD_NODE_RANK"] == env["PET_NODE_RANK"] == str(k)
        assert env["PET_MASTER_ADDR"] == f"{name}-0.{name}" and env["PET_NNODES"] == "2"
        shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0]["resources"])
    plan = NodePlan.from_json(objects[3]["data"]["plan.json"])
    assert plan.master_addr == f"{name}-0.{name}" and plan.master_port == m.MASTER_PORT
    assert plan.fill.node_rank == "TORCHYARD_NODE_RANK" and plan.workdir == m.WORK_DIR
    assert plan.on_node({"TORCHYARD_NODE_RANK": "1"}).node_rank == 1


def test_gpus_and_resources(tmp_path: Path) -> None:
    settings, kw = CASES["jobs_1x4_gpu_all_options"]
    pod = _render(settings, _job(tmp_path, **kw))[-1]["spec"]["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "4" and res["requests"]["cpu"] == "6"
    assert res["limits"]["memory"] == "16Gi"
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"][1] == {"key": "spot", "operator": "Exists", "effect": "NoExecute"}
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]


def test_kueue_jobs_are_created_suspended_with_the_queue_label(tmp_path: Path) -> None:
    settings, kw = CASES["jobs_2x1_kueue"]
    for job in _render(settings, _job(tmp_path, **kw))[-2:]:
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_names_are_dns_labels_unique_and_short() -> None:
    names = {m.object_name(r) for r in ("Digits_1", "digits-1", "digits_1", "DIGITS.1", "9lives_1", "x" * 200)}
    assert len(names) == 6
    for n in names:
        assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", n) and len(n + "-99999") <= 63, n
    assert m.object_name(RUN_ID).startswith("digits-1795680000-ab12cd34-")
    assert m.run_label("a" * 70, "n") == "n" and m.run_label(RUN_ID, "n") == RUN_ID


def test_code_is_chunked_under_the_configmap_limit(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    parts = m.chunks(data)
    assert len(parts) == 3 and b"".join(parts) == data
    settings, kw = CASES["jobs_2x1"]
    objects = _render(settings, _job(tmp_path, **kw), parts=parts)
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "binaryData" in o]
    assert len(maps) == 3
    for cm in maps:
        (value,) = cm["binaryData"].values()
        assert len(base64.b64decode(value)) <= 1024 * 1024 and len(yaml.safe_dump(cm)) < 1536 * 1024
    pod = objects[-1]["spec"]["template"]["spec"]
    assert [v["mountPath"] for v in pod["containers"][0]["volumeMounts"][:3]] == [f"{m.CODE_DIR}/{i}" for i in range(3)]
    with pytest.raises(ComputeError, match="ConfigMaps"):
        _render(settings, _job(tmp_path, **kw), parts=m.MAX_CODE_PARTS + 1)


@pytest.mark.parametrize(("option", "value"), [
    ("namespace", "Not_A_Namespace"), ("node_selector", ["pool"]), ("tolerations", ["gpu:Sometimes"]),
    ("memory", "16 GB"), ("flavor", "deployment"), ("cpus_per_process", 0.0), ("image", "has space"),
    ("queue", "Team A"), ("kubeconfig", ""), ("credentials_secret", "S3_keys"),
])  # fmt: skip
def test_bad_settings_name_the_option(option: str, value: object) -> None:
    with pytest.raises(SpecError) as err:
        KubernetesCompute(**{"image": "img", option: value})  # type: ignore[arg-type]
    assert str(err.value).startswith(f"{option}: ")


def test_a_job_needs_an_image_and_no_mpi(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    spec = PyTorch(str(tmp_path), entry_script="train.py").to_job_spec()
    with pytest.raises(SpecError, match="^image: "):
        KubernetesCompute().check(spec)
    mpi = PyTorch(str(tmp_path), entry_script="train.py", distributed_backend="mpi").to_job_spec()
    with pytest.raises(NotSupportedError, match="distributed_backend"):
        KubernetesCompute(image="img").check(mpi)


def test_the_dry_run_prints_every_object(tmp_path: Path) -> None:
    settings, kw = CASES["jobs_2x1"]
    text = KubernetesCompute(name="k8s", **settings).dryrun(_job(tmp_path, **kw)).describe()
    docs = list(yaml.safe_load_all(text.split("--- kubernetes objects\n", 1)[1]))
    assert [d["kind"] for d in docs] == ["Service", "ConfigMap", "ConfigMap", "Job", "Job"]
    assert "<service uid>" in text and "code snapshot" in text


def test_round_trip_diff_names_dropped_and_changed_fields() -> None:
    sent = {"spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {"containers": [{"name": "a"}]}}}}
    back = {"spec": {"backoffLimit": 0, "completions": 1, "template": {"spec": {"containers": [{"name": "b", "x": 1}]}}}}
    assert round_trip_diff(sent, back) == ["spec.suspend", "spec.template.spec.containers[0].name"]
    assert round_trip_diff(sent["spec"]["template"], {"spec": {"containers": [{"name": "a", "tty": False}]}}) == []


# ---- the Kubeflow flavors: rendered and checked with the published Python API models, never run here

FLAVORS = {
    "trainjob_2x2": ({"image": "registry.local/torchyard:1", "flavor": "trainjob"},
                     {"node_count": 2, "process_count_per_node": 2, "distributed_backend": "pytorch"}),
    "trainjob_2x1_kueue_options": ({"image": "registry.local/torchyard:1", "flavor": "trainjob", "queue": "team-a",
                                    "node_selector": ["pool=a100"], "service_account": "trainer"},
                                   {"node_count": 2, "distributed_backend": "pytorch"}),
    "pytorchjob_3x1": ({"image": "registry.local/torchyard:1", "flavor": "pytorchjob"},
                       {"node_count": 3, "distributed_backend": "pytorch"}),
    "pytorchjob_2x1_kueue": ({"image": "registry.local/torchyard:1", "flavor": "pytorchjob", "queue": "team-a"},
                             {"node_count": 2, "distributed_backend": "pytorch"}),
}  # fmt: skip


def _check_with_published_model(obj: dict) -> None:
    """Parse ``obj`` with its kind's published model and back: a field the model does not know is
    dropped on the way, so the round trip must give ``obj`` again."""
    if obj["kind"] == "TrainJob":
        from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

        back = TrainerV1alpha1TrainJob.from_dict(obj).to_dict()
    else:
        from kubeflow.training import ApiClient

        client = ApiClient()
        back = client.sanitize_for_serialization(client._ApiClient__deserialize(obj, "KubeflowOrgV1PyTorchJob"))
    assert round_trip_diff(obj, back) == [], round_trip_diff(obj, back)


@pytest.mark.parametrize("case", sorted(FLAVORS))
def test_kubeflow_flavors_match_golden_files_and_the_published_models(case: str, tmp_path: Path) -> None:
    import kubernetes_validate

    settings, kw = FLAVORS[case]
    objects = _render(settings, _job(tmp_path, **kw), parts=[b"code bytes"])
    _golden(f"{case}.yaml", m.to_yaml(objects))
    *core, custom = objects
    assert [o["kind"] for o in core] == ["Service", "ConfigMap", "ConfigMap"]
    for obj in core:
        kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)
    _check_with_published_model(custom)
    assert custom["metadata"]["ownerReferences"][0]["kind"] == "Service"
    if settings.get("queue"):
        assert custom["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        suspend = custom["spec"]["suspend"] if custom["kind"] == "TrainJob" else custom["spec"]["runPolicy"]["suspend"]
        assert suspend is True


def test_the_published_models_catch_an_unknown_field(tmp_path: Path) -> None:
    for case in ("trainjob_2x2", "pytorchjob_3x1"):
        settings, kw = FLAVORS[case]
        custom = _render(settings, _job(tmp_path, **kw))[-1]
        custom["spec"]["numWorkers"] = 3
        with pytest.raises(AssertionError):
            _check_with_published_model(custom)


def test_kubeflow_flavors_read_the_operators_variables(tmp_path: Path) -> None:
    settings, kw = FLAVORS["pytorchjob_3x1"]
    objects = _render(settings, _job(tmp_path, **kw))
    plan = NodePlan.from_json(objects[2]["data"]["plan.json"])
    assert (plan.fill.node_rank, plan.fill.master_addr) == ("PET_NODE_RANK", "MASTER_ADDR")
    specs = objects[-1]["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    env = {e["name"] for e in specs["Worker"]["template"]["spec"]["containers"][0]["env"]}
    assert not env & {"TORCHYARD_NODE_RANK", "PET_NODE_RANK", "PET_MASTER_ADDR"}  # the operator sets them
    settings, kw = FLAVORS["trainjob_2x2"]
    objects = _render(settings, _job(tmp_path, **kw))
    plan = NodePlan.from_json(objects[2]["data"]["plan.json"])
    assert (plan.fill.node_rank, plan.fill.master_addr) == ("PET_NODE_RANK", "PET_MASTER_ADDR")
    trainer = objects[-1]["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 2


def test_kubeflow_flavors_are_not_scheduled(tmp_path: Path) -> None:
    settings, kw = FLAVORS["trainjob_2x2"]
    target = KubernetesCompute(name="k8s", **settings)
    with pytest.raises(ComputeError, match="^flavor: 'trainjob' is rendered"):
        target.schedule(target.dryrun(_job(tmp_path, **kw)))


# ---- the state machine ------------------------------------------------------------------------------


def _obj(kind: str, rank: int, **status) -> dict:
    name = f"r-{rank}" + ("-abcde" if kind == "pod" else "")
    return {"metadata": {"name": name, "labels": {"torchyard/rank": str(rank)}, "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": status.pop("spec", {}), "status": status}


def _pod(rank: int, phase: str, node: str | None = "n1", **status) -> dict:
    pod = _obj("pod", rank, phase=phase, **status)
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def _terminated(code: int, reason: str = "Error") -> dict:
    return {"containerStatuses": [{"name": "node", "state": {"terminated": {"exitCode": code, "reason": reason}}}]}


def test_state_unschedulable_is_queued_with_the_schedulers_reason() -> None:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient cpu."}
    v = judge(2, [_obj("job", 0), _obj("job", 1)], [_pod(0, "Pending", None, conditions=[cond]), _pod(1, "Running")])
    assert v.queued == "Kubernetes: pod r-0-abcde is Unschedulable: 0/2 nodes are available: 2 Insufficient cpu."
    assert not v.done and v.failed_rank is None


def test_state_jobs_without_pods_wait_for_the_job_controller() -> None:
    v = judge(2, [_obj("job", 0), _obj("job", 1)], [_pod(0, "Running")])
    assert v.queued == "node 1: waiting for the Job controller to create its pod"


def test_state_suspended_kueue_job_is_queued() -> None:
    job = _obj("job", 0, spec={"suspend": True})
    job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    v = judge(1, [job], [])
    assert v.queued == "Kueue: Job r-0 is suspended until queue 'team-a' admits it"
    v = judge(1, [_obj("job", 0, spec={"suspend": False})], [_pod(0, "Pending", None)])  # admitted: now the scheduler
    assert v.queued == "Kubernetes: pod r-0-abcde waits for the scheduler"


def test_state_running_completed_and_failed() -> None:
    jobs = [_obj("job", 0), _obj("job", 1)]
    v = judge(2, jobs, [_pod(0, "Running"), _pod(1, "Pending")])  # scheduled, container starting
    assert v.queued is None and not v.done and v.nodes == {0: "n1", 1: "n1"}
    v = judge(2, jobs, [_pod(0, "Succeeded", **_terminated(0, "Completed")), _pod(1, "Succeeded", **_terminated(0))])
    assert v.done and v.exit_code == 0
    v = judge(2, jobs, [_pod(0, "Running"), _pod(1, "Failed", **_terminated(3))])
    assert v.failed_rank == 1 and v.exit_code == 3 and not v.done and v.message is None
    v = judge(1, jobs[:1], [_pod(0, "Failed", **_terminated(137, "OOMKilled"))])
    assert v.failed_rank == 0 and "OOMKilled" in (v.message or "")


def test_state_a_pod_that_cannot_start_fails_the_run() -> None:
    status = {"containerStatuses": [{"name": "node", "state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}}]}
    v = judge(1, [_obj("job", 0)], [_pod(0, "Pending", **status)])
    assert v.failed_rank == 0 and "ErrImagePull: no such image" in (v.message or "")


def test_state_a_failed_job_whose_pod_is_gone() -> None:
    job = _obj("job", 0, conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                      "message": "Job was active longer than specified deadline"}])
    v = judge(1, [job], [])
    assert v.failed_rank == 0 and v.message == ("Job r-0 failed: DeadlineExceeded: Job was active longer than "
                                                "specified deadline")


def test_the_guide_lists_the_options() -> None:
    """docs/guides/kubernetes.md shows the kind's options, generated at build time from its declarations."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "guides" / "kubernetes.md").read_text()
    assert "<!-- torchyard:options kubernetes -->" in guide, "the guide's options table is generated from the code"


def test_compute_add_kubernetes_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchyard.cli.main import main

    ws = ["--workspace", str(tmp_path / ".torchyard")]
    assert main([*ws, "compute", "add", "kubernetes", "kube", "--image", "img:1", "--namespace", "Bad_NS"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "namespace: expected a DNS-1123 label" in err
    assert main([*ws, "compute", "add", "kubernetes", "kube", "--image", "img:1", "--node-selector", "pool=a",
                 "--toleration", "gpu:NoSchedule", "--toleration", "spot=yes:NoExecute", "--flavor", "pytorchjob"]) == 0
    from torchyard.compute.registry import get_target

    target = get_target("kube", str(tmp_path / ".torchyard"))
    assert isinstance(target, KubernetesCompute)
    assert (target.node_selector, target.tolerations, target.flavor) == (["pool=a"], ["gpu:NoSchedule", "spot=yes:NoExecute"],
                                                                        "pytorchjob")


# ---- clusters without a pod network (the real-node tier's options) ----------------------------------


def _env(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_host_network_pods_read_node_0s_node_ip_and_a_port_of_the_run(tmp_path: Path) -> None:
    settings = {"image": "img:1", "host_network": True, "host_paths": ["/opt/python"]}
    job = _job(tmp_path, node_count=2, distributed_backend="pytorch")
    target = KubernetesCompute(name="k8s", **settings)
    plan = target.dryrun(job)
    port = m.master_port(target.settings(), plan.name)
    assert 20000 <= port < 30000 and port == plan.common["master_port"]
    assert plan.common["fill"]["master_addr"] == m.MASTER_ADDR_ENV  # the launcher reads it in each pod
    objects = m.render(target.settings(), run_id=job.run_id, experiment="digits", plan=plan.common, node_count=2,
                       nproc=1, use_gpu=False, code_parts=1, owner_uid="u", master_ip="10.0.0.7")
    jobs = [o for o in objects if o["kind"] == "Job"]
    env0, env1 = _env(jobs[0]), _env(jobs[1])
    assert env0[m.MASTER_ADDR_ENV] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}
    assert env1[m.MASTER_ADDR_ENV] == "10.0.0.7"
    assert env0["PET_MASTER_ADDR"] == env1["PET_MASTER_ADDR"] == f"$({m.MASTER_ADDR_ENV})"
    assert env0["PET_MASTER_PORT"] == str(port)
    pod = jobs[1]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"name": "host-0", "hostPath": {"path": "/opt/python", "type": "Directory"}} in pod["volumes"]
    assert {"name": "host-0", "mountPath": "/opt/python", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert m.master_port({}, plan.name) == m.MASTER_PORT  # a pod network keeps the fixed port
    pending = _render(settings, job)  # before node 0 is placed (the dry run): a placeholder, never sent
    assert _env([o for o in pending if o["kind"] == "Job"][1])[m.MASTER_ADDR_ENV] == m.MASTER_ADDR_PENDING


@pytest.mark.parametrize(("option", "value"), [("host_paths", ["relative/dir"]), ("host_paths", ["/a/"]),
                                               ("log_files", "var/log/pods"), ("host_network", "yes")])
def test_bad_node_options_name_the_option(option: str, value: object) -> None:
    with pytest.raises(SpecError, match=f"^{option}: "):
        KubernetesCompute(image="img:1", **{option: value})


def test_cri_log_files_are_parsed_joining_partial_lines(tmp_path: Path) -> None:
    """The kubelet's CRI log format: ``<time> <stream> <P|F> <text>``; a long line comes in P parts."""
    import queue

    from torchyard.compute.k8s_pod import END, FRAME, encode
    from torchyard.compute.kubernetes import CriFileStream

    frame = f"{FRAME} {encode({'logs/rank_0.txt': [0, b'hello' * 1000]})}"
    folder = tmp_path / "default_pod-a_uid-1" / m.CONTAINER
    folder.mkdir(parents=True)
    t = "2026-12-01T12:00:00.000000000Z"
    cut = [frame[i:i + 1000] for i in range(0, len(frame), 1000)]
    lines = [f"{t} stdout F plain one"] + [f"{t} stdout P {c}" for c in cut[:-1]]
    lines += [f"{t} stderr F from stderr", f"{t} stdout F {cut[-1]}", f"{t} stdout F {END} 0"]
    (folder / "0.log").write_text("\n".join(lines) + "\n")
    (folder / "0.log.20261201-120000").write_text("a rotated file is not read\n")

    class FakeSession:  # the stream only needs the namespace
        ns = "default"

    out: queue.Queue = queue.Queue()
    stream = CriFileStream(FakeSession(), "pod-a", 0, out, str(tmp_path))  # type: ignore[arg-type]
    assert stream.closed.wait(10)
    items = [out.get_nowait() for _ in range(out.qsize())]
    assert stream.end == 0
    assert [i for _, i in items if isinstance(i, str)] == ["plain one", "from stderr"]
    frames = [i for _, i in items if not isinstance(i, str)]
    assert frames == [{"logs/rank_0.txt": [0, b"hello" * 1000]}]


def test_the_dry_runs_code_config_map_is_valid_base64_a_cluster_would_accept(tmp_path: Path) -> None:
    """`--dry-run` prints manifests that `kubectl apply --dry-run=server` takes: binaryData is base64."""
    import base64
    import binascii

    job = _job(tmp_path, node_count=2, distributed_backend="pytorch")
    target = KubernetesCompute(name="k8s", image="img:1")
    plan = target.dryrun(job)
    objects = m.render(target.settings(), run_id=job.run_id, experiment="digits", plan=plan.common, node_count=2,
                       nproc=1, use_gpu=False, code_parts=3, owner_uid=None, master_ip=None)
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "binaryData" in o]
    assert len(maps) == 3
    for i, cm in enumerate(maps):
        (value,) = cm["binaryData"].values()
        try:
            text = base64.b64decode(value, validate=True).decode()
        except binascii.Error as err:
            raise AssertionError(f"{cm['metadata']['name']}: binaryData is not base64: {value!r}") from err
        assert f"part {i + 1} of 3" in text
        assert "placeholder" in cm["metadata"]["annotations"]["torchyard.dev/dry-run"]
