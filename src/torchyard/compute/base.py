"""The compute-target interface (learned from torchx's Scheduler and submitit's JobEnvironment).

A target is a configuration object that declares, as data, what it can do (:class:`Feature`) and
what it is set with (:class:`Option`): the options drive its constructor's checks, ``to_config()``,
the ``torchyard compute add KIND`` flags and the README's option tables. Its methods:

* ``check(spec)`` — final: the spec against the features, NotSupportedError naming the field;
* ``dryrun(job)`` — pure: the target's request (sbatch text, Ray placement, ...) and one
  :class:`~torchyard.launch.plan.NodePlan` per node; what ``--dry-run`` prints, golden-tested;
* ``schedule(dryrun)`` — side effects only here; returns a :class:`Handle` (``handle.job_id``);
* ``handle.describe()`` — typed :class:`JobState`: phase, queue reason, the target's own verdict
  (a RunStatus) and the node reports; ``handle.cancel()`` is idempotent; ``handle.release()``
  never raises.

Logs, metric journals and node reports come back through the framework's one mirror channel
(compute/mirror.py); a target whose nodes share the run folder (``Feature.SHARED_FS``) needs none.
"""

from __future__ import annotations

import abc
import enum
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
from torchyard.status import RunStatus

#: targets that exist in every workspace without being attached
BUILTIN_TARGETS = ("local",)


def attached_records(workspace_path: str) -> JsonRecords:
    """The attached targets' records: ``<workspace>/computes/NAME.json`` (kind and settings)."""
    return JsonRecords(os.path.join(workspace_path, "computes"), "compute target")


class Feature(enum.Flag):
    """What a target can do; the runtime decides from these, never from a target's name."""

    NONE = 0
    MULTI_NODE = enum.auto()   # node_count > 1
    GPU = enum.auto()          # use_gpu
    MPI = enum.auto()          # the mpi backend (mpirun on node 0 reaches the other nodes)
    TORCHRUN = enum.auto()     # launcher="torchrun"
    QUEUEING = enum.auto()     # jobs may wait for resources (Queued with the target's reason)
    SHARED_FS = enum.auto()    # nodes see the run folder and the submitter's files
    ENV_ON_NODE = enum.auto()  # environments and inputs are placed on each node (by the node bootstrap)
    REATTACH = enum.auto()     # a fresh process can find a job again by its id


_MISSING: Any = object()


