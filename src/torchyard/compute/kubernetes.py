"""Kubernetes compute target: per run a headless Service, the code as ConfigMaps and one batch/v1 Job
per node rank (flavor ``jobs``); Kubeflow TrainJob / PyTorchJob are rendered for clusters with
those operators (``flavor=``).

* ``dryrun()`` renders the objects (pure, :mod:`torchyard.compute.k8s_manifests`; ``--dry-run``
  prints them as YAML).
* ``schedule()`` packs the run's code, creates the Service, then the ConfigMaps and Jobs with an
  owner reference to it, and compares every object the API server returns with the one sent (an
  older server prunes fields it does not know without a word: that fails the submit, naming them).
* :class:`KubernetesHandle` reads the run's pods and Jobs (every 0.5 s): unscheduled pods → Queued
  with the scheduler's message, a failed pod → the run fails (the other Jobs are deleted at once),
  every Job complete → done; logs, metric journals and node reports come back as mirror frames on
  each pod's log stream (``compute/k8s_pod.py``), read in one thread per pod.
* ``cancel()``/``release()`` delete the Service with background propagation (the garbage collector
  removes what it owns) and the Jobs themselves.

The ``kubernetes`` Python client is imported only when a job is scheduled (``pip install
'torchyard[kubernetes]'``).
"""

from __future__ import annotations

import io
import json
import os
import queue
import tarfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from torchyard.compute import k8s_manifests as m
from torchyard.compute.base import (
    ComputeTarget,
    Feature,
    Handle,
    LaunchPlan,
    NodeLaunch,
    Option,
    PreparedJob,
    common_plan,
)
from torchyard.compute.mirror import Changes, Mirror
from torchyard.errors import ComputeError, SpecError
from torchyard.launch.plan import NodeFill
from torchyard.paths import NOT_CODE, RunPaths
from torchyard.status import RunStatus

POLL_SECONDS = 0.5
#: how long the handle waits for a finished pod's log stream to deliver its last frames
DRAIN_SECONDS = 15.0
#: after cancel: how long to wait for the pods to go before calling the job ended anyway
CANCEL_WAIT = 30.0
REQUEST_TIMEOUT = 15
#: how long the API server may stay unreachable while a run goes before the run is failed
UNREACHABLE_SECONDS = 120.0
INSTALL_HINT = "pip install 'torchyard[kubernetes]' (the kubernetes Python client)"
RBAC_HINT = ("the user or service account needs create/get/list/watch/delete on services, configmaps and "
             "jobs (batch) and get/list/watch on pods and pods/log in the namespace")


