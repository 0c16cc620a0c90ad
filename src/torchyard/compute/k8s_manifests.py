"""The Kubernetes objects of one run, rendered as plain dicts (pure: golden files pin them).

Flavor ``jobs`` (any Kubernetes version): a headless Service named after the run (the parent: every
other object carries an owner reference to it, so deleting it with background propagation removes
them all), ConfigMap(s) holding the run's code snapshot as ``binaryData`` chunks under the object
size limit, one ConfigMap with the launcher plan, and one batch/v1 Job per node rank
(``backoffLimit: 0``, ``restartPolicy: Never``, ``hostname=<name>-<rank>``, ``subdomain=<name>``,
the node rank in the pod's env: Indexed Jobs do not exist in every cluster).

Flavors ``trainjob`` (Kubeflow Trainer v2 TrainJob, ``torch-distributed`` runtime) and
``pytorchjob`` (Training Operator PyTorchJob v1) render the same pod for operators to run.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: where things are inside the pod
CODE_DIR = "/torchyard/code"
PLAN_DIR = "/torchyard/plan"
WORK_DIR = "/torchyard/work"
CACHE_DIR = "/torchyard/cache"
PLAN_FILE = "plan.json"
CONTAINER = "node"
#: the rendezvous port every pod's node 0 listens on (pods have their own network namespace)
MASTER_PORT = 29500
#: raw bytes of the snapshot per ConfigMap (1 MiB is the limit on a ConfigMap's data)
CHUNK_BYTES = 768 * 1024
#: at most this many ConfigMaps of code per run (a bigger snapshot belongs in the image)
MAX_CODE_PARTS = 40
MANAGED_BY = "torchyard"
RUN_LABEL = "torchyard/run-id"
RANK_LABEL = "torchyard/rank"
RUN_ANNOTATION = "torchyard/run-id"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: host-network pods (option ``host_network``): where each pod reads node 0's address (node 0: its own
#: node's IP from the downward API; the others: that IP, written into their Jobs once node 0's pod is placed)
MASTER_ADDR_ENV = "TORCHYARD_MASTER_ADDR"
MASTER_ADDR_PENDING = "<node 0's node IP, set once its pod is placed>"
FLAVORS = ("jobs", "trainjob", "pytorchjob")

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_TAINT = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)(=([-A-Za-z0-9_.]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$")
_SELECTOR = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)=([-A-Za-z0-9_.]*)$")


def object_name(run_id: str) -> str:
    """A DNS-1035 label for the run's objects: lower case, ``_`` → ``-``, other characters dropped,
    a letter first, and a 6-hex-digit hash of the run id last (so two run ids that read alike stay
    apart); at most 57 characters, leaving room for ``-<rank>`` up to rank 99999 within 63."""
    base = re.sub(r"[^a-z0-9-]", "", run_id.lower().replace("_", "-").replace(".", "-"))
    base = re.sub(r"-+", "-", base).strip("-")
    if not base or not base[0].isalpha():
        base = "ty-" + base
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    base = base[: 57 - 7].rstrip("-")
    name = f"{base}-{digest}"
    assert _DNS_LABEL.match(name), name
    return name


def run_label(run_id: str, name: str) -> str:
    """The ``torchyard/run-id`` label's value: the run id when it is a valid label value, else the name."""
    return run_id if len(run_id) <= 63 and _LABEL_VALUE.match(run_id) else name


def check_quantity(value: str) -> str | None:
    return None if _QUANTITY.match(value) else f"expected a Kubernetes quantity such as 2, 500m or 4Gi, got {value!r}"


def check_node_selector(values: list[str]) -> str | None:
    for v in values:
        if not _SELECTOR.match(v):
            return f"each entry must be KEY=VALUE (a node label), got {v!r}"
    return None


def check_tolerations(values: list[str]) -> str | None:
    for v in values:
        if not _TAINT.match(v):
            return f"each entry must be KEY[=VALUE]:EFFECT (EFFECT: NoSchedule, PreferNoSchedule or NoExecute), got {v!r}"
    return None


def check_host_paths(values: list[str]) -> str | None:
    for v in values:
        if not v.startswith("/") or v != v.rstrip("/") or ":" in v:
            return f"each entry must be an absolute folder path on the nodes (no trailing '/'), got {v!r}"
    return None