@dataclass(frozen=True, kw_only=True)
class Option:
    """One setting of a target: its constructor keyword, config key and ``compute add`` flag."""

    name: str
    type: type  # str, float, int, bool or list (of str)
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # the CLI flag; default ``--name-with-dashes``
    check: Any = None  # callable(value) -> an error message, or None when the value is fine
    example: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def convert(self, value: Any) -> Any:
        """``value`` checked (and normalized) for this option; SpecError naming it otherwise."""
        if value is None:
            if self.type is list:
                return []
            if self.type is bool:
                return bool(self.default)
            return None
        kind = self.type
        if kind is bool:
            if not isinstance(value, bool):
                raise SpecError(self.name, f"expected true or false, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(self.name, f"expected a number, got {value!r}")
            value = float(value)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(self.name, f"expected an integer, got {value!r}")
        elif kind is list:
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise SpecError(self.name, f"expected a list of strings, got {value!r}")
            value = list(value)
        elif not isinstance(value, kind):
            raise SpecError(self.name, f"expected a {kind.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise SpecError(self.name, f"unknown {self.name} {value!r}; use one of {', '.join(self.choices)}")
        if self.check is not None and (problem := self.check(value)):
            raise SpecError(self.name, problem)
        return value


class Phase(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    ENDED = "ended"


@dataclass(frozen=True)
class JobState:
    """What a target says of a job: ``phase`` (queued, running, ended), why it waits, its exit code
    once ended, and ``verdict`` when the target itself ended it (a Slurm TIMEOUT, an scancel from
    outside, a dead node): RunStatus.FAILED or CANCELED with ``reason``."""

    phase: Phase
    queue_reason: str | None = None
    exit_code: int | None = None
    verdict: RunStatus | None = None
    reason: str | None = None



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
    #: the node bootstrap's request when the environment and inputs are placed on the nodes
    bootstrap: dict[str, Any] | None = None
    #: the team server the nodes report to, when the target's nodes do so (``reports_over_http``)
    report_url: str | None = None


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
    """A scheduled job on a target: ``job_id``, :meth:`describe`, :meth:`cancel`, :meth:`release`.

    Subclasses answer the small questions (``poll``, ``queued``, ``ended_by``); ``describe``
    composes them into the typed :class:`JobState` the runtime reads."""

    job_id: str = ""

    def describe(self) -> JobState:
        """The job's state now (polls the target; never blocks for long)."""
        rc = self.poll()
        if rc is None:
            reason = self.queued()
            return JobState(Phase.QUEUED if reason is not None else Phase.RUNNING, queue_reason=reason)
        verdict = self.ended_by()
        if verdict is None:
            return JobState(Phase.ENDED, exit_code=rc)
        return JobState(Phase.ENDED, exit_code=rc, verdict=verdict[0], reason=verdict[1])

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

    def ended_by(self) -> tuple[RunStatus, str] | None:
        """``(RunStatus.FAILED | RunStatus.CANCELED, reason)`` when the target itself ended the job
        (a Slurm TIMEOUT or NODE_FAIL, an scancel from outside torchyard, a dead Ray node)."""
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

    def wait(self, timeout: float) -> bool:
        """Block for at most ``timeout`` seconds until the job may have moved on (a target that can be
        told, as Ray's object refs can); False, at once, when it cannot (the supervisor then sleeps its
        own tick). Lets a job start without waiting out a tick per stage."""
        return False

    def preemptions(self) -> list[str]:
        """Run ids the target chose to preempt so this waiting job can start (each named once; the
        runtime preempts them, ``torchyard cancel --requeue``'s path). Most targets: none."""
        return []

    def reattach_state(self) -> dict[str, Any] | None:
        """What :meth:`ComputeTarget.reattach` needs to find this job again from another process
        (JSON-able), once the job is started; None when the target cannot (no ``REATTACH``)."""
        return None


class ComputeTarget(abc.ABC):
    """Where runs execute. A subclass declares ``kind``, ``features`` and ``options``; the
    constructor takes the options as keywords (checked here, once), ``to_config()`` gives them back
    and :meth:`attach` stores them in the workspace."""

    kind: ClassVar[str]
    features: Feature = Feature.NONE
    options: ClassVar[tuple[Option, ...]] = ()
    #: install or setup hints by feature, shown when a job asks for what this target lacks
    hints: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str | None = None, **settings: Any) -> None:
        self.name = name or self.kind
        known = {o.name: o for o in self.options}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            offered = ", ".join(known) or "none"
            raise SpecError(unknown[0], f"{self.kind} compute targets take no option {unknown[0]!r} (options: {offered})")
        for option in self.options:
            value = settings.get(option.name, option.default)
            setattr(self, option.name, option.convert(value))

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
        return {o.name: getattr(self, o.name) for o in self.options}

    def check(self, spec: JobSpec) -> None:
        """Raise NotSupportedError naming the field when ``spec`` asks for what this target lacks."""
        have = self.features
        dist = spec.distribution
        wants = [
            (dist.node_count > 1, Feature.MULTI_NODE, "node_count", f"{dist.node_count} nodes asked for"),
            (spec.use_gpu, Feature.GPU, "use_gpu", "a GPU asked for"),
            (dist.backend == "mpi", Feature.MPI, "distributed_backend", "backend 'mpi' asked for"),
            (dist.launcher == "torchrun", Feature.TORCHRUN, "launcher", "launcher 'torchrun' asked for"),
        ]
        for wanted, feature, field_name, what in wants:
            if wanted and feature not in have:
                hint = self.hints.get(feature.name or "", "")
                raise NotSupportedError(
                    field_name, f"{what}; compute target {self.name!r} ({self.kind}) has no {feature.name}"
                    + (f": {hint}" if hint else "")
                )

    def shares_files(self, workspace: str) -> bool:
        """Whether this target's nodes see the submitter's files (the workspace, its environments, local
        data). Then the supervisor builds the environment and places inputs once, on this machine;
        otherwise the node bootstrap does it on every node. From ``Feature.SHARED_FS`` by default."""
        return Feature.SHARED_FS in self.features

    def node_cache(self) -> str | None:
        """Where the node bootstrap keeps environments and downloads (None: each node's default)."""
        return None

    def shared_paths(self, workspace: str) -> tuple[str, ...] | None:
        """The folders every node sees at the same path as the submitting machine (a cluster's shared
        filesystem). A local datastore is accepted at submit only when its folder is under one of
        them. None: every folder (the nodes share this machine's files). By default None when the
        nodes share the workspace, else no folder at all."""
        return None if self.shares_files(workspace) else ()

    def reports_over_http(self) -> bool:
        """Whether this target's nodes report (logs, metric journals, node reports) to the team server
        over HTTP with the run's own token, instead of through a channel the target moves itself (a
        shared folder, a Ray actor, a pod's log stream): for nodes that reach only the server's API.
        The supervisor then passes ``report_url`` in the plan and ``TORCHYARD_RUN_TOKEN`` in the
        environment of what it starts (never in a file); the launcher runs the pusher."""
        return False

    @abc.abstractmethod
    def dryrun(self, job: PreparedJob) -> LaunchPlan:
        """Pure: what would run (the target's request and each node's plan). No side effects."""

    def reattach(self, state: dict[str, Any]) -> Handle | None:
        """The handle of a job another process scheduled, from its :meth:`Handle.reattach_state` (a supervisor
        replacing a dead one); None when the job is gone or the target cannot (no ``REATTACH``)."""
        return None

    @abc.abstractmethod
    def schedule(self, plan: LaunchPlan) -> Handle:
        """Start the job ``dryrun`` described; the live :class:`Handle`."""

    def describe(self) -> dict[str, Any]:
        """The target's name, kind and settings, as ``torchyard compute show`` prints them."""
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
        preempt_grace_seconds=spec.preempt_grace_seconds,
        fill=fill or NodeFill(),
        bootstrap=job.bootstrap,
        report_url=job.report_url,
    )


def launcher_argv(python: str, plan_path: str) -> list[str]:
    return [python, "-m", "torchyard.launch.launcher", plan_path]


def status_path(workdir: str, node_rank: int) -> str:
    return RunPaths(workdir).node_report(node_rank)


def option_table(cls: type[ComputeTarget]) -> str:
    """The README's table of a kind's options (a unit test keeps the README equal to it)."""
    rows = ["| option | `compute add` flag | type | default | what |", "|---|---|---|---|---|"]
    for o in cls.options:
        kind = "list of str" if o.type is list else o.type.__name__
        if o.choices:
            kind = " \\| ".join(f"`{c}`" for c in o.choices)
        default = "" if o.default in (None, [], ()) else f"`{o.default!r}`"
        rows.append(f"| `{o.name}` | `{o.cli_flag}` | {kind} | {default} | {o.help} |")
    return "\n".join(rows)
