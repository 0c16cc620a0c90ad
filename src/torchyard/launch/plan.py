"""What a node's launcher is told: the typed :class:`NodePlan` (msgspec; stdlib + msgspec only).

Facts only the node knows when it starts (its rank, node 0's address, the hosts of an mpi job) are
plain fields with a value, or are named in :class:`NodeFill`: the environment variable the node reads
each one from (Slurm: ``SLURM_NODEID``; a Kubernetes Job: a variable set in its pod). The plan says
which, as data: there are no ``${NAME}`` templates to expand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from torchyard.paths import RunPaths

Mode = Literal["direct", "mpi", "torchrun"]

#: placeholders the node bootstrap fills (the interpreter of the job's environment on this node, its
#: folder, and each input's and named output's path): ``${{environment.python}}``, ``${{inputs.NAME}}``
PYTHON = "${{environment.python}}"
BIN = "${{environment.bin}}"
_PLACEHOLDER = re.compile(r"\$\{\{\s*((?:environment|inputs|outputs)\.[A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class NodeFill(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which node-only facts the node fills in, and from which of its environment variables."""

    node_rank: str | None = None
    master_addr: str | None = None
    master_port: str | None = None
    hosts: str | None = None  # a whitespace-separated list of host addresses, each with ``nproc`` slots


class NodePlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One node's launch: identity, rendezvous, ranks, the command they run, how they are started."""

    run_id: str
    experiment: str
    workspace: str
    workdir: str
    node_rank: int = 0
    node_count: int = 1
    nproc: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    dist_backend: str | None = None
    user_env: dict[str, str] = {}
    use_gpu: bool = False
    argv: list[str] = []
    mode: Mode = "direct"
    max_restarts: int = 0
    grace_seconds: float = 3.0
    hosts: list[tuple[str, int]] = []  # under mpi: (host, slots) for mpirun's hostfile
    mpirun: str = "mpirun"
    mpi_args: list[str] = []
    #: how node 0 starts every rank under mpi: ``mpirun`` (its hostfile, rsh/ssh or a target's
    #: remote shell) or ``srun`` (Slurm starts them itself, PMIx wire-up: ``srun --mpi=pmix``)
    mpi_launcher: Literal["mpirun", "srun"] = "mpirun"
    #: seconds between the launcher's heartbeats (``RunPaths.heartbeat``); 0: none
    heartbeat_seconds: float = 0.0
    #: with heartbeats: stop the node (its ranks) when the supervisor's own heartbeat file
    #: (``RunPaths.supervisor_alive``), once seen, has not changed for this long; 0: never
    orphan_after_seconds: float = 0.0
    #: the launcher goes on when its parent (the supervisor) dies, for a new supervisor to adopt
    #: (local compute's REATTACH); otherwise it stops the node's ranks then
    outlives_supervisor: bool = False
    #: the stop's grace period when the run is preempted (``RunPaths.preempted`` exists): the ranks'
    #: time to commit a checkpoint after SIGTERM
    preempt_grace_seconds: float = 60.0
    fill: NodeFill = NodeFill()
    #: when set, the node bootstrap (torchyard.runtime.bootstrap) runs first with this request: the
    #: job's environment and inputs are placed on the node, and the placeholders filled from its result
    bootstrap: dict[str, Any] | None = None
    #: the team server nodes report to (``torchyard.compute.mirror_push``, with the run's token from
    #: ``TORCHYARD_RUN_TOKEN``), for targets whose nodes only reach its HTTP API; None: not used
    report_url: str | None = None

    def placed(self, result: Mapping[str, Any]) -> NodePlan:
        """This plan with the bootstrap's ``result`` filled into the rank command and variables."""
        values = {"environment.python": str(result["python"]), "environment.bin": str(result["bin"]),
                  **{str(k): str(v) for k, v in dict(result.get("paths") or {}).items()}}

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text) if "${{" in text else text

        return self.replace(argv=[fill(a) for a in self.argv], user_env={k: fill(v) for k, v in self.user_env.items()},
                            bootstrap=None)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.workdir)

    @property
    def status_path(self) -> str:
        """Where the launcher writes its report when the node ends."""
        return self.paths.node_report(self.node_rank)

    def on_node(self, environ: Mapping[str, str] | None = None) -> NodePlan:
        """This plan with every :class:`NodeFill` fact read from ``environ`` (the node's environment).
        A missing variable is a SystemExit naming it: the node cannot start without it."""
        env = os.environ if environ is None else environ
        fill = self.fill
        if fill == NodeFill():
            return self

        def read(what: str, var: str) -> str:
            if var not in env:
                raise SystemExit(f"torchyard launcher: the plan's {what} comes from ${var}, which is not set on this node")
            return str(env[var])

        changes: dict[str, object] = {"fill": NodeFill()}
        if fill.node_rank:
            changes["node_rank"] = int(read("node_rank", fill.node_rank))
        if fill.master_addr:
            changes["master_addr"] = read("master_addr", fill.master_addr)
        if fill.master_port:
            changes["master_port"] = int(read("master_port", fill.master_port))
        if fill.hosts:
            slots: dict[str, int] = {}
            for host in read("hosts", fill.hosts).split():
                slots[host] = slots.get(host, 0) + self.nproc
            changes["hosts"] = list(slots.items())
        return msgspec.structs.replace(self, **changes)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = msgspec.to_builtins(self)
        return data

    @classmethod
    def from_json(cls, data: bytes | str) -> NodePlan:
        return msgspec.json.decode(data, type=cls)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> NodePlan:
        return msgspec.convert(dict(data), type=cls)

    def replace(self, **changes: object) -> NodePlan:
        return msgspec.structs.replace(self, **changes)