def check_dns_name(value: str) -> str | None:
    if len(value) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", value):
        return f"expected a DNS-1123 label (lower case letters, digits, '-'; at most 63), got {value!r}"
    return None


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """``data`` cut into ConfigMap-sized parts (at least one, possibly empty)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def master_port(settings: dict[str, Any], name: str) -> int:
    """The rendezvous port: :data:`MASTER_PORT` in a pod network; on the host network (shared with
    everything else on the node) one derived from the run's name, in 20000-29999 (below Linux's
    ephemeral range), so two runs on one node rarely meet."""
    if not settings.get("host_network"):
        return MASTER_PORT
    return 20000 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10000


def _quantity(value: float) -> str:
    """CPUs as the API server writes them back (``1``, ``1500m``): the round trip compares equal."""
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _tolerations(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        m = _TAINT.match(v)
        assert m is not None
        key, _, value, effect = m.groups()
        item: dict[str, Any] = {"key": key, "operator": "Equal" if value is not None else "Exists", "effect": effect}
        if value is not None:
            item["value"] = value
        out.append(item)
    return out


def labels(run_id: str, name: str, rank: int | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/name": "torchyard-run",
           RUN_LABEL: run_label(run_id, name)}
    if rank is not None:
        out[RANK_LABEL] = str(rank)
    return out


def selector(run_id: str, name: str) -> str:
    """The label selector of every object of the run."""
    return f"{RUN_LABEL}={run_label(run_id, name)},app.kubernetes.io/managed-by={MANAGED_BY}"


def _meta(obj: str, ns: str, run_id: str, name: str, owner: dict[str, Any] | None, rank: int | None = None,
          extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": obj, "namespace": ns, "labels": {**labels(run_id, name, rank), **(extra_labels or {})},
                            "annotations": {RUN_ANNOTATION: run_id}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    """The owner reference every object of a run carries: its headless Service."""
    return {"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid, "blockOwnerDeletion": True}


def render(settings: dict[str, Any], *, run_id: str, experiment: str, plan: dict[str, Any], node_count: int,
           nproc: int, use_gpu: bool, code_parts: list[bytes] | int, owner_uid: str | None,
           max_run_seconds: float | None = None, master_ip: str | None = None) -> list[dict[str, Any]]:
    """Every object of the run, in creation order (the Service first: the others name it as owner).

    ``settings``: the target's options. ``plan``: the launcher plan every node shares (NodePlan as a
    dict; its node rank comes from ``TORCHYARD_NODE_RANK`` in each pod). ``code_parts``: the snapshot's
    chunks, or their count (a dry run renders placeholders). ``owner_uid``: the Service's uid once
    created (None: the Service itself or a dry run, shown as ``<service uid>``)."""
    name = object_name(run_id)
    ns = settings.get("namespace") or "default"
    flavor = settings.get("flavor") or "jobs"
    owner = owner_reference(name, owner_uid or "<service uid>")
    count = code_parts if isinstance(code_parts, int) else len(code_parts)
    if count > MAX_CODE_PARTS:
        from torchyard.errors import ComputeError  # noqa: PLC0415

        raise ComputeError(f"the run's code is {count} ConfigMaps of {CHUNK_BYTES // 1024} KiB: more than "
                           f"{MAX_CODE_PARTS}; put large files in the image or in inputs, not in the code folder")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, run_id, name, None),
        "spec": {
            "clusterIP": "None",
            "selector": {RUN_LABEL: run_label(run_id, name), "app.kubernetes.io/managed-by": MANAGED_BY},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": master_port(settings, name), "protocol": "TCP",
                       "targetPort": master_port(settings, name)}],
        },
    }
    objects: list[dict[str, Any]] = [service]
    for i in range(count):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{name}-code-{i}", ns, run_id, name, owner)}
        import base64  # noqa: PLC0415

        if isinstance(code_parts, int):  # a dry run: valid base64 (kubectl apply takes it), saying what goes there
            placeholder = f"dry run: part {i + 1} of {count} of the code snapshot goes here at submit\n"
            cm["binaryData"] = {f"part-{i:03d}": base64.b64encode(placeholder.encode()).decode()}
            meta: dict[str, Any] = cm["metadata"]  # type: ignore[assignment]
            meta.setdefault("annotations", {})["torchyard.dev/dry-run"] = \
                "binaryData holds a placeholder; `torchyard submit` fills in the code snapshot"
        else:
            cm["binaryData"] = {f"part-{i:03d}": base64.b64encode(code_parts[i]).decode()}
        objects.append(cm)
    objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{name}-plan", ns, run_id, name, owner),
                    "data": {PLAN_FILE: json.dumps(plan, indent=1, sort_keys=True)}})
    pods = [pod_template(settings, name=name, run_id=run_id, experiment=experiment, rank=k, node_count=node_count,
                         nproc=nproc, use_gpu=use_gpu, parts=count, master_ip=master_ip) for k in range(node_count)]
    if flavor == "jobs":
        for k, pod in enumerate(pods):
            job_spec: dict[str, Any] = {"backoffLimit": 0, "parallelism": 1, "completions": 1, "template": pod}
            if max_run_seconds:
                job_spec["activeDeadlineSeconds"] = int(max_run_seconds) + 120  # torchyard's own limit ends it first
            extra = {}
            if settings.get("queue"):
                extra[QUEUE_LABEL] = settings["queue"]
                job_spec["suspend"] = True  # Kueue admits (unsuspends) it; torchyard never does
            objects.append({"apiVersion": "batch/v1", "kind": "Job",
                            "metadata": _meta(f"{name}-{k}", ns, run_id, name, owner, rank=k, extra_labels=extra),
                            "spec": job_spec})
    elif flavor == "pytorchjob":
        objects.append(_pytorchjob(settings, name, ns, run_id, owner, pods, nproc))
    elif flavor == "trainjob":
        objects.append(_trainjob(settings, name, ns, run_id, owner, pods, node_count, nproc))
    return objects


def pod_template(settings: dict[str, Any], *, name: str, run_id: str, experiment: str, rank: int, node_count: int,
                 nproc: int, use_gpu: bool, parts: int, master_ip: str | None = None) -> dict[str, Any]:
    """The pod of node ``rank``: unpack the code, run the node bootstrap and the launcher
    (``python -m torchyard.compute.k8s_pod``), stream logs and metric journals on stdout."""
    host_network = bool(settings.get("host_network"))
    master = f"$({MASTER_ADDR_ENV})" if host_network else f"{name}-0.{name}"
    env: list[dict[str, Any]] = [
        {"name": "TORCHYARD_NODE_RANK", "value": str(rank)},
        {"name": "TORCHYARD_NODE_CACHE", "value": CACHE_DIR},
        {"name": "TORCHYARD_K8S_OBJECT", "value": name},
        # the names torchrun and Kubeflow's operators read (also in the env contract of every rank)
        {"name": "PET_NODE_RANK", "value": str(rank)},
        {"name": "PET_NNODES", "value": str(node_count)},
        {"name": "PET_NPROC_PER_NODE", "value": str(nproc)},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(master_port(settings, name))},
    ]
    if host_network:  # no pod DNS on the host network: node 0's node IP instead of <name>-0.<name>
        env.insert(0, {"name": MASTER_ADDR_ENV, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}}
                   if rank == 0 else {"name": MASTER_ADDR_ENV, "value": master_ip or MASTER_ADDR_PENDING})
    cpus = float(settings.get("cpus_per_process") or 1.0) * nproc
    requests: dict[str, str] = {"cpu": _quantity(cpus)}
    if settings.get("memory"):
        requests["memory"] = settings["memory"]
    limits: dict[str, str] = {}
    if settings.get("memory"):
        limits["memory"] = settings["memory"]
    if use_gpu:
        limits["nvidia.com/gpu"] = str(nproc)
        requests["nvidia.com/gpu"] = str(nproc)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.get("image") or "<image>",
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "torchyard.compute.k8s_pod", "--code", CODE_DIR, "--plan",
                    f"{PLAN_DIR}/{PLAN_FILE}", "--work", WORK_DIR],
        "workingDir": WORK_DIR,
        "env": env,
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
        "volumeMounts": [
            *({"name": f"code-{i}", "mountPath": f"{CODE_DIR}/{i}", "readOnly": True} for i in range(parts)),
            {"name": "plan", "mountPath": PLAN_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "cache", "mountPath": CACHE_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *({"name": f"host-{i}", "mountPath": path, "readOnly": True}
              for i, path in enumerate(settings.get("host_paths") or [])),
        ],
    }
    if settings.get("credentials_secret"):
        container["envFrom"] = [{"secretRef": {"name": settings["credentials_secret"]}}]
    volumes: list[dict[str, Any]] = [
        *({"name": f"code-{i}", "configMap": {"name": f"{name}-code-{i}"}} for i in range(parts)),
        {"name": "plan", "configMap": {"name": f"{name}-plan"}},
        {"name": "work", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", **({"sizeLimit": settings["shm_size"]}
                                                            if settings.get("shm_size") else {})}},
        *({"name": f"host-{i}", "hostPath": {"path": path, "type": "Directory"}}
          for i, path in enumerate(settings.get("host_paths") or [])),
    ]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": f"{name}-{rank}",
        "subdomain": name,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "containers": [container],
        "volumes": volumes,
    }
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if settings.get("service_account"):
        spec["serviceAccountName"] = settings["service_account"]
    if settings.get("node_selector"):
        spec["nodeSelector"] = dict(v.split("=", 1) for v in settings["node_selector"])
    if settings.get("tolerations"):
        spec["tolerations"] = _tolerations(settings["tolerations"])
    meta = {"labels": labels(run_id, name, rank), "annotations": {RUN_ANNOTATION: run_id, "torchyard/experiment": experiment}}
    if settings.get("queue"):
        meta["labels"][QUEUE_LABEL] = settings["queue"]
    return {"metadata": meta, "spec": spec}


#: env names the operators set themselves (torchyard's own per-Job values are left out of their pods)
_OPERATOR_SET = ("TORCHYARD_NODE_RANK", MASTER_ADDR_ENV, "PET_NODE_RANK", "PET_NNODES", "PET_NPROC_PER_NODE", "PET_MASTER_ADDR",
                 "PET_MASTER_PORT")


def _operator_pod(pod: dict[str, Any], container_name: str) -> dict[str, Any]:
    """A pod template for an operator's replicas: no per-rank label, hostname or rank variables."""
    tmpl: dict[str, Any] = json.loads(json.dumps(pod))
    tmpl["metadata"]["labels"].pop(RANK_LABEL, None)
    tmpl["spec"].pop("hostname", None)
    tmpl["spec"].pop("subdomain", None)
    container = tmpl["spec"]["containers"][0]
    container["name"] = container_name
    container["env"] = [e for e in container["env"] if e["name"] not in _OPERATOR_SET]
    return tmpl


