"""A real Kubernetes node for the real-node tier: containerd + runc + the kubelet (1.20.2, built by
``scripts/build_k8s.sh --kubelet``) registered with the control plane of :mod:`k8s_cluster`.

What it starts, all under one folder of its own and stopped by pid when the fixture ends:

* **containerd** with its own root, state, socket and CNI config folder; the CRI plugin with
  ``restrict_oom_score_adj = true`` (root here lacks CAP_SYS_RESOURCE), runc via the v2 shim,
  cgroupfs, and ``sandbox_image`` = a pause image built here.
* **Two images built from local files** (rootfs tar → ``podman import`` → ``podman save --format
  oci-archive`` → ``ctr -n k8s.io images import``): the pause image (a static ``pause`` from the
  tree's ``build/pause/linux/pause.c``) and the node image: busybox-static, ``/bin/python`` pointing
  at this machine's Python install (``sys.base_prefix``, which the pods mount read-only by hostPath
  together with ``/usr`` for its shared libraries: torch is not copied into the image) and a copy of
  this checkout's ``src/torchyard`` on ``PYTHONPATH``.
* **The kubelet** (``--container-runtime=remote``, cgroupfs, no QoS cgroups, no eviction, its
  server on 127.0.0.1 with anonymous AlwaysAllow — the flags /work/shared/KUBERNETES.md records).
  ``--node-ip`` cannot be loopback, so it is this machine's first non-loopback address; the API
  server then cannot reach the kubelet's log endpoint (it listens on 127.0.0.1 only), which is why
  the target reads pod logs from the CRI log files (``log_files="/var/log/pods"``).

Teardown (also after a failed start): the kubelet stops, every container and pod sandbox containerd
still runs is killed and deleted with ``ctr``, containerd stops, then every mount left under the
kubelet's root dir (its self bind mount, emptyDir tmpfs) and containerd's state is unmounted, and
the ``/var/log/pods`` folders (and ``/var/log/containers`` links) and the ``k8s.io`` cgroups the node
made are removed.

CPU weight: without QoS cgroups containerd puts all pods in one cgroup, ``/k8s.io``, which would
weigh as one process against every other process of this (shared) machine; the fixture gives it the
weight of the node's CPUs (1024 each), as a kubelet's ``kubepods`` cgroup has.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.k8s_cluster import REPO, Cluster, free_port

NODE_IMAGE = "localhost/torchyard-node:test"
PAUSE_IMAGE = "localhost/torchyard-pause:test"
POD_LOGS = "/var/log/pods"
CONTAINER_LOGS = "/var/log/containers"  # the kubelet's symlinks into POD_LOGS
#: containerd's cgroup parent for the pods (cgroup v1 cpu controller; --cgroups-per-qos=false)
POD_CPU_CGROUP = "/sys/fs/cgroup/cpu/k8s.io"
#: what the pods mount read-only from this machine: the Python install (torch, the test deps) and /usr
PYTHON_PREFIX = os.path.realpath(sys.base_prefix)
HOST_PATHS = sorted({PYTHON_PREFIX, "/usr"})


def node_bin() -> str | None:
    """The cached binaries' folder when the kubelet, pause and the tier's Debian packages are there."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build_k8s.sh"), "--check", "--kubelet"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else None


def node_ip() -> str | None:
    """This machine's address on its default route (no packet is sent), None when only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.254.254.254", 9))
            ip = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    import io  # noqa: PLC0415

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, int(time.time())
    tar.addfile(info)


def node_rootfs(path: Path) -> None:
    """The node image's root file system (a tar made from local files only)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    python = os.path.join(PYTHON_PREFIX, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "opt", "opt/torchyard", "root", "usr", "var", "proc", "sys", "dev"):
            _add_dir(tar, d)
        _add_dir(tar, "tmp", 0o1777)
        with open(busybox, "rb") as fh:
            _add_file(tar, "bin/busybox", fh.read(), 0o755)
        for applet in applets:
            if applet not in ("busybox", "python", "python3"):
                _add_link(tar, f"bin/{applet}", "busybox")
        _add_link(tar, "bin/python", python)
        _add_link(tar, "bin/python3", python)
        _add_link(tar, "lib", "usr/lib")  # /usr comes from the host, read-only (merged /usr, as on Debian 12)
        _add_link(tar, "lib64", "usr/lib64")
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        _add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        src = REPO / "src"
        for dirpath, dirnames, files in os.walk(src / "torchyard"):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            rel = os.path.relpath(dirpath, src)
            _add_dir(tar, f"opt/torchyard/{rel}")
            for fname in sorted(files):
                if not fname.endswith((".pyc", ".pyo")):
                    with open(os.path.join(dirpath, fname), "rb") as fh:
                        _add_file(tar, f"opt/torchyard/{rel}/{fname}", fh.read())


