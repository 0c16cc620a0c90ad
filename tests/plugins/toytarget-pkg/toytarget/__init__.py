"""A compute target that lives only in the test suite, written against torchyard's public compute
interface (torchyard.compute.base, torchyard.compute.mirror) and registered by entry point: nothing
in torchyard's own source names it.

Each node of a job is a launcher process in a folder of its own (``<root>/<run_id>/node_K``) with
its own copy of the code: the nodes do not share the run folder, so logs, metric journals and node
reports come back through the framework's mirror channel, and outputs at the end. With
``report="server"`` the target moves nothing while the job runs: the nodes report to the team
server over HTTP themselves (``ComputeTarget.reports_over_http``), as nodes that reach only the
server's API would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

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
from torchyard.compute.mirror import Mirror
from torchyard.paths import NOT_CODE, RunPaths


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ToyCompute(ComputeTarget):
    """Nodes as processes in separate folders on this machine (a test target)."""

    kind = "toy"
    features = Feature.MULTI_NODE
    options = (
        Option(name="root", type=str, help="where the nodes' folders go (default: a temporary folder)"),
        Option(name="max_nodes", type=int, default=4, help="the most nodes a job may have"),
        Option(name="report", type=str, default="mirror", choices=("mirror", "server"),
               help="how nodes report while the job runs: the target's mirror, or the nodes to the team server"),
    )

    root: str | None
    max_nodes: int
    report: str

    def reports_over_http(self) -> bool:
        return self.report == "server"

    def check(self, spec: Any) -> None:
        super().check(spec)
        if spec.distribution.node_count > self.max_nodes:
            from torchyard.errors import NotSupportedError

            raise NotSupportedError("node_count", f"the toy target has {self.max_nodes} nodes")

    def shared_paths(self, workspace: str) -> tuple[str, ...] | None:
        return None  # the nodes are on this machine: every folder but the run's is theirs too

    def _node_dir(self, run_id: str, k: int) -> str:
        root = self.root or os.path.join(tempfile.gettempdir(), "torchyard-toy")
        return os.path.join(root, run_id, f"node_{k}")

    def dryrun(self, job: PreparedJob) -> LaunchPlan:
        common = common_plan(job, master_addr="127.0.0.1", master_port=_free_port())
        nodes = []
        for k in range(job.spec.distribution.node_count):
            folder = self._node_dir(job.run_id, k)
            plan = common.replace(node_rank=k, workdir=folder)
            nodes.append(NodeLaunch(node_rank=k, plan=plan,
                                    argv=[job.launcher_python, "-m", "torchyard.launch.launcher",
                                          RunPaths(folder).plan(k)]))
        return LaunchPlan(target=self.name, nodes=nodes, files={"toy nodes": json.dumps(
            {"run folder": job.workdir, "node folders": [n.plan.workdir for n in nodes]}, indent=2)})

    def schedule(self, plan: LaunchPlan) -> ToyHandle:
        source = json.loads(plan.files["toy nodes"])["run folder"]
        procs = []
        for node in plan.nodes:
            folder = node.plan.workdir
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(source, folder, ignore=lambda d, names: [n for n in names if d == source and n in NOT_CODE])
            os.makedirs(RunPaths(folder).internal, exist_ok=True)
            with open(node.argv[-1], "wb") as fh:
                fh.write(node.plan.to_json())
            log = open(RunPaths(folder).launcher_log(node.node_rank), "ab")  # noqa: SIM115
            with log:
                procs.append(subprocess.Popen(node.argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        return ToyHandle(source, [n.plan.workdir for n in plan.nodes], procs, mirror=self.report == "mirror")


class ToyHandle(Handle):
    def __init__(self, workdir: str, node_dirs: list[str], procs: list[subprocess.Popen[bytes]],
                 mirror: bool = True) -> None:
        self.job_id = f"toy-{procs[0].pid}"
        self.node_dirs = node_dirs
        self.procs = procs
        self.mirror = Mirror(workdir, len(node_dirs))
        self.mirroring = mirror
        self.mirror_sent: dict[int, bool] = {}

    def poll(self) -> int | None:
        codes = [p.poll() for p in self.procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            self.cancel()
        if any(c is None for c in codes):
            return None
        return failed[0] if failed else 0

    def cancel(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)

    def sync(self) -> None:
        if not self.mirroring:  # the nodes send it to the team server themselves
            return
        broken = os.environ.get("TOYTARGET_BREAK_RETURN")  # a fault test: node 1's channel breaks once it sent anything
        for k, folder in enumerate(self.node_dirs):
            if broken and k == 1 and self.mirror_sent.get(k):
                continue
            self.mirror.pull_folder(k, folder)
            self.mirror_sent[k] = any(os.path.getsize(os.path.join(RunPaths(folder).journal, n)) > 0
                                      for n in _names(RunPaths(folder).journal))

    def collect(self) -> None:
        self.sync()
        for k, folder in enumerate(self.node_dirs):
            if os.environ.get("TOYTARGET_BREAK_RETURN") and k == 1:
                continue
            if self.mirroring:
                self.mirror.collect_folder(k, folder)
            elif os.path.isdir(os.path.join(folder, "outputs")):  # outputs only: the rest came over HTTP
                shutil.copytree(os.path.join(folder, "outputs"), self.mirror.outputs_destination(k) if k else
                                os.path.join(self.mirror.workdir, "outputs"), dirs_exist_ok=True)

    def node_statuses(self) -> list[dict[str, Any]]:
        out = []
        for k in range(len(self.node_dirs)):
            try:
                with open(RunPaths(self.mirror.workdir).node_report(k)) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
        return out

    def details(self) -> dict[str, Any]:
        return {"toy": {"job_id": self.job_id, "node_folders": self.node_dirs}}

    def release(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for folder in self.node_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.node_dirs[0]))
        except OSError:
            pass
        sys.stdout.flush()