def _pytorchjob(settings: dict[str, Any], name: str, ns: str, run_id: str, owner: dict[str, Any],
                pods: list[dict[str, Any]], nproc: int) -> dict[str, Any]:
    """Training Operator v1 PyTorchJob: one Master replica (node 0) and node_count-1 Workers. The
    operator sets MASTER_ADDR/MASTER_PORT and PET_NODE_RANK/PET_NNODES/PET_NPROC_PER_NODE in each
    pod (``nprocPerNode`` set); torchyard's launcher plan reads them (its ``fill``)."""
    tmpl = _operator_pod(pods[0], "pytorch")  # the operator finds the container by this name
    specs = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": tmpl}}
    if len(pods) > 1:
        specs["Worker"] = {"replicas": len(pods) - 1, "restartPolicy": "Never", "template": json.loads(json.dumps(tmpl))}
    run_policy: dict[str, Any] = {"cleanPodPolicy": "All", "backoffLimit": 0}
    if settings.get("queue"):
        run_policy["suspend"] = True
    meta = _meta(name, ns, run_id, name, owner)
    if settings.get("queue"):
        meta["labels"][QUEUE_LABEL] = settings["queue"]
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": meta,
            "spec": {"pytorchReplicaSpecs": specs, "runPolicy": run_policy, "nprocPerNode": str(nproc)}}


