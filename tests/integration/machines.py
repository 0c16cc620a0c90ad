"""Simulated separate machines for tests (../shared/ENGINES.md's recipe): each machine is its own
network namespace with its own address on a private bridge, its own hostname (UTS namespace) and
its own mount namespace, in which it has its own ``/etc/hosts`` (its hostname → 127.0.1.1, as Debian
does), its own ``/tmp`` (an empty tmpfs: the submitter's workspace, sources and data under /tmp are
not there) and nothing else hidden: the operating system and the Python install are shared
read-only, like a cluster's common image. The submitting machine is the root namespace, with the
bridge's address.

Usage::

    with Machines(2) as m:
        m.host_ip                 # the submitter's address on the bridge
        m.ip(1), m.hostname(1)    # machine 1's
        m.popen(1, ["python", "-c", "..."], env=...)

Everything is torn down by ``stop()`` (also at interpreter exit): the processes started on the
machines (by process group), the namespaces and the links. Only root can do this (CI is root).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time

import psutil

SUBNET = "10.231.{}"  # a test-owned private subnet; nothing routes beyond the bridge


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "simulated machines need root (network and mount namespaces)"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, util-linux)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Machines:
    def __init__(self, count: int, keep: list[str] | None = None) -> None:
        """``keep``: folders under /tmp that stay visible on the machines (the Python install and the
        source of torchyard, when a checkout or a virtual environment lives under /tmp): the
        cluster's common image."""
        self.count = count
        self.keep = sorted({os.path.realpath(p) for p in (keep or []) if os.path.realpath(p).startswith("/tmp/")})
        tag = f"{os.getpid() % 10000:04d}"
        self.bridge = f"tyb{tag}"
        self.netns = [f"tym{tag}n{k}" for k in range(1, count + 1)]
        self.host_links = [f"tyh{tag}n{k}" for k in range(1, count + 1)]
        self.node_links = [f"tyv{tag}n{k}" for k in range(1, count + 1)]
        self.net = SUBNET.format(os.getpid() % 200 + 20)
        self.host_ip = f"{self.net}.254"
        self.root = tempfile.mkdtemp(prefix="tymachines-", dir="/var/tmp")  # not under /tmp: visible to all
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = False

    def ip(self, k: int) -> str:
        return f"{self.net}.{k}"

    def hostname(self, k: int) -> str:
        return f"tynode{k}"

    def folder(self, k: int) -> str:
        """Machine k's own disk (a folder only it uses; visible to it at the same path)."""
        return os.path.join(self.root, f"machine{k}")

    def start(self) -> Machines:
        self.started = True
        atexit.register(self.stop)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for k in range(1, self.count + 1):
            ns, host_link, node_link = self.netns[k - 1], self.host_links[k - 1], self.node_links[k - 1]
            _ip("netns", "add", ns)
            _ip("link", "add", host_link, "type", "veth", "peer", "name", node_link)
            _ip("link", "set", host_link, "master", self.bridge)
            _ip("link", "set", host_link, "up")
            _ip("link", "set", node_link, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.ip(k)}/24", "dev", node_link)
            _ip("-n", ns, "link", "set", node_link, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            os.makedirs(self.folder(k), exist_ok=True)
            with open(os.path.join(self.folder(k), "hosts"), "w") as fh:
                fh.write(f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.hostname(k)}\n")
        return self

    def wrap(self, k: int, argv: list[str]) -> list[str]:
        """``argv`` as a command that runs on machine ``k``."""
        hosts = os.path.join(self.folder(k), "hosts")
        steps = [f"hostname {self.hostname(k)}"]
        stages = [os.path.join(self.folder(k), "keep", str(i)) for i in range(len(self.keep))]
        for path, stage in zip(self.keep, stages, strict=True):  # set aside what must stay visible
            steps += [f"mkdir -p {stage}", f"mount --bind {path} {stage}"]
        steps.append("mount -t tmpfs tmpfs /tmp")  # the machine's own /tmp: the submitter's is not there
        for path, stage in zip(self.keep, stages, strict=True):
            steps += [f"mkdir -p {path}", f"mount --bind {stage} {path}"]
        steps.append(f"mount --bind {hosts} /etc/hosts")
        setup = " && ".join(steps) + ' && exec "$@"'
        return ["nsenter", f"--net=/var/run/netns/{self.netns[k - 1]}", "unshare", "--mount", "--uts",
                "--propagation", "private", "sh", "-c", setup, "sh", *argv]

    def popen(self, k: int, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.wrap(k, argv), start_new_session=True, **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def run(self, k: int, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.wrap(k, argv), capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def pids_on(self, k: int) -> list[int]:
        """Every process in machine k's network namespace."""
        out = _ip("netns", "pids", self.netns[k - 1], check=False).stdout.split()
        return [int(p) for p in out if p.isdigit()]

    def kill_machine(self, k: int) -> None:
        """Machine k dies: every process in its namespaces, at once."""
        for pid in self.pids_on(k):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 10
        for k in range(1, self.count + 1):
            while self.pids_on(k) and time.time() < deadline:
                time.sleep(0.2)
            self.kill_machine(k)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.netns:
            _ip("netns", "del", ns, check=False)
        for link in self.host_links:
            _ip("link", "del", link, check=False)
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Machines:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def files_holding(needle: str, roots, skip: str | None = None) -> list[str]:
    """Every file under ``roots`` (but not under ``skip``) whose bytes contain ``needle``."""
    found = []
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            if skip and folder.startswith(skip):
                continue
            for name in files:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as fh:
                        if needle.encode() in fh.read():
                            found.append(path)
                except OSError:
                    continue
    return found


#: a job script for the presigned-inputs tests: logs two input files' numbers and how many AWS key
#: variables its process sees
PRESIGNED_SCRIPT = """
    import os, sys
    from torchyard import Run
    folder = sys.argv[sys.argv.index("--data") + 1]
    run = Run.get_context()
    run.log("n", int(open(os.path.join(folder, "n.txt")).read()))
    run.log("m", int(open(os.path.join(folder, "deep", "m.txt")).read()))
    run.log("aws_vars", len([k for k in os.environ if k.startswith("AWS_") and ("KEY" in k or "TOKEN" in k)]))
"""


def put_presigned_inputs(endpoint_url: str, bucket: str) -> None:
    """The two objects PRESIGNED_SCRIPT reads (n = 9, m = 4) under ``in/`` of a new bucket."""
    import boto3  # noqa: PLC0415

    client = boto3.client("s3", endpoint_url=endpoint_url)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="in/n.txt", Body=b"9\n")
    client.put_object(Bucket=bucket, Key="in/deep/m.txt", Body=b"4\n")
    client.close()

