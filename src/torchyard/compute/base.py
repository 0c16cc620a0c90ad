"""The compute-target interface: ``prepare()`` is pure (what would run), ``submit()`` runs it.

A target declares its capabilities as data; :meth:`ComputeTarget.check` is the one place a JobSpec
is checked against them. Cancel is idempotent.
"""

from __future__ import annotations

import abc
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torchyard.errors import NotSupportedError, SpecError
from torchyard.launch.plan import NodeFill, NodePlan
from torchyard.paths import RunPaths
from torchyard.records import JsonRecords
from torchyard.spec.job import JobSpec

#: targets that exist in every workspace without being attached
BUILTIN_TARGETS = ("local",)


def attached_records(workspace_path: str) -> JsonRecords:
    """The attached targets' records: ``<workspace>/computes/NAME.json`` (kind and settings)."""
    return JsonRecords(os.path.join(workspace_path, "computes"), "compute target")


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    max_nodes: int | None = None  # None: as many as the target has
    gpu: bool = False
    backends: frozenset[str] = frozenset({"pytorch"})
    launchers: frozenset[str] = frozenset({"torchyard"})


@dataclass(frozen=True, kw_only=True)
class PreparedJob:
    """Everything a target needs to place a run: the spec and where the run's files are."""

    run_id: str
    experiment: str
    workspace: str
    workdir: str
    spec: JobSpec
    rank_argv: list[str]
    launcher_python: str
    rank_python: str = ""  # the interpreter in rank_argv (targets whose nodes have their own swap it)


@dataclass(frozen=True, kw_only=True)
class NodeLaunch:
    node_rank: int
    plan: NodePlan
    argv: list[str]


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """The side-effect-free result of ``prepare()``; printable as a dry run."""

    target: str
    nodes: list[NodeLaunch]
    files: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"compute target: {self.target}"]
        for node in self.nodes:
            lines.append(f"node {node.node_rank}: {shlex.join(node.argv)}")
            lines.append(json.dumps(node.plan.to_dict(), indent=2, sort_keys=True))
        for path, content in self.files.items():
            lines.append(f"--- {path}\n{content}")
        return "\n".join(lines)


class Handle(abc.ABC):
    """A submitted job on a target."""

    @abc.abstractmethod
    def poll(self) -> int | None:
        """None while running; the job's exit code once every node has finished."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop every rank on every node. Idempotent."""

    @abc.abstractmethod
    def node_statuses(self) -> list[dict[str, Any]]:
        """What each node's launcher reported (see launcher.py), for the nodes that reported."""

    def queued(self) -> str | None:
        """While the target waits for resources: why ("waiting for 3 nodes ..."); None once placed."""
        return None

    def ended_by(self) -> tuple[str, str] | None:
        """``("Failed" | "Canceled", reason)`` when the target itself ended the job (a Slurm TIMEOUT
        or NODE_FAIL, an scancel from outside torchyard, a dead Ray node); None otherwise."""
        return None

    def details(self) -> dict[str, Any]:
        """What the target wants recorded with the run (``get_details()["compute"]``)."""
        return {}

    def sync(self) -> None:
        """Bring what the nodes wrote since the last call (logs, metric journals) into the run's folder.

        Called at every ingest tick; targets whose nodes write into the run's folder need nothing."""
        return None

    def collect(self) -> None:
        """Bring the nodes' ``outputs/`` into the run's folder; called once, at Finalizing."""
        return None

    def release(self) -> None:
        """Free whatever the job still holds on the target (placement groups, actors, allocations).

        Called exactly once after the job ended, whatever the outcome. Must not raise."""
        return None


