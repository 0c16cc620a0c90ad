"""The layout of a run's folder, in one place (L0: imports nothing of torchyard's).

A run's folder holds its code (the materialized snapshot) and, beside it::

    logs/                       rank_N.txt, torchrun_node_K.txt, environment.txt, inputs.txt ...
    outputs/                    the script's ./outputs: kept as run artifacts
    checkpoints/                TORCHYARD_CHECKPOINT_DIR: committed step_N/ folders (and step_N.tmp/ being written)
    named_outputs/NAME/         each named output's folder, uploaded at Finalizing
    inputs/NAME/                inputs downloaded for the run
    .torchyard-run/             torchyard's own files:
        run.json                what the supervisor needs (run id, workspace, store URL, the JobSpec)
        supervisor.log          the supervisor's own output
        supervisor.lock         held by the one supervisor of the run
        journal/rank_N.journal  each rank's metric journal (the truth until the store has it)
        exit/rank_N             under mpi: each rank's exit code and time (written by the rank shim)
        uploads/                files a script uploaded with run.upload_file()
        plan_node_K.json        node K's launcher plan
        launcher_node_K.json    node K's launcher report (written when the node ends)
        launcher_node_K.log     node K's launcher output on a target without the run folder
        hostfile                mpirun's hostfile
        stacks/                 each rank's faulthandler file and pid (hang stacks: logs/stacks_rank_N.txt)
        controller.*            a sweep controller's files (sweeps only)

:meth:`RunPaths.mirrored` names what a target whose nodes do not share the run folder brings back
while the run goes (append-only files, copied by their new bytes) and :meth:`RunPaths.reports` what
it copies whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

INTERNAL = ".torchyard-run"

#: folders of a run that are not its code (never part of a snapshot or of the code shipped to a node)
NOT_CODE = ("logs", "outputs", "named_outputs", "inputs", "checkpoints", INTERNAL)


@dataclass(frozen=True)
class RunPaths:
    """Every path under one run's folder. ``RunPaths(folder)``; all attributes are absolute when
    ``folder`` is. ``RunPaths.relative()`` gives the same names relative to the run folder."""

    root: str

    @staticmethod
    def relative() -> RunPaths:
        return RunPaths("")

    def _p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    # ---- what the user's script sees -------------------------------------------------------------
    @property
    def logs(self) -> str:
        return self._p("logs")

    @property
    def outputs(self) -> str:
        return self._p("outputs")

    @property
    def named_outputs(self) -> str:
        return self._p("named_outputs")

    def named_output(self, name: str) -> str:
        return self._p("named_outputs", name)

    def input(self, name: str) -> str:
        return self._p("inputs", name)

    def rank_log(self, rank: int) -> str:
        return self._p("logs", f"rank_{rank}.txt")

    def torchrun_log(self, node_rank: int) -> str:
        return self._p("logs", f"torchrun_node_{node_rank}.txt")

    @property
    def supervisor_error(self) -> str:
        """Why the supervisor ended when the store could not take the run's end (a disk full, say)."""
        return self._p(INTERNAL, "supervisor_error.txt")

    def log(self, name: str) -> str:
        return self._p("logs", name)

    @property
    def checkpoints(self) -> str:
        """TORCHYARD_CHECKPOINT_DIR: this node's checkpoints of the run (``step_N/``, committed)."""
        return self._p("checkpoints")

    def stacks_log(self, rank: int | str) -> str:
        """Rank N's Python stacks (every thread), written when the run was stopped as hung."""
        return self._p("logs", f"stacks_rank_{rank}.txt")

    # ---- torchyard's own -------------------------------------------------------------------------
    @property
    def internal(self) -> str:
        return self._p(INTERNAL)

    @property
    def run_info(self) -> str:
        return self._p(INTERNAL, "run.json")

    @property
    def supervisor_log(self) -> str:
        return self._p(INTERNAL, "supervisor.log")

    @property
    def supervisor_lock(self) -> str:
        return self._p(INTERNAL, "supervisor.lock")

    @property
    def journal(self) -> str:
        return self._p(INTERNAL, "journal")

    def rank_journal(self, rank: int) -> str:
        return self._p(INTERNAL, "journal", f"rank_{rank}.journal")

    @property
    def exit(self) -> str:
        return self._p(INTERNAL, "exit")

    def rank_exit(self, rank: int | str) -> str:
        return self._p(INTERNAL, "exit", f"rank_{rank}")

    @property
    def uploads(self) -> str:
        return self._p(INTERNAL, "uploads")

    def plan(self, node_rank: int | str) -> str:
        return self._p(INTERNAL, f"plan_node_{node_rank}.json")

    def node_report(self, node_rank: int | str) -> str:
        return self._p(INTERNAL, f"launcher_node_{node_rank}.json")

    def heartbeat(self, node_rank: int | str) -> str:
        """Node K's launcher rewrites this every second while it lives (targets that ask for it)."""
        return self._p(INTERNAL, f"alive_node_{node_rank}")

    @property
    def supervisor_alive(self) -> str:
        """The supervisor rewrites this while it follows the job (targets whose launchers watch it)."""
        return self._p(INTERNAL, "alive_supervisor")

    def launcher_log(self, node_rank: int | str) -> str:
        return self._p(INTERNAL, f"launcher_node_{node_rank}.log")

    @property
    def stacks(self) -> str:
        """TORCHYARD_STACKS_DIR: each rank's ``rank_N.txt`` (its faulthandler file) and ``rank_N.pid``."""
        return self._p(INTERNAL, "stacks")

    @property
    def stacks_request(self) -> str:
        """The supervisor creates this to ask every launcher to dump its ranks' stacks (a hang)."""
        return self._p(INTERNAL, "stacks", "request")

    def stacks_done(self, node_rank: int | str) -> str:
        """Node K's launcher creates this when its ranks' stacks are in ``logs/``."""
        return self._p(INTERNAL, "stacks", f"done_node_{node_rank}")

    @property
    def handle(self) -> str:
        """What a compute target needs to find the job again (``ComputeTarget.reattach``)."""
        return self._p(INTERNAL, "handle.json")

    @property
    def preempted(self) -> str:
        """Exists while the run is being preempted (``torchyard cancel --requeue``): the ranks'
        ``run.preempted``, TORCHYARD_PREEMPT_FLAG."""
        return self._p(INTERNAL, "preempted")

    @property
    def attempt(self) -> str:
        """The attempt under way (number, its checkpoint, start): for a supervisor that adopts it."""
        return self._p(INTERNAL, "attempt.json")

    @property
    def hostfile(self) -> str:
        return self._p(INTERNAL, "hostfile")

    def target_file(self, name: str) -> str:
        """A file a compute target keeps for the run (``slurm_job_id``, ``job.sbatch``)."""
        return self._p(INTERNAL, name)

    @property
    def controller_info(self) -> str:
        return self._p(INTERNAL, "controller.json")

    @property
    def controller_lock(self) -> str:
        return self._p(INTERNAL, "controller.lock")

    @property
    def controller_spawned(self) -> str:
        return self._p(INTERNAL, "controller.spawned")

    @property
    def controller_log(self) -> str:
        return self._p("logs", "controller.txt")

    # ---- what remote targets bring back ----------------------------------------------------------
    @staticmethod
    def mirrored() -> tuple[str, ...]:
        """Folders (relative to the run folder) whose files only grow while the run goes: logs,
        metric journals, mpi exit files. A target whose nodes do not share the run folder copies
        their new bytes back at every tick."""
        rel = RunPaths.relative()
        return (rel.logs, rel.journal, rel.exit)

    @staticmethod
    def reports_prefix() -> str:
        """Files starting with this (relative) prefix are node reports, copied whole when they change."""
        return os.path.join(INTERNAL, "launcher_node_")

    @staticmethod
    def collected() -> tuple[str, ...]:
        """Folders a node's results live in, brought back once at Finalizing: ``outputs/``, the
        named outputs (uploaded from here), the script's uploads and its committed checkpoints."""
        rel = RunPaths.relative()
        return (rel.outputs, rel.named_outputs, rel.uploads, rel.checkpoints)
