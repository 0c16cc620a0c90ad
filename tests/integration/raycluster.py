"""A real two-node Ray cluster on this machine for tests (../shared/ENGINES.md's recipe).

Usage::

    with RayCluster(nodes=2) as cluster:
        cluster.address      # "IP:PORT" of the head (the GCS)
        cluster.state()      # Ray's view: placement groups, actors, alive nodes

Each node is ``ray start --num-cpus=1 --object-store-memory=200MB``; the head keeps its files under
a temp dir of its own. Only what this helper started is stopped: the processes whose command line
names this cluster's GCS port or temp dir, and their descendants (never ``ray stop``, which would
stop every Ray on the machine).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psutil

OBJECT_STORE = "200000000"


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (None when it can)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'torchyard[ray]')"
    if not shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")):
        return "the `ray` command is not on PATH"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _ray_exe() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "ray")
    return local if os.path.exists(local) else "ray"


class RayCluster:
    """``nodes`` Ray nodes on this machine; or, with ``machines`` (tests/integration/machines.py),
    the head on the submitting machine at the bridge address with no CPUs (no job node lands where
    the workspace is visible) and one worker on each machine, with ``node_env(k)`` added to machine
    k's environment (its node folder, cache, package index)."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, machines: Any = None,
                 node_env: Callable[[int], dict[str, str]] | None = None) -> None:
        self.machines = machines
        self.node_env = node_env
        if machines is not None:
            nodes = machines.count + 1
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.port = _free_port()
        self.client_port = _free_port()  # Ray Client server on the head: ray://IP:client_port
        self.temp_dir = tempfile.mkdtemp(prefix="tyray-", dir="/tmp")  # short: unix socket paths
        self.ip = ""
        self.address = ""
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONWARNINGS="ignore")
        self.started = False

    def _ray(self, *args: str, cpus: int | None = None) -> None:
        proc = subprocess.run(
            [_ray_exe(), "start", *args, f"--num-cpus={self.cpus if cpus is None else cpus}",
             f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats"],
            env=self.env, capture_output=True, text=True, timeout=120,
        )
        if proc.returncode:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> RayCluster:
        self.started = True
        atexit.register(self.stop)  # also when a test session ends without its fixtures' teardown
        m = self.machines
        head = ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={self.client_port}"]
        if m is not None:
            self._ray(*head, f"--node-ip-address={m.host_ip}", cpus=0)
            self.ip = m.host_ip
        else:
            self._ray(*head)
            self.ip = subprocess.run(
                [sys.executable, "-c", "import ray._private.services as s; print(s.get_node_ip_address())"],
                capture_output=True, text=True, env=self.env, check=True,
            ).stdout.strip() or "127.0.0.1"
        self.address = f"{self.ip}:{self.port}"
        if m is not None:
            for k in range(1, m.count + 1):
                env = dict(self.env, **(self.node_env(k) if self.node_env else {}))
                with open(os.path.join(m.folder(k), "ray.txt"), "ab") as log:
                    m.popen(k, [_ray_exe(), "start", f"--address={self.address}", f"--node-ip-address={m.ip(k)}",
                                f"--num-cpus={self.cpus}", f"--object-store-memory={OBJECT_STORE}", "--block",
                                "--disable-usage-stats"], env=env, stdout=log, stderr=subprocess.STDOUT)
        else:
            for _ in range(self.nodes - 1):
                self._ray(f"--address={self.address}")
        deadline = time.time() + 90
        while len(self.state()["alive_nodes"]) < self.nodes:
            if time.time() > deadline:
                raise RuntimeError(f"the Ray cluster did not reach {self.nodes} nodes: {self.state()}")
            time.sleep(0.5)
        return self

    def state(self) -> dict:
        """Placement groups, actors and nodes as Ray sees them (from a separate driver process)."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "import ray._private.state as st\n"
            "pgs = [p for p in ray.util.placement_group_table().values() if p['state'] != 'REMOVED']\n"
            "actors = [a.get('ActorClassName') for a in st.actors().values() if a.get('State') != 'DEAD']\n"
            "print(json.dumps({'alive_nodes': [n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']],"
            " 'placement_groups': [p['name'] for p in pgs], 'actors': actors}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=120)
        if out.returncode:
            raise RuntimeError(f"could not read the Ray cluster's state:\n{out.stderr[-2000:]}")
        for line in reversed(out.stdout.strip().splitlines()):  # Ray may print after it (a dead node's warnings)
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"no state from the Ray cluster: {out.stdout[-2000:]}")

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes (matched by GCS port or temp dir) and their descendants."""
        marks = (f":{self.port}", self.temp_dir, f"--port={self.client_port}")
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if any(m in cmd for m in marks):
                found[proc.pid] = proc
                try:
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
                except psutil.NoSuchProcess:
                    pass
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self) -> None:
        if not self.started:
            return
        procs = self.processes()
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.started = False

    def __enter__(self) -> RayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