def pause_rootfs(path: Path, pause: str) -> None:
    with tarfile.open(path, "w") as tar, open(pause, "rb") as fh:
        _add_file(tar, "pause", fh.read(), 0o755)


class RealNode:
    """containerd + the kubelet as one Node of ``cluster`` (a control plane started without node runners)."""

    def __init__(self, cluster: Cluster, root: Path, bin_dir: str, ip: str, name: str = "ty-kubelet") -> None:
        self.cluster = cluster
        self.root = root
        self.bin = bin_dir
        self.ip = ip
        self.name = name
        self.sock = str(root / "containerd" / "containerd.sock")
        self.kubelet_root = root / "kubelet"
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.timings: dict[str, float] = {}
        self.logs_before: dict[str, set[str]] = {}
        self.cgroups_before: set[str] = set()

    # ---- start ------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        with log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def _alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(["ctr", "--address", self.sock, "-n", "k8s.io", *args])

    def start(self) -> RealNode:
        t0 = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_before = {d: set(os.listdir(d)) if os.path.isdir(d) else set() for d in (POD_LOGS, CONTAINER_LOGS)}
        self._start_containerd()
        self.timings["containerd_ready"] = time.time() - t0
        self._import_images()
        self.timings["images_imported"] = time.time() - t0
        self._start_kubelet()
        self._wait_ready()
        self.timings["node_ready"] = time.time() - t0
        return self

    def _start_containerd(self) -> None:
        c = self.root / "containerd"
        cni = self.root / "cni"
        for d in (c, cni, c / "root", c / "state", c / "opt"):
            d.mkdir(parents=True, exist_ok=True)
        # the pods here use the host network; a loopback-only network satisfies the CRI plugin's check
        (cni / "10-loopback.conflist").write_text(json.dumps(
            {"cniVersion": "0.4.0", "name": "torchyard-loopback", "plugins": [{"type": "loopback"}]}))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (c / "config.toml").write_text(f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_container_log_line_size = 16384
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"
""")
        self._pod_cpu_weight()
        self._spawn("containerd", ["containerd", "--config", str(c / "config.toml")])
        deadline = time.time() + 30
        while time.time() < deadline:
            self._alive()
            if os.path.exists(self.sock):
                try:
                    self.ctr("version")
                    return
                except RuntimeError:
                    pass
            time.sleep(0.2)
        raise RuntimeError("containerd did not start")

    def _pod_cpu_weight(self) -> None:
        """Give the pods' cgroup the CPU weight of the node's CPUs (1024 each), as the kubelet's
        ``kubepods`` cgroup has with QoS cgroups. Without QoS cgroups (``--cgroups-per-qos=false``,
        needed here) containerd puts every pod under ``/k8s.io`` at the default 1024: all pods together
        would weigh as much as ONE process of this machine, and a busy machine would starve them."""
        import glob  # noqa: PLC0415

        self.cgroups_before = set(glob.glob("/sys/fs/cgroup/*/k8s.io"))
        if not os.path.isdir(os.path.dirname(POD_CPU_CGROUP)):
            return  # not the cgroup v1 cpu controller: leave it
        if not os.path.isdir(POD_CPU_CGROUP):
            os.mkdir(POD_CPU_CGROUP)
        Path(POD_CPU_CGROUP, "cpu.shares").write_text(str(1024 * (os.cpu_count() or 1)))

    def _import_images(self) -> None:
        p = Path(tempfile.mkdtemp(prefix="ty-podman-"))  # podman wants a runroot of at most 50 characters
        try:
            self._podman_import(["podman", "--root", str(p / "root"), "--runroot", str(p / "run"), "--storage-driver",
                                 "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        finally:
            shutil.rmtree(p, ignore_errors=True)
        names = self.ctr("images", "list", "-q").stdout.split()
        missing = [r for r in (NODE_IMAGE, PAUSE_IMAGE) if r not in names]
        if missing:
            raise RuntimeError(f"ctr images import did not name {missing}: containerd has {names}")

    def _podman_import(self, podman: list[str]) -> None:
        node_rootfs(self.root / "node-rootfs.tar")
        pause_rootfs(self.root / "pause-rootfs.tar", os.path.join(self.bin, "pause"))
        for ref, tar, changes in (
            (PAUSE_IMAGE, "pause-rootfs.tar", ['ENTRYPOINT ["/pause"]']),
            (NODE_IMAGE, "node-rootfs.tar", ["ENV PATH=/bin:/usr/bin", "ENV PYTHONPATH=/opt/torchyard",
                                             "ENV PYTHONDONTWRITEBYTECODE=1", "ENV HOME=/root", "WORKDIR /"]),
        ):
            argv = [*podman, "import"]
            for change in changes:
                argv += ["--change", change]
            _run([*argv, str(self.root / tar), ref])
            archive = self.root / (tar.replace("-rootfs.tar", "") + ".oci.tar")
            _run([*podman, "save", "--format", "oci-archive", "-o", str(archive), ref])
            self.ctr("images", "import", "--base-name", ref.rsplit(":", 1)[0], str(archive))

    def _start_kubelet(self) -> None:
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        (self.root / "kubelet-pki").mkdir(exist_ok=True)
        self._spawn("kubelet", [
            f"{self.bin}/kubelet", f"--kubeconfig={self.cluster.kubeconfig}", "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.sock}", "--cgroup-driver=cgroupfs", "--cgroups-per-qos=false",
            "--enforce-node-allocatable=", "--fail-swap-on=false", "--address=127.0.0.1", "--anonymous-auth=true",
            "--authorization-mode=AlwaysAllow", "--eviction-hard=", f"--port={free_port()}", "--read-only-port=0",
            "--healthz-port=0", f"--root-dir={self.kubelet_root}", f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={self.name}", f"--node-ip={self.ip}", f"--pod-infra-container-image={PAUSE_IMAGE}",
            f"--node-labels=torchyard.test/node={self.name}", "--image-gc-high-threshold=100",
            "--image-gc-low-threshold=99", "--container-log-max-size=200Mi", "--serialize-image-pulls=false",
            f"--volume-plugin-dir={self.root / 'volume-plugins'}", "--v=1",
        ])  # fmt: skip

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._alive()
            code, body = self.cluster._get(f"/api/v1/nodes/{self.name}")
            if code == 200:
                node = json.loads(body)
                ready = any(c["type"] == "Ready" and c["status"] == "True"
                            for c in (node.get("status") or {}).get("conditions", []))
                if ready and not (node.get("spec") or {}).get("taints"):
                    return
            time.sleep(0.3)
        tail = (self.root / "kubelet.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the kubelet's Node {self.name} did not become Ready and untainted:\n{tail}")

    # ---- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Kubelet, containers, containerd (by pid), mounts, pod log folders; never raises."""
        errors: list[str] = []
        kubelet = [p for n, p in self.procs if n == "kubelet"]
        for proc in kubelet:
            self._end(proc)
        if os.path.exists(self.sock):
            for what in ("tasks", "containers"):
                try:
                    ids = self.ctr(what, "list", "-q").stdout.split()
                except RuntimeError as err:
                    errors.append(str(err))
                    ids = []
                for cid in ids:
                    try:
                        if what == "tasks":
                            self.ctr("tasks", "kill", "-s", "SIGKILL", cid)
                            for _ in range(50):
                                if "STOPPED" in self.ctr("tasks", "list").stdout.split(cid, 1)[-1].split("\n", 1)[0]:
                                    break
                                time.sleep(0.1)
                            self.ctr("tasks", "delete", cid)
                        else:
                            self.ctr("containers", "delete", cid)
                    except RuntimeError as err:
                        errors.append(str(err))
        for name, proc in reversed(self.procs):
            if name != "kubelet":
                self._end(proc)
        self.procs.clear()
        self._end_shims()
        self._unmount_under([str(self.kubelet_root), str(self.root / "containerd")])
        self._remove_cgroups()
        for folder, before in self.logs_before.items():
            for entry in (set(os.listdir(folder)) - before) if os.path.isdir(folder) else ():
                path = os.path.join(folder, entry)
                if os.path.islink(path):
                    os.unlink(path)
                else:
                    shutil.rmtree(path, ignore_errors=True)
        if errors:
            print("k8s_node teardown:", *errors[:5], sep="\n  ", flush=True)

    def _remove_cgroups(self) -> None:
        """The (empty) ``k8s.io`` cgroups this node's containers left, of every controller."""
        import glob  # noqa: PLC0415

        for path in set(glob.glob("/sys/fs/cgroup/*/k8s.io")) - self.cgroups_before:
            for _ in range(20):  # runc removes the containers' own cgroups as they are deleted
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _end_shims(self) -> None:
        """runc shims started for this containerd (``-address <our socket>``) that outlived it, by pid."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and self.sock.encode() in argv:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    @staticmethod
    def _unmount_under(prefixes: list[str]) -> None:
        """Every mount point under ``prefixes`` (and the prefixes themselves), deepest first."""
        for _attempt in range(3):
            points = []
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if any(point == p or point.startswith(p + "/") for p in prefixes):
                    points.append(point)
            if not points:
                return
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", point], capture_output=True, check=False)
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