class KubernetesCompute(ComputeTarget):
    """A Kubernetes cluster reached with a kubeconfig (or from inside a pod).

    ``image``: what the pods run; it needs Python with torch and torchyard (``pip install torchyard``)
    — the job's own ``pip_packages`` are installed in the pod by the node bootstrap.
    ``kubeconfig``/``context``: which cluster and user (default: ``$KUBECONFIG``, ``~/.kube/config``,
    else the in-cluster service account). ``namespace``: where the run's objects go.
    ``service_account``: the pods' service account. ``queue``: a Kueue LocalQueue (the Jobs carry
    ``kueue.x-k8s.io/queue-name`` and are created suspended; Kueue admits them).
    ``node_selector`` (``KEY=VALUE``) and ``tolerations`` (``KEY[=VALUE]:EFFECT``): where pods may go.
    ``flavor``: ``jobs`` (batch/v1 Jobs, any cluster), ``trainjob`` (Kubeflow Trainer v2) or
    ``pytorchjob`` (Kubeflow Training Operator v1). ``credentials_secret``: a Secret whose keys become
    the pods' environment (e.g. ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for S3 inputs).

    Clusters without a pod network (or pod DNS), such as a lone kubelet: ``host_network`` runs the pods
    on their nodes' network (node 0's address is its node's IP: node 0 reads it from the downward API,
    and the other nodes' Jobs are created once node 0's pod is placed, with that IP; the rendezvous
    port is derived from the run). ``host_paths``: node folders mounted read-only at the same path in
    every pod (e.g. a Python install the image does not carry). ``log_files``: read the pods' logs from
    the kubelet's CRI log files under this folder (``/var/log/pods``) instead of the pod-logs API — only
    where torchyard runs on the (single) node itself, e.g. when the API server cannot reach the kubelet.
    """

    kind = "kubernetes"
    features = Feature.MULTI_NODE | Feature.GPU | Feature.QUEUEING | Feature.ENV_ON_NODE
    options = (
        Option(name="image", type=str, help="the container image the pods run (Python with torch and torchyard)",
               check=lambda v: None if v and not any(c.isspace() for c in v) else "expected an image reference such as registry/torchyard:1.0"),
        Option(name="kubeconfig", type=str, help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
               check=lambda v: None if v else "expected a file path"),
        Option(name="context", type=str, help="the kubeconfig context (default: its current-context)"),
        Option(name="namespace", type=str, default="default", help="the namespace the run's objects go to",
               check=m.check_dns_name),
        Option(name="service_account", type=str, help="the pods' service account (default: the namespace's default)",
               check=m.check_dns_name),
        Option(name="queue", type=str, help="a Kueue LocalQueue: Jobs carry its label and are created suspended",
               check=m.check_dns_name),
        Option(name="node_selector", type=list, example="pool=gpu", help="KEY=VALUE node labels the pods need (repeatable)",
               check=m.check_node_selector),
        Option(name="tolerations", type=list, flag="--toleration", example="gpu=true:NoSchedule",
               help="KEY[=VALUE]:EFFECT taints the pods tolerate (repeatable)", check=m.check_tolerations),
        Option(name="flavor", type=str, default="jobs", choices=m.FLAVORS,
               help="jobs (batch/v1 Jobs + headless Service), trainjob (Kubeflow Trainer v2) or pytorchjob (Training Operator v1)"),
        Option(name="cpus_per_process", type=float, default=1.0, help="CPUs requested per rank",
               check=lambda v: None if v > 0 else "expected a positive number of CPUs"),
        Option(name="memory", type=str, help="memory per pod (request and limit), e.g. 8Gi", check=m.check_quantity),
        Option(name="shm_size", type=str, help="size limit of the pods' /dev/shm (a memory emptyDir), e.g. 2Gi",
               check=m.check_quantity),
        Option(name="credentials_secret", type=str, help="a Secret whose keys become the pods' environment (S3 keys)",
               check=m.check_dns_name),
        # ---- clusters without a pod network, e.g. one kubelet (the tests' real-node tier) ----
        Option(name="host_network", type=bool, default=False,
               help="run the pods on their nodes' network (no pod network or pod DNS needed)"),
        Option(name="host_paths", type=list, flag="--host-path", example="/opt/python",
               help="a node folder mounted read-only at the same path in every pod (repeatable)",
               check=m.check_host_paths),
        Option(name="log_files", type=str, example="/var/log/pods",
               help="read pod logs from the kubelet's CRI log files in this folder (torchyard on the node itself) "
                    "instead of the pod-logs API",
               check=lambda v: None if v.startswith("/") else "expected an absolute folder path such as /var/log/pods"),
    )

    image: str | None
    kubeconfig: str | None
    context: str | None
    namespace: str
    service_account: str | None
    queue: str | None
    node_selector: list[str]
    tolerations: list[str]
    flavor: str
    cpus_per_process: float
    memory: str | None
    shm_size: str | None
    credentials_secret: str | None
    host_network: bool
    host_paths: list[str]
    log_files: str | None

    def __init__(self, image: str | None = None, kubeconfig: str | None = None, context: str | None = None,
                 namespace: str = "default", service_account: str | None = None, queue: str | None = None,
                 node_selector: list[str] | dict[str, str] | None = None, tolerations: list[str] | None = None,
                 flavor: str = "jobs", cpus_per_process: float = 1.0, memory: str | None = None,
                 shm_size: str | None = None, credentials_secret: str | None = None, host_network: bool = False,
                 host_paths: list[str] | None = None, log_files: str | None = None, *, name: str | None = None) -> None:
        if isinstance(node_selector, dict):
            node_selector = [f"{k}={v}" for k, v in node_selector.items()]
        super().__init__(name, image=image, kubeconfig=kubeconfig, context=context, namespace=namespace,
                         service_account=service_account, queue=queue, node_selector=node_selector,
                         tolerations=list(tolerations) if isinstance(tolerations, tuple) else tolerations,
                         flavor=flavor, cpus_per_process=cpus_per_process, memory=memory, shm_size=shm_size,
                         credentials_secret=credentials_secret, host_network=host_network,
                         host_paths=list(host_paths) if isinstance(host_paths, tuple) else host_paths, log_files=log_files)
        if self.kubeconfig:
            self.kubeconfig = os.path.abspath(os.path.expanduser(self.kubeconfig))

    def check(self, spec: Any) -> None:
        super().check(spec)
        if not self.image:
            raise SpecError("image", f"compute target {self.name!r} ({self.kind}) needs image=: the container image its "
                                     "pods run (Python with torch and torchyard)")
        if spec.distribution.backend == "mpi":  # also caught by the features; say why
            raise SpecError("distributed_backend", "the mpi backend needs ssh between nodes; Kubernetes pods have none here")

    def node_cache(self) -> str | None:
        return m.CACHE_DIR

    # ---- dry run: pure -----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The target's settings (its options' values), as stored when it is attached."""
        return self.to_config()

    def dryrun(self, job: PreparedJob) -> KubernetesLaunchPlan:
        dist = job.spec.distribution
        name = m.object_name(job.run_id)
        master = f"{name}-0.{name}"
        fill = {  # where each pod finds its node rank (and, under an operator, the rendezvous)
            "jobs": NodeFill(node_rank="TORCHYARD_NODE_RANK",
                             master_addr=m.MASTER_ADDR_ENV if self.host_network else None),
            "pytorchjob": NodeFill(node_rank="PET_NODE_RANK", master_addr="MASTER_ADDR", master_port="MASTER_PORT"),
            "trainjob": NodeFill(node_rank="PET_NODE_RANK", master_addr="PET_MASTER_ADDR", master_port="PET_MASTER_PORT"),
        }[self.flavor]
        if self.host_network:
            master = m.MASTER_ADDR_PENDING
        plan = common_plan(job, master_addr=master, master_port=m.master_port(self.settings(), name), workdir=m.WORK_DIR,
                           fill=fill)
        objects = m.render(self.settings(), run_id=job.run_id, experiment=job.experiment, plan=plan.to_dict(),
                           node_count=dist.node_count, nproc=dist.process_count_per_node, use_gpu=job.spec.use_gpu,
                           code_parts=1, owner_uid=None, max_run_seconds=job.spec.max_run_duration_seconds)
        nodes = [NodeLaunch(node_rank=k, plan=plan.replace(node_rank=k, fill=NodeFill()),
                            argv=["<pod>", f"{name}-{k}", "python", "-m", "torchyard.compute.k8s_pod"])
                 for k in range(dist.node_count)]
        return KubernetesLaunchPlan(
            target=self.name, nodes=nodes, files={"kubernetes objects": m.to_yaml(objects)}, name=name,
            run_id=job.run_id, experiment=job.experiment, workdir=job.workdir, common=plan.to_dict(),
            node_count=dist.node_count, nproc=dist.process_count_per_node, use_gpu=job.spec.use_gpu,
            max_run_seconds=job.spec.max_run_duration_seconds,
        )  # fmt: skip

    # ---- schedule ---------------------------------------------------------------------------------

    def api(self) -> Any:
        """An ApiClient for this target's cluster (ComputeError naming the setting when it cannot)."""
        try:
            import kubernetes  # noqa: PLC0415
        except ImportError:
            raise ComputeError(f"compute target {self.name!r}: the kubernetes client is not installed; {INSTALL_HINT}") from None
        from kubernetes import config  # noqa: PLC0415

        path = self.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            if self.kubeconfig or os.path.exists(path.split(os.pathsep)[0]):
                if not os.path.exists(path.split(os.pathsep)[0]):
                    raise ComputeError(f"kubeconfig: no file {path!r}")
                client = config.new_client_from_config(config_file=path, context=self.context)
            else:
                if self.context:
                    raise ComputeError(f"context: {self.context!r} given but there is no kubeconfig ({path} does not exist)")
                config.load_incluster_config()
                client = kubernetes.client.ApiClient()
        except config.ConfigException as err:
            what = "context" if self.context and "context" in str(err).lower() else "kubeconfig"
            raise ComputeError(f"{what}: cannot use the kubeconfig {path!r}: {err}") from None
        client.configuration.retries = 1
        return client

    def schedule(self, plan: LaunchPlan) -> KubernetesHandle:
        if not isinstance(plan, KubernetesLaunchPlan):
            raise ComputeError(f"compute target {self.name!r} was given a plan it did not prepare")
        if self.flavor != "jobs":
            raise ComputeError(f"flavor: {self.flavor!r} is rendered (--dry-run) and schema-checked only: torchyard does not "
                               "follow a Kubeflow job on a cluster yet, and no operator ran one in its tests; use flavor='jobs'")
        code = pack_code(plan.workdir)
        parts = m.chunks(code)
        client = self.api()
        session = Session(client, self.namespace, self._where())
        service, *rest = m.render(self.settings(), run_id=plan.run_id, experiment=plan.experiment, plan=plan.common,
                                  node_count=plan.node_count, nproc=plan.nproc, use_gpu=plan.use_gpu,
                                  code_parts=len(parts), owner_uid=None, max_run_seconds=plan.max_run_seconds)
        created = session.create(service)
        uid = created["metadata"]["uid"]
        later: dict[str, Any] = {}
        try:
            objects = m.render(self.settings(), run_id=plan.run_id, experiment=plan.experiment, plan=plan.common,
                               node_count=plan.node_count, nproc=plan.nproc, use_gpu=plan.use_gpu, code_parts=parts,
                               owner_uid=uid, max_run_seconds=plan.max_run_seconds)[1:]
            if self.host_network and plan.node_count > 1:
                # the other nodes need node 0's node IP: their Jobs are created once its pod is placed
                later = {"parts": parts, "uid": uid}
                objects = [o for o in objects if o["kind"] != "Job" or o["metadata"]["name"] == f"{plan.name}-0"]
            for obj in objects:
                session.create(obj)
        except BaseException:
            session.delete_run(plan.name)
            raise
        handle = KubernetesHandle(self, session, plan, uid)
        handle.later = later
        handle.code_parts, handle.code_bytes = len(parts), len(code)
        return handle

    def _where(self) -> str:
        return f"compute target {self.name!r} (namespace {self.namespace!r}" + (
            f", context {self.context!r})" if self.context else ")")