def _trainjob(settings: dict[str, Any], name: str, ns: str, run_id: str, owner: dict[str, Any],
              pods: list[dict[str, Any]], node_count: int, nproc: int) -> dict[str, Any]:
    """Kubeflow Trainer v2 TrainJob on the ``torch-distributed`` ClusterTrainingRuntime (its
    replicated job and container are both called ``node``; the runtime sets the PET_* names). The
    code and plan volumes come in as a runtime patch of that pod."""
    tmpl = _operator_pod(pods[0], CONTAINER)
    container = tmpl["spec"]["containers"][0]
    trainer: dict[str, Any] = {
        "image": container["image"],
        "command": container["command"],
        "numNodes": node_count,
        "numProcPerNode": nproc,
        "env": container["env"],
        "resourcesPerNode": container["resources"],
    }
    pod_patch: dict[str, Any] = {"volumes": tmpl["spec"]["volumes"],
                                 "containers": [{"name": CONTAINER, "volumeMounts": container["volumeMounts"]}]}
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        if key in tmpl["spec"]:
            pod_patch[key] = tmpl["spec"][key]
    patch = {"manager": "torchyard.dev/submit", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": "node", "template": {"spec": {"template": {"metadata": {"labels": tmpl["metadata"]["labels"]},
                                                            "spec": pod_patch}}}}]}}}}
    spec: dict[str, Any] = {"runtimeRef": {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                           "kind": "ClusterTrainingRuntime"}, "trainer": trainer, "runtimePatches": [patch]}
    if settings.get("queue"):
        spec["suspend"] = True
    meta = _meta(name, ns, run_id, name, owner)
    if settings.get("queue"):
        meta["labels"][QUEUE_LABEL] = settings["queue"]
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": meta, "spec": spec}


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML (what ``--dry-run`` prints)."""
    import yaml  # noqa: PLC0415

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        block = "\n" in value and not any(line != line.rstrip() for line in value.splitlines())
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if block else None)

    Dumper.add_representer(str, text)
    return "---\n".join(yaml.dump(o, Dumper=Dumper, sort_keys=False, default_flow_style=False) for o in objects)
