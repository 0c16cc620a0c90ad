"""A real Kubernetes 1.20.2 control plane on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler: the binaries ``scripts/build_k8s.sh`` builds from Debian's source package) and a node
runner the tests own, standing in for the kubelet on two Nodes.

The node runner (``python k8s_cluster.py node ...``, one process per Node) registers its Node, renews
its Lease, lists the pods bound to it, and runs each pod's container command as a local process on
this machine's Python — not in the pod's ``image`` — in a mount namespace of its own: a private
``/tmp`` (so the pod cannot see the submitter's workspace), the pod's ConfigMap and emptyDir volumes
at their mount paths (under ``/torchyard``, a tmpfs there), ``/dev/shm`` a fresh tmpfs, and a private
``/etc/hosts`` mapping ``<hostname>.<subdomain>`` of the namespace's pods to 127.0.0.1 (pods share
this machine's network, so that is where node 0's rendezvous port is). It reports the pod's phases and
exit code, deletes pods that are being deleted once their process is gone, and serves
``/containerLogs/...`` over TLS so the API server's pod-logs call (``follow=true`` included) works.

Every process is stopped by its pid when the fixture ends, failing or not.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "torchyard-admin-token"
NOBODY_TOKEN = "torchyard-nobody-token"
#: the pods' mount paths live here; a tmpfs is mounted on it inside each pod's namespace
POD_ROOT = "/torchyard"


def control_plane_bin() -> str | None:
    """The cached binaries' folder, or None when ``scripts/build_k8s.sh`` has not built them."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build_k8s.sh"), "--check"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Cluster:
    """The control plane and two node runners. ``start()`` returns when both Nodes are Ready."""

    def __init__(self, root: Path, bin_dir: str, nodes: tuple[str, ...] = ("node-a", "node-b"), node_cpus: int = 4,
                 gpus: int = 0) -> None:
        self.root = root
        self.bin = bin_dir
        self.node_names = nodes
        self.node_cpus = node_cpus
        self.gpus = gpus
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = root / "kubeconfig"
        self.certs = root / "certs"
        self.timings: dict[str, float] = {}
        self.made_pod_root = False

    # ---- processes --------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        with log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def cut_logs(self, cut: bool = True) -> None:
        """Make every node's log endpoint answer 503 (the API server cannot reach its kubelets), or heal it."""
        for folder in (self.root / "nodes").iterdir():
            marker = folder / "cut_logs"
            if cut:
                marker.write_text("cut")
            else:
                marker.unlink(missing_ok=True)

    def start(self) -> Cluster:
        t0 = time.time()
        r = self.root
        self.certs.mkdir(parents=True, exist_ok=True)
        if not os.path.isdir(POD_ROOT):
            os.makedirs(POD_ROOT)
            self.made_pod_root = True
        subprocess.run(["openssl", "genrsa", "-out", str(r / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(r / "sa.key"), "-pubout", "-out", str(r / "sa.pub")], check=True,
                       capture_output=True)
        (r / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,1,"system:masters"\n{NOBODY_TOKEN},nobody,2\n')
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", ["etcd", "--data-dir", str(r / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}", "--name", "default"])
        self._spawn("kube-apiserver", [
            f"{self.bin}/kube-apiserver", f"--etcd-servers=http://127.0.0.1:{etcd_client}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}", "--insecure-port=0",
            f"--cert-dir={self.certs}", f"--token-auth-file={r / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={r / 'sa.pub'}", f"--service-account-signing-key-file={r / 'sa.key'}",
            "--enable-priority-and-fairness=false", "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true", "--kubelet-preferred-address-types=InternalIP",
        ])  # fmt: skip
        self._wait_ready()
        self.timings["apiserver_ready"] = time.time() - t0
        self._write_kubeconfig()
        self._spawn("kube-controller-manager", [
            f"{self.bin}/kube-controller-manager", f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0", "--port=0",
            f"--service-account-private-key-file={r / 'sa.key'}", f"--root-ca-file={self.certs / 'apiserver.crt'}",
            "--concurrent-gc-syncs=2",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service,-persistentvolume-binder,-attachdetach,"
            "-persistentvolume-expander,-ttl,-bootstrapsigner,-tokencleaner,-csrsigning,-csrapproving,-csrcleaner",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [f"{self.bin}/kube-scheduler", f"--kubeconfig={self.kubeconfig}",
                                       "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0", "--port=0"])
        for name in self.node_names:
            self._spawn(f"node-{name}", [sys.executable, __file__, "node", "--kubeconfig", str(self.kubeconfig),
                                         "--name", name, "--port", str(free_port()), "--root", str(r / "nodes" / name),
                                         "--cpus", str(self.node_cpus), "--gpus", str(self.gpus),
                                         "--cert", str(self.certs / "apiserver.crt"),
                                         "--key", str(self.certs / "apiserver.key")])
        self._wait_nodes()
        self.timings["nodes_ready"] = time.time() - t0
        return self

    def _get(self, path: str, token: str = ADMIN_TOKEN) -> tuple[int, bytes]:
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        ctx = ssl.create_default_context(cafile=str(self.certs / "apiserver.crt"))
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:  # noqa: S310
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._alive()
            if (self.certs / "apiserver.crt").exists():
                try:
                    code, _ = self._get("/readyz")
                    if code == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError("kube-apiserver did not become ready")

    def _wait_nodes(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._alive()
            code, body = self._get("/api/v1/nodes")
            if code == 200:
                items = json.loads(body)["items"]
                ready = [n for n in items if not (n.get("spec") or {}).get("taints") and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in (n.get("status") or {}).get("conditions", []))]
                if len(ready) == len(self.node_names):
                    return
            time.sleep(0.25)
        raise RuntimeError("the Nodes did not become Ready and untainted")

    def _write_kubeconfig(self) -> None:
        ca = str(self.certs / "apiserver.crt")
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "admin",
            "clusters": [{"name": "local", "cluster": {"server": self.server, "certificate-authority": ca}}],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}, {"name": "nobody", "user": {"token": NOBODY_TOKEN}}],
            "contexts": [{"name": "admin", "context": {"cluster": "local", "user": "admin"}},
                         {"name": "nobody", "context": {"cluster": "local", "user": "nobody"}}],
        }  # fmt: skip
        self.kubeconfig.write_text(json.dumps(config))

    def stop(self) -> None:
        """Every process by its pid, the last started first (SIGTERM, then SIGKILL after 10 s)."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()
        if self.made_pod_root:
            try:
                os.rmdir(POD_ROOT)
            except OSError:
                pass

    def api(self) -> Any:
        from kubernetes import config  # noqa: PLC0415

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def objects(self, selector: str) -> dict[str, list[str]]:
        """Names of the Services, ConfigMaps, Jobs and pods with the label selector ``selector``."""
        from kubernetes import client as k  # noqa: PLC0415

        api = self.api()
        core, batch = k.CoreV1Api(api), k.BatchV1Api(api)
        out = {
            "Service": [o.metadata.name for o in core.list_namespaced_service("default", label_selector=selector).items],
            "ConfigMap": [o.metadata.name for o in core.list_namespaced_config_map("default", label_selector=selector).items],
            "Job": [o.metadata.name for o in batch.list_namespaced_job("default", label_selector=selector).items],
            "Pod": [o.metadata.name for o in core.list_namespaced_pod("default", label_selector=selector).items],
        }
        api.close()
        return out


# ---- the node runner (its own process) -------------------------------------------------------------


class Pod:
    def __init__(self, obj: dict[str, Any], folder: Path) -> None:
        self.obj = obj
        self.uid = obj["metadata"]["uid"]
        self.name = obj["metadata"]["name"]
        self.ns = obj["metadata"]["namespace"]
        self.folder = folder
        self.log = folder / "container.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = ""
        self.reported_end = False
        self.exited = threading.Event()


class NodeRunner:
    def __init__(self, args: Any) -> None:
        from kubernetes import client as k  # noqa: PLC0415
        from kubernetes import config  # noqa: PLC0415

        self.api = config.new_client_from_config(config_file=args.kubeconfig)
        self.core = k.CoreV1Api(self.api)
        self.coord = k.CoordinationV1Api(self.api)
        self.name = args.name
        self.port = args.port
        self.root = Path(args.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cpus = args.cpus
        self.gpus = args.gpus
        self.pods: dict[str, Pod] = {}
        self.by_name: dict[tuple[str, str], Pod] = {}
        self.stop = False
        self.cert, self.key = args.cert, args.key

    # ---- the Node and its Lease -------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        capacity = {"cpu": str(self.cpus), "memory": "16Gi", "pods": "50"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        now = _now()
        return {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "torchyard test node runner",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"machineID": "torchyard", "systemUUID": self.name, "bootID": "1", "kernelVersion": os.uname().release,
                         "osImage": "Debian (torchyard node runner: host processes, not containers)",
                         "containerRuntimeVersion": "torchyard-node-runner://1", "kubeletVersion": "v1.20.2",
                         "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux", "architecture": "amd64"},
        }  # fmt: skip

    def register(self) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                                                            "kubernetes.io/arch": "amd64", "torchyard.test/node": self.name}}}
        try:
            self.core.create_node(body)
        except ApiException as err:
            if err.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": self._status()})
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}}
        try:
            self.coord.create_namespaced_lease("kube-node-lease", lease)
        except ApiException as err:
            if err.status != 409:
                raise

    def heartbeat(self) -> None:
        self.coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": {"renewTime": _micro_now()}})
        self.core.patch_node_status(self.name, {"status": {"conditions": self._status()["conditions"]}})

    # ---- pods -------------------------------------------------------------------------------------

    def loop(self) -> None:
        next_beat = 0.0
        next_hosts = 0.0
        while not self.stop:
            now = time.time()
            try:
                if now >= next_beat:
                    self.heartbeat()
                    next_beat = now + 5
                items = json.loads(self.core.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={self.name}", _preload_content=False).data)["items"]
                for obj in items:
                    self.handle(obj)
                for pod in list(self.pods.values()):
                    self.check_exit(pod)
                if now >= next_hosts:
                    next_hosts = now + 1
                    for pod in self.pods.values():
                        if pod.proc is not None and pod.proc.poll() is None:
                            self.write_hosts(pod)
            except Exception as err:  # noqa: BLE001  (the API server restarting, a pod gone meanwhile)
                print(f"node runner {self.name}: {type(err).__name__}: {err}", flush=True)
            time.sleep(0.2)

    def handle(self, obj: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        uid = obj["metadata"]["uid"]
        pod = self.pods.get(uid)
        if obj["metadata"].get("deletionTimestamp"):
            if pod is not None and pod.proc is not None and pod.proc.poll() is None:
                if not getattr(pod, "term_sent", False):
                    pod.term_sent = True  # type: ignore[attr-defined]
                    pod.term_at = time.time()  # type: ignore[attr-defined]
                    self._signal(pod, signal.SIGTERM)
                elif time.time() - pod.term_at > float(obj["spec"].get("terminationGracePeriodSeconds") or 30):  # type: ignore[attr-defined]
                    self._signal(pod, signal.SIGKILL)
                return
            try:
                self.core.delete_namespaced_pod(obj["metadata"]["name"], obj["metadata"]["namespace"],
                                                grace_period_seconds=0)
            except ApiException as err:
                if err.status != 404:
                    raise
            if pod is not None:
                self.pods.pop(uid, None)
                self.by_name.pop((pod.ns, pod.name), None)
                shutil.rmtree(pod.folder, ignore_errors=True)
            return
        if pod is None and (obj.get("status") or {}).get("phase", "Pending") == "Pending":
            pod = Pod(obj, self.root / uid)
            self.pods[uid] = pod
            self.by_name[(pod.ns, pod.name)] = pod
            self.start(pod)

    def _signal(self, pod: Pod, sig: int) -> None:
        try:
            assert pod.proc is not None
            os.killpg(pod.proc.pid, sig)
        except (ProcessLookupError, AssertionError):
            pass

    def write_hosts(self, pod: Pod) -> None:
        sub = pod.obj["spec"].get("subdomain")
        lines = ["127.0.0.1 localhost", f"127.0.0.1 {pod.obj['spec'].get('hostname') or pod.name}"]
        if sub:
            items = json.loads(self.core.list_namespaced_pod(pod.ns, _preload_content=False).data)["items"]
            for other in items:
                spec = other.get("spec") or {}
                if spec.get("subdomain") == sub and spec.get("hostname"):
                    h = spec["hostname"]
                    lines.append(f"127.0.0.1 {h}.{sub}.{pod.ns}.svc.cluster.local {h}.{sub}.{pod.ns}.svc {h}.{sub}.{pod.ns} {h}.{sub}")
        text = "\n".join(lines) + "\n"
        path = pod.folder / "hosts"
        if not path.exists() or path.read_text() != text:
            with open(path, "r+" if path.exists() else "w") as fh:  # in place: the pod's bind mount sees it
                fh.seek(0)
                fh.write(text)
                fh.truncate()

    def start(self, pod: Pod) -> None:
        obj = pod.obj
        spec = obj["spec"]
        pod.folder.mkdir(parents=True, exist_ok=True)
        volumes: dict[str, Path] = {}
        env: dict[str, str] = {}
        container = spec["containers"][0]
        try:
            for vol in spec.get("volumes") or []:
                folder = pod.folder / "volumes" / vol["name"]
                folder.mkdir(parents=True, exist_ok=True)
                volumes[vol["name"]] = folder
                if "configMap" in vol:
                    cm = self.core.read_namespaced_config_map(vol["configMap"]["name"], pod.ns)
                    for key, value in (cm.data or {}).items():
                        (folder / key).write_text(value)
                    for key, value in (cm.binary_data or {}).items():
                        (folder / key).write_bytes(base64.b64decode(value))
                elif "secret" in vol:
                    secret = self.core.read_namespaced_secret(vol["secret"]["secretName"], pod.ns)
                    for key, value in (secret.data or {}).items():
                        (folder / key).write_bytes(base64.b64decode(value))
            for source in container.get("envFrom") or []:
                if "secretRef" in source:
                    secret = self.core.read_namespaced_secret(source["secretRef"]["name"], pod.ns)
                    env.update({k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()})
                elif "configMapRef" in source:
                    cm = self.core.read_namespaced_config_map(source["configMapRef"]["name"], pod.ns)
                    env.update(cm.data or {})
        except Exception as err:  # noqa: BLE001  (a missing ConfigMap or Secret: the kubelet's CreateContainerConfigError)
            self.report(pod, {"phase": "Pending", "containerStatuses": [{
                "name": container["name"], "ready": False, "restartCount": 0, "image": container["image"], "imageID": "",
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)[:300]}}}]})
            pod.reported_end = True
            return
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif (item.get("valueFrom") or {}).get("fieldRef"):
                path = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": pod.name, "metadata.namespace": pod.ns,
                                     "status.podIP": "127.0.0.1", "spec.nodeName": self.name}.get(path, "")
        # what an image would set: a PATH, a HOME, and this machine's package index settings
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG") or k.startswith(("PIP_", "UV_", "SSL_CERT"))}
        self.write_hosts(pod)
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the node runner runs the image's command on this machine's Python
        mounts = [[str(volumes[vm["name"]]), vm["mountPath"], bool(vm.get("readOnly"))]
                  for vm in container.get("volumeMounts") or [] if vm["mountPath"] != "/dev/shm"]
        plan = {"argv": argv, "env": {**base, **env, "HOSTNAME": spec.get("hostname") or pod.name},
                "cwd": container.get("workingDir") or "/", "mounts": mounts, "hosts": str(pod.folder / "hosts")}
        (pod.folder / "exec.json").write_text(json.dumps(plan))
        pod.started = _now()
        with open(pod.log, "ab") as log:
            pod.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable, __file__, "exec",
                                         str(pod.folder / "exec.json")], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.report(pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.started,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": pod.started}
                           for t in ("Initialized", "Ready", "ContainersReady")],
            "containerStatuses": [{"name": container["name"], "ready": True, "started": True, "restartCount": 0,
                                   "image": container["image"], "imageID": "", "containerID": f"host://{pod.proc.pid}",
                                   "state": {"running": {"startedAt": pod.started}}}],
        })  # fmt: skip

    def check_exit(self, pod: Pod) -> None:
        if pod.reported_end or pod.proc is None or pod.proc.poll() is None:
            return
        pod.exited.set()
        code = pod.proc.returncode
        code = 128 - code if code < 0 else code
        container = pod.obj["spec"]["containers"][0]
        finished = _now()
        pod.reported_end = True
        self.report(pod, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
                           for t in ("Ready", "ContainersReady")],
            "containerStatuses": [{"name": container["name"], "ready": False, "started": False, "restartCount": 0,
                                   "image": container["image"], "imageID": "", "containerID": f"host://{pod.proc.pid}",
                                   "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                                            "startedAt": pod.started, "finishedAt": finished}}}],
        })  # fmt: skip

    def report(self, pod: Pod, status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            self.core.patch_namespaced_pod_status(pod.name, pod.ns, {"status": status})
        except ApiException as err:
            if err.status != 404:
                raise

    # ---- the kubelet's log endpoint ----------------------------------------------------------------

    def serve_logs(self) -> None:
        runner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404)
                    return
                if (runner.root / "cut_logs").exists():  # a fault test: the API server cannot reach this kubelet
                    self.send_error(503, f"{runner.name} does not answer")
                    return
                pod = runner.by_name.get((parts[1], parts[2]))
                if pod is None or not pod.log.exists():
                    self.send_error(404, f"pod {parts[1]}/{parts[2]} has no logs on {runner.name}")
                    return
                follow = urllib.parse.parse_qs(url.query).get("follow", ["false"])[0] == "true"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                try:
                    with open(pod.log, "rb") as fh:
                        while True:
                            data = fh.read(256 * 1024)
                            if data:
                                self.wfile.write(data)
                                self.wfile.flush()
                                continue
                            if not follow or pod.proc is None or pod.proc.poll() is not None:
                                if pod.proc is not None and pod.proc.poll() is not None:
                                    rest = fh.read()
                                    if rest:
                                        self.wfile.write(rest)
                                break
                            time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def shutdown(self, *_args: Any) -> None:
        self.stop = True
        for pod in self.pods.values():
            if pod.proc is not None and pod.proc.poll() is None:
                self._signal(pod, signal.SIGKILL)
                pod.proc.wait()
        sys.exit(0)


def pod_exec(path: str) -> None:
    """Inside the pod's own mount namespace: mounts, then exec the container command."""
    plan = json.loads(Path(path).read_text())

    def mount(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)

    mount("-t", "tmpfs", "tmpfs", POD_ROOT)
    for source, target, read_only in plan["mounts"]:
        if not target.startswith(POD_ROOT + "/"):
            raise SystemExit(f"node runner: mount path {target} is not under {POD_ROOT}")
        os.makedirs(target, exist_ok=True)
        mount("--bind", source, target)
        if read_only:
            mount("-o", "remount,bind,ro", target)
    mount("--bind", plan["hosts"], "/etc/hosts")
    mount("-t", "tmpfs", "tmpfs", "/dev/shm")
    # a private /tmp: the submitter's workspace (under /tmp) is not here; the Python install and the
    # checkout stay (the node's image), also when they live under /tmp (a CI clone, its venv)
    repo = str(Path(__file__).resolve().parents[2])
    keep = sorted({os.path.realpath(p) for p in (repo, sys.prefix) if os.path.realpath(p).startswith("/tmp/")})
    stages = [os.path.join(POD_ROOT, ".image", str(i)) for i in range(len(keep))]
    for kept, stage in zip(keep, stages, strict=True):
        os.makedirs(stage, exist_ok=True)
        mount("--bind", kept, stage)
    mount("-t", "tmpfs", "tmpfs", "/tmp")
    for kept, stage in zip(keep, stages, strict=True):
        os.makedirs(kept, exist_ok=True)
        mount("--bind", stage, kept)
    os.chdir(plan["cwd"])
    os.execvpe(plan["argv"][0], plan["argv"], plan["env"])


def main() -> None:
    import argparse  # noqa: PLC0415

    if sys.argv[1] == "exec":
        pod_exec(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--cpus", type=int, default=4)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    runner = NodeRunner(args)
    signal.signal(signal.SIGTERM, runner.shutdown)
    runner.serve_logs()
    runner.register()
    print(f"node runner {runner.name}: registered, logs on 127.0.0.1:{runner.port}", flush=True)
    runner.loop()


if __name__ == "__main__":
    main()