@dataclass(frozen=True, kw_only=True)
class KubernetesLaunchPlan(LaunchPlan):
    name: str
    run_id: str
    experiment: str
    workdir: str
    common: dict[str, Any]
    node_count: int
    nproc: int
    use_gpu: bool
    max_run_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def pack_code(workdir: str) -> bytes:
    """The run folder's code (everything but logs, outputs, inputs and torchyard's own files) as a
    zlib-compressed tar; the pod's first step unpacks it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in sorted(os.listdir(workdir)):
            if entry in NOT_CODE:
                continue
            tar.add(os.path.join(workdir, entry), arcname=entry)
    return zlib.compress(buf.getvalue(), 6)


# ---- the API server -------------------------------------------------------------------------------


def round_trip_diff(sent: Any, back: Any, path: str = "") -> list[str]:
    """Paths of ``sent`` that the server's ``back`` lacks or changed (it may add defaults)."""
    if isinstance(sent, dict):
        if not isinstance(back, dict):
            return [path or "."]
        out = []
        for key, value in sent.items():
            sub = f"{path}.{key}" if path else key
            if key not in back:
                out.append(sub)
            else:
                out += round_trip_diff(value, back[key], sub)
        return out
    if isinstance(sent, list):
        if not isinstance(back, list) or len(back) != len(sent):
            return [path]
        out = []
        for i, (a, b) in enumerate(zip(sent, back, strict=True)):
            out += round_trip_diff(a, b, f"{path}[{i}]")
        return out
    return [] if sent == back else [path]