class ComputeTarget(abc.ABC):
    """Where runs execute. Subclasses are configuration objects: ``to_config()`` is what
    :meth:`attach` stores in the workspace and the constructor's keywords take it back."""

    kind: ClassVar[str]
    capabilities: Capabilities

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind

    @staticmethod
    def attach(workspace: Any, name: str, target: ComputeTarget) -> ComputeTarget:
        """Register ``target`` under ``name`` in ``workspace`` (Azure ML's ``ComputeTarget.attach``).

        Attaching a name again replaces its settings; runs already submitted keep theirs."""
        if name in BUILTIN_TARGETS:
            raise SpecError("name", f"{name!r} is built in; attach the target under another name")
        if not isinstance(target, ComputeTarget):
            raise SpecError("target", f"expected a compute target such as RayCompute(...), got {type(target).__name__}")
        path = workspace if isinstance(workspace, str) else workspace.path
        attached_records(path).put(name, {"name": name, "kind": target.kind, "config": target.to_config(),
                                          "attached": time.time()})
        return type(target)(name=name, **target.to_config())

    def to_config(self) -> dict[str, Any]:
        """The constructor keywords that recreate this target (JSON-able)."""
        return {}

    def check(self, spec: JobSpec) -> None:
        """Raise NotSupportedError naming the field when ``spec`` asks for what this target lacks."""
        caps = self.capabilities
        dist = spec.distribution
        if caps.max_nodes is not None and dist.node_count > caps.max_nodes:
            raise NotSupportedError(
                "node_count", f"{dist.node_count} nodes asked for; compute target {self.name!r} has {caps.max_nodes}"
            )
        if spec.use_gpu and not caps.gpu:
            raise NotSupportedError("use_gpu", f"compute target {self.name!r} has no GPU")
        if dist.backend is not None and dist.backend not in caps.backends:
            raise NotSupportedError(
                "distributed_backend",
                f"backend {dist.backend!r} is not available on {self.name!r} ({self.backend_hint(dist.backend)})",
            )
        if dist.launcher not in caps.launchers:
            raise NotSupportedError(
                "launcher", f"launcher {dist.launcher!r} is not available on {self.name!r} ({self.backend_hint(dist.launcher)})"
            )

    def backend_hint(self, what: str) -> str:
        return f"it supports {', '.join(sorted(self.capabilities.backends | self.capabilities.launchers))}"

    @abc.abstractmethod
    def prepare(self, job: PreparedJob) -> LaunchPlan: ...

    @abc.abstractmethod
    def submit(self, plan: LaunchPlan) -> Handle: ...

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.to_config()}


def launch_mode(spec: JobSpec) -> str:
    """How a node's launcher starts ranks: ``direct``, ``mpi`` (node 0 runs mpirun) or ``torchrun``."""
    if spec.distribution.backend == "mpi":
        return "mpi"
    return "torchrun" if spec.distribution.launcher == "torchrun" else "direct"


def common_plan(job: PreparedJob, *, master_addr: str, master_port: int, workdir: str | None = None,
                fill: NodeFill | None = None) -> NodePlan:
    """The launcher plan every node of ``job`` shares (node 0's; see launch/plan.py). Targets set
    ``node_rank`` per node (or name it in ``fill``) and, under mpi, ``hosts``."""
    spec = job.spec
    dist = spec.distribution
    mode = launch_mode(spec)
    return NodePlan(
        run_id=job.run_id,
        experiment=job.experiment,
        workspace=job.workspace,
        workdir=workdir or job.workdir,
        master_addr=master_addr,
        master_port=master_port,
        node_count=dist.node_count,
        nproc=dist.process_count_per_node,
        dist_backend="mpi" if mode == "mpi" else dist.communication_backend,
        user_env=dict(spec.environment_variables),
        use_gpu=spec.use_gpu,
        argv=list(job.rank_argv),
        mode=mode,  # type: ignore[arg-type]
        max_restarts=dist.max_restarts,
        fill=fill or NodeFill(),
    )


def launcher_argv(python: str, plan_path: str) -> list[str]:
    return [python, "-m", "torchyard.launch.launcher", plan_path]


def status_path(workdir: str, node_rank: int) -> str:
    return RunPaths(workdir).node_report(node_rank)
