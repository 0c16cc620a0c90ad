"""Local compute: ranks are processes on this machine; ``node_count > 1`` runs one launcher per
simulated node, all on 127.0.0.1, so multi-node code can be debugged before a cluster exists."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
from typing import Any

import msgspec

from torchyard.compute.base import (
    ComputeTarget,
    Feature,
    Handle,
    LaunchPlan,
    NodeLaunch,
    PreparedJob,
    common_plan,
    launcher_argv,
)
from torchyard.launch.contract import node_gpus
from torchyard.paths import RunPaths
from torchyard.spec.job import JobSpec

#: the dry run's entry for the use_gpu fallback (shown by --dry-run; written to the run's log)
GPU_FALLBACK = "warning: use_gpu"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalCompute(ComputeTarget):
    """This machine: one forked launcher per (simulated) node, every node on 127.0.0.1."""

    kind = "local"
    hints = {
        "MPI": "mpirun not found on PATH; install Open MPI, e.g. apt-get install openmpi-bin",
        "TORCHRUN": "torch is not installed in this interpreter",
        "GPU": "no NVIDIA GPU is visible on this machine",
    }

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        features = Feature.MULTI_NODE | Feature.SHARED_FS
        if shutil.which("mpirun"):
            features |= Feature.MPI
        if importlib.util.find_spec("torch") is not None:
            features |= Feature.TORCHRUN
        if node_gpus(os.environ):
            features |= Feature.GPU
        self.features = features

    def check(self, spec: JobSpec) -> None:
        """As every target's, except ``use_gpu`` on a machine without GPUs: the job runs on the CPU
        (Azure's scripts fall back to it themselves), with a warning in its log and details."""
        if spec.use_gpu and Feature.GPU not in self.features:
            spec = msgspec.structs.replace(spec, use_gpu=False, distribution=msgspec.structs.replace(
                spec.distribution, communication_backend=None))
        super().check(spec)

    def gpu_fallback(self, job: PreparedJob) -> str | None:
        """The warning when ``job`` asks for GPUs this machine does not have (None otherwise)."""
        spec = job.spec
        if not spec.use_gpu or Feature.GPU in self.features:
            return None
        nccl = spec.distribution.communication_backend == "nccl"
        return (f"use_gpu=True, but compute target {self.name!r} (local) has no GPU: running on the CPU"
                + (" with the gloo backend instead of nccl" if nccl else "") + " (torch.cuda.is_available() is False)")

    def dryrun(self, job: PreparedJob) -> LaunchPlan:
        dist = job.spec.distribution
        common = common_plan(job, master_addr="127.0.0.1", master_port=free_port())
        warning = self.gpu_fallback(job)
        if warning:
            common = common.replace(use_gpu=False, dist_backend="gloo" if common.dist_backend == "nccl" else common.dist_backend)
        mode = common.mode
        # under mpi one mpirun (run by node 0's launcher) starts every simulated node's ranks
        node_ranks = [0] if mode == "mpi" else list(range(dist.node_count))
        if mode == "mpi":
            common = common.replace(hosts=[("localhost", dist.world_size)])
        nodes = []
        for node_rank in node_ranks:
            plan = common.replace(node_rank=node_rank)
            plan_path = RunPaths(job.workdir).plan(node_rank)
            nodes.append(
                NodeLaunch(node_rank=node_rank, plan=plan, argv=launcher_argv(job.launcher_python, plan_path))
            )
        return LaunchPlan(target=self.name, nodes=nodes, files={GPU_FALLBACK: warning} if warning else {})

    def schedule(self, plan: LaunchPlan) -> LocalHandle:
        from torchyard.launch.launcher import fork_launcher  # noqa: PLC0415

        warnings = [plan.files[GPU_FALLBACK]] if GPU_FALLBACK in plan.files else []
        for warning in warnings:  # the first line of rank 0's log, which show_output streams
            log = RunPaths(plan.nodes[0].plan.workdir).rank_log(0)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "a") as fh:
                fh.write(f"torchyard: WARNING: {warning}\n")
        pids = []
        for node in plan.nodes:
            with open(node.argv[-1], "wb") as fh:  # the plan, for the record (and for a by-hand rerun)
                fh.write(node.plan.to_json())
            pids.append(fork_launcher(node.plan))  # a launcher per node, forked: no Python start-up
        return LocalHandle(pids, [n.plan.status_path for n in plan.nodes], warnings)


class LocalHandle(Handle):
    def __init__(self, pids: list[int], status_paths: list[str], warnings: list[str] | None = None) -> None:
        self.codes: dict[int, int | None] = dict.fromkeys(pids)
        self.status_paths = status_paths
        self.warnings = list(warnings or [])
        self._canceled = False

    def details(self) -> dict[str, Any]:
        """``get_details()["compute"]``: the GPU fallback's warning, when there was one."""
        return {"warnings": list(self.warnings)} if self.warnings else {}

    def poll(self) -> int | None:
        for pid, code in self.codes.items():
            if code is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    rc = os.waitstatus_to_exitcode(status)
                    self.codes[pid] = 128 - rc if rc < 0 else rc
        failed = [c for c in self.codes.values() if c not in (None, 0)]
        if failed and not self._canceled:
            self.cancel()  # one node failed: stop the others now
        if any(c is None for c in self.codes.values()):
            return None
        return failed[0] if failed else 0

    def cancel(self) -> None:
        self._canceled = True
        for pid, code in self.codes.items():
            if code is None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def node_statuses(self) -> list[dict[str, Any]]:
        out = []
        for path in self.status_paths:
            try:
                with open(path) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
        return out