#: (group, version, plural) of the custom resources the other flavors create
CUSTOM = {"PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"), "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs")}


class Session:
    """The calls the target makes, with the API server's errors turned into one clear line."""

    def __init__(self, client: Any, namespace: str, where: str) -> None:
        from kubernetes import client as k  # noqa: PLC0415

        self.client = client
        self.ns = namespace
        self.where = where
        self.core = k.CoreV1Api(client)
        self.batch = k.BatchV1Api(client)
        self.custom = k.CustomObjectsApi(client)
        self.host = client.configuration.host

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            resp = fn(*args, _preload_content=False, **kwargs)
            return json.loads(resp.data or b"{}")
        except ApiException as err:
            raise self.explain(what, err) from None
        except Exception as err:  # urllib3's MaxRetryError, NewConnectionError, SSL errors, timeouts
            if type(err).__module__.startswith(("urllib3", "ssl", "socket")) or isinstance(err, OSError):
                cause = getattr(err, "reason", None) or err
                raise ComputeError(f"{self.where}: cannot reach the Kubernetes API server at {self.host}: {cause}") from None
            raise

    def explain(self, what: str, err: Any) -> ComputeError:
        try:
            body = json.loads(err.body or "{}")
        except (TypeError, ValueError):
            body = {}
        message = body.get("message") or err.reason or ""
        if err.status == 403:
            return ComputeError(f"{self.where}: {what} forbidden by the API server (RBAC): {message}; {RBAC_HINT}")
        if err.status == 401:
            return ComputeError(f"{self.where}: the API server at {self.host} did not accept the credentials "
                                f"(401 Unauthorized): check the kubeconfig's user")
        if err.status == 404 and "namespaces" in message:
            return ComputeError(f"namespace: {message} (set namespace= to an existing one)")
        return ComputeError(f"{self.where}: {what}: the API server answered {err.status}: {message}")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``; the server's copy. ComputeError when the server dropped or changed a field."""
        kind = obj["kind"]
        what = f"creating {kind} {obj['metadata']['name']}"
        if kind == "Service":
            back = self._call(what, self.core.create_namespaced_service, self.ns, obj)
        elif kind == "ConfigMap":
            back = self._call(what, self.core.create_namespaced_config_map, self.ns, obj)
        elif kind == "Job":
            back = self._call(what, self.batch.create_namespaced_job, self.ns, obj)
        elif kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            back = self._call(what, self.custom.create_namespaced_custom_object, group, version, self.ns, plural, obj)
        else:
            raise ComputeError(f"cannot create a {kind}")
        lost = round_trip_diff(obj, back)
        if lost:
            if kind in ("Service", "Job", "ConfigMap"):  # never leave it running without what was asked
                try:
                    self.delete(kind, obj["metadata"]["name"])
                except ComputeError:
                    pass
            hint = ""
            if any(p.endswith("spec.suspend") for p in lost):
                hint = (" (Job suspend needs Kubernetes >= 1.21, and Kueue to admit it: the queue= option "
                        "cannot work on this cluster)")
            raise ComputeError(f"{self.where}: the API server dropped or changed {', '.join(lost[:5])} of {kind} "
                               f"{obj['metadata']['name']}{hint}; an older Kubernetes prunes fields it does not know")
        return back

    def list(self, kind: str, selector: str) -> list[dict[str, Any]]:
        fn = self.core.list_namespaced_pod if kind == "Pod" else self.batch.list_namespaced_job
        items: list[dict[str, Any]] = self._call(f"listing {kind}s", fn, self.ns, label_selector=selector).get("items", [])
        return items

    def delete(self, kind: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        fn = {"Service": self.core.delete_namespaced_service, "Job": self.batch.delete_namespaced_job,
              "ConfigMap": self.core.delete_namespaced_config_map}[kind]
        try:
            fn(name, self.ns, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise self.explain(f"deleting {kind} {name}", err) from None

    def delete_run(self, name: str, node_count: int = 0, only_jobs: bool = False) -> None:
        """The Service (its dependents go with it) and the Jobs by name (pods go sooner). Never raises."""
        for kind, obj in ([] if only_jobs else [("Service", name)]) + [("Job", f"{name}-{k}") for k in range(node_count)]:
            try:
                self.delete(kind, obj)
            except Exception as err:  # noqa: BLE001
                print(f"torchyard: deleting {kind} {obj}: {err}", flush=True)


# ---- following a run -----------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the pods and Jobs of a run say, read by :func:`judge`."""

    queued: str | None = None       # why it waits (None: every pod is placed)
    done: bool = False              # every node ended
    exit_code: int | None = None
    failed_rank: int | None = None  # the first node whose pod failed
    message: str | None = None      # a failure Kubernetes itself reports (no node report behind it)
    nodes: dict[int, str] = field(default_factory=dict)  # node rank -> the Kubernetes node it runs on
    pods: dict[int, str] = field(default_factory=dict)   # node rank -> pod name, of pods that started
    pod_phase: dict[int, str] = field(default_factory=dict)


def _rank(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj["metadata"]["labels"][m.RANK_LABEL])
    except (KeyError, ValueError, TypeError):
        return None


def judge(node_count: int, jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> Verdict:
    """The run's state from its Jobs and pods (pure; the state machine the unit tests walk)."""
    v = Verdict()
    by_rank: dict[int, dict[str, Any]] = {}
    for item in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        r = _rank(item)
        if r is not None and not item["metadata"].get("deletionTimestamp"):
            by_rank[r] = item  # the newest live pod of each rank
    job_by_rank = {r: j for j in jobs if (r := _rank(j)) is not None}
    waiting: list[str] = []
    ended = 0
    for k in range(node_count):
        job = job_by_rank.get(k)
        pod = by_rank.get(k)
        conds = {c.get("type"): c for c in ((job or {}).get("status") or {}).get("conditions") or []
                 if c.get("status") == "True"}
        if job is not None and (job.get("spec") or {}).get("suspend"):
            queue = job["metadata"].get("labels", {}).get(m.QUEUE_LABEL)
            waiting.append(f"Kueue: Job {job['metadata']['name']} is suspended until queue {queue!r} admits it"
                           if queue else f"Job {job['metadata']['name']} is suspended")
            continue
        if pod is None:
            if job is not None and "Failed" in conds:
                c = conds["Failed"]
                v.failed_rank = k if v.failed_rank is None else v.failed_rank
                v.message = v.message or f"Job {job['metadata']['name']} failed: {c.get('reason')}: {c.get('message')}"
                v.exit_code = v.exit_code or 1
                ended += 1
            elif "Complete" in conds:
                ended += 1
            else:
                waiting.append(f"node {k}: waiting for the Job controller to create its pod")
            continue
        status = pod.get("status") or {}
        phase = status.get("phase") or "Pending"
        v.pod_phase[k] = phase
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            v.nodes[k] = node
        if phase in ("Running", "Succeeded", "Failed"):
            v.pods[k] = pod["metadata"]["name"]
        if phase == "Pending" and not node:
            cond = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
            if cond and cond.get("status") == "False":
                waiting.append(f"Kubernetes: pod {pod['metadata']['name']} is {cond.get('reason') or 'unschedulable'}: "
                               f"{(cond.get('message') or '').strip()}")
            else:
                waiting.append(f"Kubernetes: pod {pod['metadata']['name']} waits for the scheduler")
            continue
        if phase == "Pending":
            waiting_state = _container_state(status).get("waiting") or {}
            if waiting_state.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                               "CreateContainerConfigError", "CreateContainerError"):
                v.failed_rank = k if v.failed_rank is None else v.failed_rank
                v.message = v.message or (f"node {k}: pod {pod['metadata']['name']} cannot start: "
                                          f"{waiting_state.get('reason')}: {waiting_state.get('message') or ''}".rstrip(": "))
                v.exit_code = v.exit_code or 1
            continue
        if phase in ("Succeeded", "Failed"):
            ended += 1
            term = _container_state(status).get("terminated") or {}
            code = int(term.get("exitCode", 0 if phase == "Succeeded" else 1))
            if phase == "Failed" and v.failed_rank is None:
                v.failed_rank = k
                v.exit_code = code or 1
                if term.get("reason") in ("OOMKilled", "DeadlineExceeded", "Evicted") or status.get("reason") in (
                        "Evicted", "DeadlineExceeded"):
                    v.message = (f"node {k}: pod {pod['metadata']['name']} ended "
                                 f"{term.get('reason') or status.get('reason')}: {status.get('message') or term.get('message') or ''}").rstrip(": ")
    if waiting and v.failed_rank is None:
        v.queued = waiting[0] + (f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else "")
    v.done = ended == node_count
    if v.done and v.exit_code is None:
        v.exit_code = 0
    return v


def _container_state(status: dict[str, Any]) -> dict[str, Any]:
    for c in status.get("containerStatuses") or []:
        if c.get("name") == m.CONTAINER:
            return c.get("state") or {}
    return {}


def new_only(have: dict[str, int], changes: Changes) -> Changes:
    """``changes`` without what this side already has (``have``: the mirror's offsets for the node):
    a stream read again from its start sends old frames again, and the files must only grow."""
    out: Changes = {}
    for rel, (offset, data) in changes.items():
        if offset >= 0 and rel in have:
            known = have[rel]
            if offset + len(data) <= known:
                continue
            if offset < known:
                data, offset = data[known - offset:], known
        out[rel] = [offset, data]
    return out


class LogStream:
    """One pod's log stream, read in a thread: frames go to the handle's queue, other lines too."""

    def __init__(self, session: Session, pod: str, rank: int, out: queue.Queue[tuple[int, Any]]) -> None:
        self.session = session
        self.pod = pod
        self.rank = rank
        self.out = out
        self.end: int | None = None   # the pod's own exit code, once its END line came
        self.closed = threading.Event()  # the stream ended (EOF or error)
        self.plain_seen = 0            # plain lines already passed on (a re-read skips them)
        self.plain = 0                 # plain lines read by this stream
        self.pod_ended = False         # set by the handle once the pod is Succeeded/Failed
        self.stop = False
        self.resp: Any = None
        self.thread = threading.Thread(target=self._run, name=f"k8s-log-{pod}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.resp = self.session.core.read_namespaced_pod_log(
                self.pod, self.session.ns, container=m.CONTAINER, follow=True, _preload_content=False)
            buf = b""
            for chunk in self.resp.stream(64 * 1024):
                if self.stop:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    self._line(raw.decode("utf-8", "replace"))
        except Exception as err:  # noqa: BLE001  (a broken stream is read again by the handle)
            if not self.stop:
                self.out.put((self.rank, f"torchyard: the log stream of pod {self.pod} broke: {err}"))
        finally:
            self.closed.set()

    def _line(self, line: str) -> None:
        """One line of the pod's output: a mirror frame, the END line, or a plain line."""
        from torchyard.compute.k8s_pod import END, FRAME, decode  # noqa: PLC0415

        if line.startswith(FRAME + " "):
            self.out.put((self.rank, decode(line[len(FRAME) + 1:])))
        elif line.startswith(END + " "):
            self.end = int(line.split()[1])
        else:
            self.plain += 1
            if self.plain > self.plain_seen:
                self.plain_seen = self.plain
                self.out.put((self.rank, line))

    def close(self) -> None:
        self.stop = True
        try:
            if self.resp is not None:
                self.resp.release_conn()
                self.resp.close()
        except Exception:  # noqa: BLE001,S110
            pass


class CriFileStream(LogStream):
    """One pod's log read from the kubelet's CRI log file (``log_files``: torchyard runs on the node)
    instead of the pod-logs API: ``<log_files>/<namespace>_<pod>_<uid>/<container>/<restarts>.log``,
    lines ``<time> <stdout|stderr> <P|F> <text>`` (``P``: a long line's part, joined up to its ``F``).
    Tailed until the END line, or until the pod ended and the file stopped growing. A rotated file
    (the kubelet's ``--container-log-max-size``) is not followed."""

    def __init__(self, session: Session, pod: str, rank: int, out: queue.Queue[tuple[int, Any]], folder: str) -> None:
        self.folder = folder
        super().__init__(session, pod, rank, out)

    def _find(self) -> str | None:
        import glob  # noqa: PLC0415

        found = [p for p in glob.glob(os.path.join(self.folder, f"{self.session.ns}_{self.pod}_*", m.CONTAINER, "*.log"))
                 if os.path.basename(p)[:-4].isdigit()]  # <restart count>.log; rotated ones end otherwise
        return max(found, key=lambda p: int(os.path.basename(p)[:-4])) if found else None

    def _run(self) -> None:
        try:
            path, since = self._find(), time.time()
            while path is None:
                if self.stop or (self.pod_ended and time.time() - since > DRAIN_SECONDS):
                    if not self.stop:
                        self.out.put((self.rank, f"torchyard: no CRI log file of pod {self.pod} under {self.folder}"))
                    return
                time.sleep(0.1)
                path = self._find()
            parts: dict[bytes, bytes] = {}
            buf = b""
            idle_since: float | None = None
            with open(path, "rb") as fh:
                while not self.stop:
                    chunk = fh.read(256 * 1024)
                    if not chunk:
                        if self.end is not None:
                            break
                        if self.pod_ended:
                            idle_since = idle_since or time.time()
                            if time.time() - idle_since > 2.0:
                                break
                        time.sleep(0.05)
                        continue
                    idle_since = None
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        fields = raw.split(b" ", 3)
                        if len(fields) < 3:
                            continue
                        stream, tag = fields[1], fields[2]
                        parts[stream] = parts.get(stream, b"") + (fields[3] if len(fields) > 3 else b"")
                        if tag == b"P":
                            continue
                        self._line(parts.pop(stream).decode("utf-8", "replace"))
        except Exception as err:  # noqa: BLE001  (a broken stream is read again by the handle)
            if not self.stop:
                self.out.put((self.rank, f"torchyard: reading the CRI log of pod {self.pod} broke: {err}"))
        finally:
            self.closed.set()


class KubernetesHandle(Handle):
    """A run's objects on the cluster, followed by listing its pods and Jobs every 0.5 s."""

    def __init__(self, target: KubernetesCompute, session: Session, plan: KubernetesLaunchPlan, uid: str) -> None:
        self.target = target
        self.session = session
        self.name = plan.name
        self.job_id = f"{target.namespace}/{plan.name}"
        self.uid = uid
        self.node_count = plan.node_count
        self.workdir = plan.workdir
        self.selector = m.selector(plan.run_id, plan.name)
        self.mirror = Mirror(plan.workdir, plan.node_count)
        self.frames: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.streams: dict[int, LogStream] = {}
        self.verdict = Verdict(queued="submitted")
        self.rc: int | None = None
        self.failure: tuple[RunStatus, str] | None = None
        self.canceled = False
        self.canceled_at = 0.0
        self.deleted_jobs = False
        self.next_poll = 0.0
        self.ended_at: float | None = None
        self.released = False
        self.gone_checks = 0
        self.timings: dict[str, float] = {"created": time.time()}
        self.code_parts = 0
        self.code_bytes = 0
        self.unreachable_since: float | None = None
        self.plan = plan
        #: host_network with several nodes: what creating the other nodes' Jobs needs (empty: nothing left)
        self.later: dict[str, Any] = {}

    def _create_later(self, pods: list[dict[str, Any]]) -> None:
        """host_network: once node 0's pod has its node's IP, create the other nodes' Jobs with it."""
        pod0 = next((p for p in pods if _rank(p) == 0 and not p["metadata"].get("deletionTimestamp")), None)
        status = (pod0 or {}).get("status") or {}
        ip = status.get("hostIP")
        if not ip or status.get("phase") == "Failed":  # a failed node 0 fails the run: the others are not needed
            return
        later, self.later = self.later, {}
        plan = self.plan
        objects = m.render(self.target.settings(), run_id=plan.run_id, experiment=plan.experiment, plan=plan.common,
                           node_count=plan.node_count, nproc=plan.nproc, use_gpu=plan.use_gpu, code_parts=later["parts"],
                           owner_uid=later["uid"], max_run_seconds=plan.max_run_seconds, master_ip=ip)
        try:
            for obj in objects:
                if obj["kind"] == "Job" and obj["metadata"]["name"] != f"{self.name}-0":
                    self.session.create(obj)
        except ComputeError as err:
            self.rc = 1
            self.failure = (RunStatus.FAILED, f"creating the other nodes' Jobs (node 0's node IP {ip}): {err}")
            self.session.delete_run(self.name, self.node_count)
        self.timings["all_jobs_created"] = time.time()

    # ---- reading the cluster ---------------------------------------------------------------------

    def _refresh(self) -> None:
        now = time.time()
        if self.rc is not None or now < self.next_poll:
            return
        self.next_poll = now + POLL_SECONDS
        try:
            jobs = self.session.list("Job", self.selector)
            pods = self.session.list("Pod", self.selector)
        except ComputeError as err:  # the API server briefly unreachable: ask again next time
            print(f"torchyard: {err}", flush=True)
            self.unreachable_since = self.unreachable_since or now
            if now - self.unreachable_since > UNREACHABLE_SECONDS:
                self.rc = 1
                self.failure = (RunStatus.FAILED, f"lost the Kubernetes API server for {now - self.unreachable_since:.0f} s "
                                                  f"(the run's objects {self.job_id} may still exist): {err}")
            return
        self.unreachable_since = None
        if self.later and not self.canceled:
            self._create_later(pods)
            if self.rc is not None:
                return
        v = self.verdict = judge(self.node_count, jobs, pods)
        for k, pod in v.pods.items():
            stream = self.streams.get(k)
            if stream is None or (stream.pod != pod) or (stream.closed.is_set() and stream.end is None
                                                          and v.pod_phase.get(k) == "Running"):
                seen = stream.plain_seen if stream is not None and stream.pod == pod else 0
                if self.target.log_files:
                    self.streams[k] = CriFileStream(self.session, pod, k, self.frames, self.target.log_files)
                else:
                    self.streams[k] = LogStream(self.session, pod, k, self.frames)
                self.streams[k].plain_seen = seen
            if v.pod_phase.get(k) in ("Succeeded", "Failed"):
                self.streams[k].pod_ended = True
        if v.queued is None and "running" not in self.timings:
            self.timings["running"] = now
        if self.canceled:
            if not pods or now - self.canceled_at > CANCEL_WAIT:
                self.rc = 143
            return
        if not jobs and not pods and now - self.timings["created"] > 2:
            self.gone_checks += 1
            if self.gone_checks >= 3:  # the objects vanished: deleted from outside torchyard
                self.rc = 143
                self.failure = (RunStatus.CANCELED, f"the run's Kubernetes objects ({self.job_id}) were deleted "
                                                    "outside torchyard")
            return
        self.gone_checks = 0
        if v.failed_rank is not None:
            if self.ended_at is None:
                self.ended_at = now
            if not self._drained([v.failed_rank], now):
                return
            if not self.deleted_jobs:  # one node failed: stop the others now
                self.deleted_jobs = True
                self.session.delete_run(self.name, self.node_count, only_jobs=True)
            self.rc = v.exit_code if v.exit_code else 1
            if v.message:
                self.failure = (RunStatus.FAILED, v.message)
            return
        if v.done:
            if self.ended_at is None:
                self.ended_at = now
            if not self._drained(list(range(self.node_count)), now):
                return
            self.rc = v.exit_code or 0

    def _drained(self, ranks: list[int], now: float) -> bool:
        """Whether the streams of ``ranks`` delivered everything (or waiting longer is pointless)."""
        if self.ended_at is not None and now - self.ended_at > DRAIN_SECONDS:
            return True
        return all((s := self.streams.get(k)) is not None and (s.end is not None or s.closed.is_set()) for k in ranks)

    # ---- the Handle interface --------------------------------------------------------------------

    def poll(self) -> int | None:
        self._refresh()
        return self.rc

    def queued(self) -> str | None:
        self._refresh()
        return self.verdict.queued if self.rc is None else None

    def ended_by(self) -> tuple[RunStatus, str] | None:
        return self.failure

    def cancel(self) -> None:
        if self.canceled or self.rc is not None:
            return
        self.canceled = True
        self.canceled_at = time.time()
        self.next_poll = 0.0
        self.session.delete_run(self.name, self.node_count)

    def sync(self) -> None:
        while True:
            try:
                rank, item = self.frames.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, str):
                path = RunPaths(self.workdir).log(f"k8s_pod_node_{rank}.txt")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "a") as fh:
                    fh.write(item + "\n")
            else:
                self.mirror.apply(rank, new_only(self.mirror.offsets[rank], item))

    def collect(self) -> None:
        deadline = time.time() + DRAIN_SECONDS
        stream = self.streams.get(0)
        while stream is not None and stream.end is None and not stream.closed.is_set() and time.time() < deadline:
            time.sleep(0.05)
        self.sync()

    def node_statuses(self) -> list[dict[str, Any]]:
        out = []
        for k in range(self.node_count):
            try:
                with open(RunPaths(self.workdir).node_report(k)) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
        return out

    def details(self) -> dict[str, Any]:
        t = self.timings
        out: dict[str, Any] = {"namespace": self.target.namespace, "service": self.name,
                               "jobs": [f"{self.name}-{k}" for k in range(self.node_count)],
                               "nodes": {str(k): n for k, n in sorted(self.verdict.nodes.items())},
                               "pods": {str(k): p for k, p in sorted(self.verdict.pods.items())},
                               "code_configmaps": self.code_parts, "code_bytes": self.code_bytes}
        if "running" in t:
            out["submit_to_running_seconds"] = round(t["running"] - t["created"], 3)
        return {"kubernetes": out}

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            for stream in self.streams.values():
                stream.close()
            self.session.delete_run(self.name, self.node_count)
        except Exception as err:  # noqa: BLE001  (release must not raise)
            print(f"torchyard: releasing {self.job_id}: {err}", flush=True)
