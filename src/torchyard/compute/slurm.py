"""Slurm compute target: one sbatch job per run, one torchyard launcher per node through ``srun``.

``prepare()`` renders the sbatch script (pure: :func:`render_sbatch`; ``torchyard submit --dry-run``
prints it); ``submit()`` writes it and the launcher plan into the run's folder on the shared
filesystem and calls ``sbatch``; the :class:`SlurmHandle` follows the job with ``scontrol`` (no
accounting needed), cancels with ``scancel`` and reads the launchers' status files.

What only the allocation knows is left to the node: each launcher's node rank is ``$SLURM_NODEID``
and the rendezvous address is the first node's ``NodeAddr`` (node names need not resolve), both
filled in by the launcher from its environment (``${NAME}`` values in its plan).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
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
    launcher_argv,
)
from torchyard.compute.mirror import Mirror
from torchyard.errors import ComputeError
from torchyard.launch.plan import NodeFill
from torchyard.paths import RunPaths
from torchyard.status import RunStatus

CLIENTS = ("sbatch", "squeue", "scontrol", "scancel")
INSTALL_HINT = (
    "run torchyard where the Slurm client commands work (a login node), "
    "or install them: apt-get install slurm-client (Debian/Ubuntu; slurm-wlm for a whole cluster)"
)
#: sbatch options torchyard sets from the job itself; extra_sbatch_args may not repeat them
MANAGED = (
    "--job-name", "-J", "--nodes", "-N", "--ntasks", "-n", "--ntasks-per-node", "--chdir", "-D",
    "--output", "-o", "--error", "-e", "--open-mode", "--requeue", "--no-requeue", "--parsable",
)  # fmt: skip
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$")
_WORD = re.compile(r"^[A-Za-z0-9_.,:+=@%-]+$")
#: Slurm states after which nothing of the job runs any more
TERMINAL = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
})  # fmt: skip
#: states in which the job waits for (or gets back) its allocation
WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
#: Slurm ended the job itself: the run fails naming the state, whatever the ranks did when killed
SLURM_FAILURES = frozenset({"TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"})
#: scontrol is asked every POLL_MIN s after a change, backing off to POLL_MAX s while nothing changes
#: (back to POLL_MIN once a launcher has reported its end): many runs must not flood slurmctld
POLL_MIN = 0.5
POLL_MAX = 5.0
#: how long a job may show COMPLETING (its processes being killed) before the handle stops waiting
COMPLETING_WAIT = 60.0
#: mpirun takes the hostfile of node addresses as it is (not Slurm's node names) and reaches other
#: nodes with its ssh launcher; nodes whose address is this machine's are started locally
MPI_ARGS = ["--mca", "ras", "^slurm", "--mca", "plm", "rsh"]
#: node launchers rewrite their heartbeat file this often; one unchanged for LOST_AFTER s, on a node
#: whose slurmd no longer accepts connections, means the node is gone (Slurm itself notices only
#: after its SlurmdTimeout, minutes by default)
HEARTBEAT_SECONDS = 1.0
LOST_AFTER = 6.0
#: how often the supervisor rewrites its own heartbeat for the launchers (``orphan_timeout``)
SUPERVISOR_BEAT = 2.0
MPI_LAUNCHES = ("srun", "mpirun")
NODE_ADDR = "scontrol show node \"$1\" -o | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p'"


def _check_extra(args: list[str]) -> str | None:
    for arg in args:
        if not arg.startswith("-") or "\n" in arg:
            return f"each entry must be one sbatch option such as --mem=8G, got {arg!r}"
        option = arg.split("=", 1)[0]
        if option in MANAGED or (len(option) > 2 and option[:2] in MANAGED and not option.startswith("--")):
            return f"{option} is set by torchyard from the job (nodes, name, folder, output); remove it"
    return None


class SlurmCompute(ComputeTarget):
    """A Slurm cluster reached through ``sbatch``/``squeue``/``scontrol``/``scancel`` on this machine.

    ``partition``, ``account``, ``qos``: sbatch's options of those names (None: the cluster's default).
    ``time_limit``: sbatch ``--time`` (e.g. ``"01:00:00"``) for jobs that set no
    ``max_run_duration_seconds``. ``extra_sbatch_args``: more ``#SBATCH`` lines, e.g.
    ``["--mem=8G", "--constraint=a100"]``. ``shared_dir``: a folder every node sees, where each run's
    folder is placed (default: the workspace folder, which must then be on the shared filesystem).
    ``python``: the interpreter with torchyard on the nodes (default: the submitting one).
    ``mpi_launch``: how the ranks of an mpi job start: ``"srun"`` (Slurm starts them, ``srun
    --mpi=pmix``; no ssh between nodes) or ``"mpirun"`` (node 0 runs mpirun over ssh to the others).
    ``orphan_timeout``: the job's launchers end it when the run's supervisor (on the submitting
    machine) has been silent this long — torchyard marks such a run Failed after 300 s — so a lost
    supervisor does not leave the job running to its ``--time``; 0 keeps it running.
    ``nice_per_priority``: a job's ``priority`` p becomes ``sbatch --nice=-p×N`` (0, the default:
    not passed). Slurm lets any user lower their own jobs (p < 0, a positive nice); raising one
    (p > 0) needs Slurm operator rights, and sbatch refuses it otherwise.
    """

    kind = "slurm"
    features = Feature.MULTI_NODE | Feature.GPU | Feature.MPI | Feature.QUEUEING | Feature.SHARED_FS | Feature.REATTACH
    options = (
        Option(name="partition", type=str, help="sbatch --partition (default: the cluster's default)",
               check=lambda v: None if _WORD.match(v) else "expected a Slurm partition name"),
        Option(name="account", type=str, help="sbatch --account",
               check=lambda v: None if _WORD.match(v) else "expected a Slurm account name"),
        Option(name="qos", type=str, help="sbatch --qos",
               check=lambda v: None if _WORD.match(v) else "expected a Slurm qos name"),
        Option(name="time_limit", type=str, example="01:00:00",
               help="sbatch --time for jobs that set no max_run_duration_seconds",
               check=lambda v: None if _TIME.match(v) else
               "expected a Slurm time such as 90 (minutes), 01:30:00 or 2-00:00:00"),
        Option(name="extra_sbatch_args", type=list, flag="--sbatch-arg", example="--mem=8G",
               help="more #SBATCH lines, one option each (repeatable)", check=_check_extra),
        Option(name="shared_dir", type=str, help="a folder every node sees (default: the workspace folder)",
               check=lambda v: None if v else "expected a folder path"),
        Option(name="python", type=str, help="the Python on the nodes that has torchyard (default: this one)",
               check=lambda v: None if v and "\n" not in v else "expected the path of a Python interpreter on the nodes"),
        Option(name="orphan_timeout", type=float, default=300.0,
               help="end the job when the run's supervisor has been silent this many seconds (0: never)",
               check=lambda v: None if v == 0 or v >= 5 else "expected 0 (never) or at least 5 seconds"),
        Option(name="mpi_launch", type=str, default="srun", choices=MPI_LAUNCHES,
               help="how mpi ranks start: srun --mpi=pmix (Slurm itself) or mpirun over ssh between the nodes"),
        Option(name="nice_per_priority", type=int, default=0, example="100",
               help="map a job's priority p to sbatch --nice=-p*N (0: not mapped; p > 0 needs operator rights)",
               check=lambda v: None if 0 <= v <= 1_000_000 else "expected 0 (not mapped) up to 1000000"),
    )

    partition: str | None
    account: str | None
    qos: str | None
    time_limit: str | None
    extra_sbatch_args: list[str]
    shared_dir: str | None
    python: str | None
    orphan_timeout: float
    mpi_launch: str
    nice_per_priority: int

    def __init__(
        self,
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        time_limit: str | None = None,
        extra_sbatch_args: list[str] | tuple[str, ...] | None = None,
        shared_dir: str | None = None,
        python: str | None = None,
        mpi_launch: str = "srun",
        orphan_timeout: float = 300.0,
        nice_per_priority: int = 0,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name, partition=partition, account=account, qos=qos, time_limit=time_limit,
                         extra_sbatch_args=list(extra_sbatch_args) if isinstance(extra_sbatch_args, tuple)
                         else extra_sbatch_args, shared_dir=shared_dir, python=python, mpi_launch=mpi_launch,
                         orphan_timeout=orphan_timeout, nice_per_priority=nice_per_priority)
        if self.shared_dir is not None:
            self.shared_dir = os.path.abspath(os.path.expanduser(self.shared_dir))

    def check(self, spec: Any) -> None:
        super().check(spec)
        missing = [c for c in CLIENTS if shutil.which(c) is None]
        if missing:
            raise ComputeError(f"compute target {self.name!r}: {', '.join(missing)} not found on PATH; {INSTALL_HINT}")

    # ---- prepare: pure ---------------------------------------------------------------------------

    def shares_files(self, workspace: str) -> bool:
        """The nodes see the workspace only when it is the shared folder (or no other is named)."""
        return self.shared_dir is None or _same_path(self.shared_dir, workspace)

    def node_cache(self) -> str | None:
        return os.path.join(self.shared_dir, "cache") if self.shared_dir else None

    def shared_paths(self, workspace: str) -> tuple[str, ...] | None:
        """``shared_dir`` when it is apart from the workspace; else every folder (the workspace is on
        the cluster's shared filesystem, and so, Slurm assumes, is the rest)."""
        return None if self.shares_files(workspace) else (self.shared_dir or "",)

    def node_workdir(self, job: PreparedJob) -> str:
        """Where the run's folder is for the nodes: the run's own folder when the workspace is the
        shared folder, else ``<shared_dir>/runs/<run_id>``."""
        if self.shared_dir is None or _same_path(self.shared_dir, job.workspace):
            return job.workdir
        return os.path.join(self.shared_dir, "runs", job.run_id)

    def dryrun(self, job: PreparedJob) -> SlurmLaunchPlan:
        dist = job.spec.distribution
        workdir = self.node_workdir(job)
        python = self.python or job.launcher_python
        rank_argv = list(job.rank_argv)
        if self.python and rank_argv and rank_argv[0] == job.launcher_python:
            rank_argv[0] = self.python  # the default environment: the nodes' interpreter
        job = PreparedJob(
            run_id=job.run_id, experiment=job.experiment, workspace=job.workspace, workdir=job.workdir,
            spec=job.spec, rank_argv=rank_argv, launcher_python=python, bootstrap=job.bootstrap,
        )  # fmt: skip
        # node 0's address and a free port are found by the batch script; each task's node rank is
        # Slurm's SLURM_NODEID; under mpi, node 0's launcher runs mpirun over every node's address
        fill = NodeFill(master_addr="TORCHYARD_MASTER_ADDR", master_port="TORCHYARD_MASTER_PORT")
        plan = common_plan(job, master_addr="", master_port=0, workdir=workdir, fill=fill)
        paths = RunPaths(workdir)
        plan_path = paths.target_file("plan_slurm.json")
        script_path = paths.target_file("job.sbatch")
        mpi = plan.mode == "mpi"
        plan = plan.replace(heartbeat_seconds=HEARTBEAT_SECONDS, orphan_after_seconds=self.orphan_timeout)
        if mpi and self.mpi_launch == "srun":
            plan = plan.replace(node_rank=0, mpi_launcher="srun", fill=fill)
        elif mpi:
            plan = plan.replace(node_rank=0, mpi_args=list(MPI_ARGS),
                                fill=NodeFill(master_addr=fill.master_addr, master_port=fill.master_port,
                                              hosts="TORCHYARD_HOSTS"))
        else:
            plan = plan.replace(fill=NodeFill(master_addr=fill.master_addr, master_port=fill.master_port,
                                              node_rank="SLURM_NODEID"))
        script = render_sbatch(self, job, workdir=workdir, plan_path=plan_path, python=python, mode=plan.mode)
        argv = launcher_argv(python, plan_path)
        node_ranks = [0] if mpi else list(range(dist.node_count))
        nodes = [
            NodeLaunch(node_rank=k, plan=plan, argv=argv if mpi else ["srun", f"(task on node {k})", *argv])
            for k in node_ranks
        ]
        return SlurmLaunchPlan(
            target=self.name, nodes=nodes, files={script_path: script}, script_path=script_path,
            plan_path=plan_path, local_workdir=job.workdir, node_workdir=workdir, node_count=dist.node_count,
        )  # fmt: skip

    # ---- submit ----------------------------------------------------------------------------------

    def reattach(self, state: dict[str, Any]) -> SlurmHandle | None:
        """The sbatch job a dead supervisor submitted, by its id; the launchers go on while the new
        supervisor's heartbeat reaches them within ``orphan_timeout``. None for another kind's state."""
        if state.get("kind") != "slurm" or not str(state.get("job_id", "")).isdigit():
            return None
        try:
            return SlurmHandle.adopt(state)
        except (KeyError, TypeError, ValueError):
            return None

    def schedule(self, plan: LaunchPlan) -> SlurmHandle:
        if not isinstance(plan, SlurmLaunchPlan):
            raise ComputeError(f"compute target {self.name!r} was given a plan it did not prepare")
        sbatch = shutil.which("sbatch")
        if sbatch is None:
            raise ComputeError(f"sbatch not found on PATH; {INSTALL_HINT}")
        if plan.node_workdir != plan.local_workdir:
            _copy_run_folder(plan.local_workdir, plan.node_workdir)
        node = RunPaths(plan.node_workdir)
        for folder in (node.logs, node.outputs, node.internal):
            os.makedirs(folder, exist_ok=True)
        with os.fdopen(os.open(plan.plan_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(plan.nodes[0].plan.to_dict(), fh, indent=2)  # presigned URLs, if any: owner only
        _beat(node.supervisor_alive)
        for path, content in plan.files.items():
            with open(path, "w") as fh:
                fh.write(content)
        try:
            proc = subprocess.run([sbatch, "--parsable", plan.script_path], cwd=plan.node_workdir,
                                  env=job_environment(plan), capture_output=True, text=True, timeout=120,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ComputeError("sbatch did not answer within 120 s: is slurmctld reachable (`sinfo`)?") from None
        if proc.returncode != 0:
            message = " ".join(line.removeprefix("sbatch: error: ").strip() for line in proc.stderr.splitlines() if line.strip())
            hint = ""
            if "partition" in message.lower():
                hint = " (`sinfo -s` lists the partitions; set it with --partition)"
            elif "account" in message.lower() or "qos" in message.lower():
                hint = " (`sacctmgr show assoc user=$USER` lists your accounts and QOS)"
            raise ComputeError(f"sbatch refused the job: {message or f'exit code {proc.returncode}'}{hint}")
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise ComputeError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
        with open(node.target_file("slurm_job_id"), "w") as fh:
            fh.write(job_id + "\n")
        return SlurmHandle(job_id, plan)


def job_environment(plan: LaunchPlan) -> dict[str, str]:
    """sbatch's environment, which Slurm hands to the job (``--export=ALL``): this process's, without
    the cloud credential variables unless a datastore of the job forwards them (``credentials=
    "forward"``); the nodes otherwise use their own."""
    from torchyard.data.datastore import CREDENTIAL_VARS  # noqa: PLC0415 - a list of names

    bootstrap = plan.nodes[0].plan.bootstrap if plan.nodes else None
    forward = set((bootstrap or {}).get("forward_env") or ())
    return {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS or k in forward}


@dataclass(frozen=True, kw_only=True)
class SlurmLaunchPlan(LaunchPlan):
    script_path: str
    plan_path: str
    local_workdir: str
    node_workdir: str
    node_count: int


def slurm_time(seconds: float) -> str:
    """sbatch ``--time`` for a run limited to ``seconds``: whole minutes, rounded up, plus one, so
    torchyard's own limit ends the run first (Canceled, as on local) and Slurm's is the backstop."""
    return str(math.ceil(seconds / 60) + 1)


def render_sbatch(target: SlurmCompute, job: PreparedJob, *, workdir: str, plan_path: str, python: str, mode: str) -> str:
    """The sbatch script of ``job`` (pure: the golden files pin it)."""
    spec = job.spec
    dist = spec.distribution
    q = shlex.quote
    opts = [
        f"--job-name={job.run_id}",
        f"--nodes={dist.node_count}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={dist.process_count_per_node}",
    ]
    if spec.use_gpu:
        opts.append(f"--gpus-per-node={dist.process_count_per_node}")
    if spec.max_run_duration_seconds:
        opts.append(f"--time={slurm_time(spec.max_run_duration_seconds)}")
    elif target.time_limit:
        opts.append(f"--time={target.time_limit}")
    for option, value in (("partition", target.partition), ("account", target.account), ("qos", target.qos)):
        if value:
            opts.append(f"--{option}={value}")
    if target.nice_per_priority and spec.priority:  # higher priority first: a lower nice
        opts.append(f"--nice={-spec.priority * target.nice_per_priority}")
    opts += [
        f"--chdir={workdir}",
        f"--output={os.path.join(workdir, 'logs', 'slurm.txt')}",
        "--open-mode=append",
        "--no-requeue",
        *target.extra_sbatch_args,
    ]
    lines = [
        "#!/bin/bash",
        f"# torchyard run {job.run_id} (experiment {job.experiment}), compute target {target.name!r}",
        *(f"#SBATCH {q(o)}" for o in opts),
        "set -eu",
        f"node_addr() {{ {NODE_ADDR}; }}",
        "# the rendezvous address: the first node's NodeAddr (node names need not resolve)",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'addr=$(node_addr "$first")',
        'export TORCHYARD_MASTER_ADDR="${addr:-$first}"',
        "export TORCHYARD_MASTER_PORT=$("
        + q(python)
        + " -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])')",
    ]
    launcher = f"{q(python)} -m torchyard.launch.launcher {q(plan_path)}"
    if mode == "mpi" and target.mpi_launch == "srun":
        lines += [
            'echo "torchyard: Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST (mpi ranks through srun --mpi=pmix)"',
            "# node 0's launcher starts every rank with srun --mpi=pmix",
            f"exec {launcher}",
        ]
    elif mode == "mpi":
        lines += [
            "# mpirun's hostfile: every node's address",
            'TORCHYARD_HOSTS=""',
            'for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do',
            '  addr=$(node_addr "$node")',
            '  TORCHYARD_HOSTS="$TORCHYARD_HOSTS ${addr:-$node}"',
            "done",
            "export TORCHYARD_HOSTS",
            'echo "torchyard: Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST (addresses:$TORCHYARD_HOSTS)"',
            "# node 0's launcher starts every rank with mpirun",
            f"exec {launcher}",
        ]
    else:
        gpus = f" --gpus-per-node={dist.process_count_per_node}" if spec.use_gpu else ""
        lines += [
            'echo "torchyard: Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, master $TORCHYARD_MASTER_ADDR:$TORCHYARD_MASTER_PORT"',
            "# one launcher per node; it starts the node's ranks. One failing task ends every task",
            f"exec srun --nodes={dist.node_count} --ntasks={dist.node_count} --ntasks-per-node=1 "
            f'--cpus-per-task="${{SLURM_CPUS_PER_TASK:-{dist.process_count_per_node}}}"{gpus} '
            f"--kill-on-bad-exit=1 {launcher}",
        ]
    return "\n".join(lines) + "\n"


def _beat(path: str) -> None:
    try:
        with open(path + ".tmp", "w") as fh:
            fh.write(f"{time.time():.3f}\n")
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # the folder is gone: the run is over


def _answers(addr: str, port: int) -> bool:
    """Whether something accepts a TCP connection at ``addr:port`` within a second."""
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return True
    except OSError:
        return False


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _copy_run_folder(src: str, dest: str) -> None:
    """The run's folder (its code and run.json) into the shared folder; hard links where possible."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dest, symlinks=True, copy_function=link, dirs_exist_ok=True)


# ---- following the job ---------------------------------------------------------------------------

_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9/:_]*)=(\S*)")


def parse_scontrol_job(text: str) -> dict[str, str]:
    """``scontrol show job ID -o`` → its fields (the first line; values without spaces are enough)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return {m.group(1): m.group(2) for m in _FIELD.finditer(line)}


def exit_code(field: str) -> int:
    """Slurm's ``ExitCode=E:S`` → a shell-style code (128 + S when a signal ended it)."""
    try:
        code, _, sig = field.partition(":")
        return 128 + int(sig) if sig and int(sig) else int(code)
    except ValueError:
        return 1


def queue_reason(state: str, reason: str) -> str:
    """``PENDING`` + ``ReqNodeNotAvail,_UnavailableNodes:n3`` → ``Slurm: PENDING (ReqNodeNotAvail, UnavailableNodes:n3)``."""
    if not reason or reason == "None":
        return f"Slurm: {state}"
    return f"Slurm: {state} ({reason.replace('_', ' ')})"


class SlurmHandle(Handle):
    """A submitted sbatch job, followed with ``scontrol show job`` (every 0.5 to 5 s, see POLL_MIN)."""

    def __init__(self, job_id: str, plan: SlurmLaunchPlan) -> None:
        self._setup(job_id, plan.node_workdir, plan.local_workdir, plan.node_count, plan.nodes[0].plan.mode == "mpi",
                    plan.nodes[0].plan.heartbeat_seconds > 0)

    @classmethod
    def adopt(cls, state: dict[str, Any]) -> SlurmHandle:
        """The handle of a job a dead supervisor submitted (its :meth:`reattach_state`)."""
        handle = cls.__new__(cls)
        handle._setup(str(state["job_id"]), str(state["node_workdir"]), str(state["local_workdir"]),
                      int(state["node_count"]), bool(state["mpi"]), bool(state["heartbeats"]))
        return handle

    def reattach_state(self) -> dict[str, Any] | None:
        """The job id and the folders: what a replacing supervisor follows the job by (REATTACH)."""
        return {"kind": "slurm", "job_id": self.job_id, "node_workdir": self.node_workdir,
                "local_workdir": self.local_workdir, "node_count": self.node_count, "mpi": self.mpi,
                "heartbeats": self.heartbeats}

    def _setup(self, job_id: str, node_workdir: str, local_workdir: str, node_count: int, mpi: bool,
               heartbeats: bool) -> None:
        self.job_id = job_id
        self.node_workdir = node_workdir
        self.local_workdir = local_workdir
        self.node_count = node_count
        self.mpi = mpi
        self.mirror = Mirror(local_workdir, 1)
        self.state = "PENDING"
        self.reason = "submitted"
        self.fields: dict[str, str] = {}
        self.rc: int | None = None
        self.gone = False  # the job left slurmctld's memory (MinJobAge) before we saw its end
        self.canceled = False
        self.released = False
        self.next_poll = 0.0
        self.last_poll = 0.0
        self.interval = POLL_MIN
        self.completing_since: float | None = None
        self.heartbeats = heartbeats
        self.beats: dict[int, tuple[str, float]] = {}  # node → (heartbeat seen, when it last changed)
        self.next_beat_check = 0.0
        self.next_alive = 0.0
        self.lost: str | None = None  # why a node is taken for gone

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"slurm_job_id": self.job_id, "slurm_state": self.state}
        if self.fields.get("NodeList"):
            out["slurm_nodes"] = self.fields["NodeList"]
        return out

    # ---- Slurm's view ----------------------------------------------------------------------------

    def _scontrol(self) -> dict[str, str] | None:
        """The job's fields; ``{}`` when Slurm no longer knows it; None when scontrol failed."""
        try:
            proc = subprocess.run(["scontrol", "show", "job", self.job_id, "-o"], capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0:
            return {} if "Invalid job id" in proc.stderr else None
        return parse_scontrol_job(proc.stdout)

    def _launcher_ended(self) -> bool:
        paths = RunPaths(self.node_workdir)
        return any(os.path.exists(paths.node_report(k)) for k in range(1 if self.mpi else self.node_count))

    def _refresh(self, force: bool = False) -> None:
        now = time.time()
        if self.rc is not None:
            return
        if now >= self.next_alive:  # the launchers end the job if this stops (orphan_timeout)
            self.next_alive = now + SUPERVISOR_BEAT
            _beat(RunPaths(self.node_workdir).supervisor_alive)
        if self.heartbeats and self.state == "RUNNING" and now >= self.next_beat_check:
            self.next_beat_check = now + POLL_MIN
            self._check_heartbeats(now)
            if self.rc is not None:
                return
        if not force and now < self.next_poll:
            soon = self.state == "RUNNING" and now >= self.last_poll + POLL_MIN and self._launcher_ended()
            if not soon:
                return
        self.last_poll = now
        before = (self.state, self.reason)
        self._ask()
        changed = (self.state, self.reason) != before or self.completing_since is not None
        self.interval = POLL_MIN if changed else min(POLL_MAX, self.interval * 1.5)
        self.next_poll = now + self.interval

    def _ask(self) -> None:
        now = time.time()
        fields = self._scontrol()
        if fields is None:
            return  # slurmctld busy or briefly unreachable: ask again next time
        if not fields:
            self._resolve_gone()
            return
        self.fields = fields
        state = fields.get("JobState", "UNKNOWN")
        self.reason = fields.get("Reason", "")
        if state == "COMPLETING":  # ended; its processes are being killed: wait for that, within bounds
            if self.completing_since is None:
                self.completing_since = now
            if now - self.completing_since < COMPLETING_WAIT:
                return
            self._resolve_gone()
            return
        self.state = state
        if state in TERMINAL:
            self.rc = exit_code(fields.get("ExitCode", "0:0"))
            if state == "COMPLETED":
                self.rc = 0
            elif self.rc == 0:
                self.rc = 1

    def _check_heartbeats(self, now: float) -> None:
        """A node whose launcher's heartbeat stopped changing, and whose slurmd no longer accepts a
        connection, is gone (its machine died): the job is cancelled and the run fails naming it.
        Time is this machine's own (when a change was seen), never the node's clock."""
        paths = RunPaths(self.node_workdir)
        for k in range(1 if self.mpi else self.node_count):
            if os.path.exists(paths.node_report(k)):
                continue  # that launcher ended and said so
            try:
                with open(paths.heartbeat(k)) as fh:
                    seen = fh.read()
            except OSError:
                continue  # not started yet
            last = self.beats.get(k)
            if last is None or last[0] != seen:
                self.beats[k] = (seen, now)
                continue
            quiet = now - last[1]
            if quiet < LOST_AFTER:
                continue
            name, addr, port = self._node_of(k)
            if addr and port and _answers(addr, port):
                continue  # the machine is there: its launcher is only slow; Slurm will tell
            where = f"Slurm node {name}, address {addr}" if name else "its Slurm node unknown"
            self.lost = (f"node {k} ({where}) stopped answering: no heartbeat for {quiet:.0f} s and its slurmd "
                         f"does not accept connections; Slurm job {self.job_id} was cancelled")
            self.state, self.rc = "NODE_LOST", 1
            try:
                subprocess.run(["scancel", self.job_id], capture_output=True, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
            return

    def _node_of(self, k: int) -> tuple[str, str, int]:
        """Node ``k`` of the job as Slurm names it, its NodeAddr and slurmd port ("", "", 0 if unknown)."""
        def ask(*args: str) -> str:
            try:
                return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=10,
                                      check=False).stdout
            except (OSError, subprocess.TimeoutExpired):
                return ""

        names = ask("show", "hostnames", self.fields.get("NodeList", "")).split()
        if k >= len(names):
            return "", "", 0
        fields = parse_scontrol_job(ask("show", "node", names[k], "-o"))
        port = fields.get("Port", "6818")
        return names[k], fields.get("NodeAddr", ""), int(port) if port.isdigit() else 6818

    def _resolve_gone(self) -> None:
        """Slurm forgot the job (or it hangs in COMPLETING): decide from the launchers' reports."""
        self.gone = True
        statuses = self.node_statuses()
        expected = 1 if self.mpi else self.node_count
        failures = [s for s in statuses if s.get("exit_code")]
        if failures:
            self.state = "FAILED"
            self.rc = int(failures[0]["exit_code"])
        elif len(statuses) >= expected and all(s.get("reason") == "completed" for s in statuses):
            self.state, self.rc = "COMPLETED", 0
        elif self.canceled:
            self.state, self.rc = "CANCELLED", 143
        else:
            self.rc = 1  # self.state keeps the last state seen

    # ---- the Handle interface --------------------------------------------------------------------

    def poll(self) -> int | None:
        self._refresh()
        return self.rc

    def queued(self) -> str | None:
        self._refresh()
        if self.rc is None and self.state in WAITING:
            return queue_reason(self.state, self.reason)
        return None

    def cancel(self) -> None:
        self.canceled = True
        if self.rc is not None:
            return
        try:
            subprocess.run(["scancel", self.job_id], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass  # release() tries again
        self.interval, self.next_poll = POLL_MIN, time.time() + POLL_MIN

    def ended_by(self) -> tuple[RunStatus, str] | None:
        if self.rc is None:
            return None
        state = self.state
        if self.lost:
            return (RunStatus.FAILED, self.lost)
        if state == "CANCELLED":
            if self.canceled:
                return None
            return (RunStatus.CANCELED, f"Slurm job {self.job_id} was cancelled outside torchyard (scancel)")
        if state in SLURM_FAILURES:
            what = {
                "TIMEOUT": f"reached its time limit ({self.fields.get('TimeLimit', '?')})",
                "NODE_FAIL": "lost a node",
                "OUT_OF_MEMORY": "ran out of memory",
                "PREEMPTED": "was preempted",
                "BOOT_FAIL": "could not boot its nodes",
                "DEADLINE": "missed its deadline",
            }[state]
            return (RunStatus.FAILED, f"Slurm job {self.job_id} ended {state}: it {what}")
        if self.rc != 0 and not any(s.get("first_failure") for s in self.node_statuses()):
            if self.gone and state not in TERMINAL:
                return (RunStatus.FAILED, f"Slurm job {self.job_id} left the queue (last seen {state}) without its "
                                  "launchers reporting; see logs/slurm.txt")
            return (RunStatus.FAILED, f"Slurm job {self.job_id} ended {state} (exit code {self.rc}) before any rank "
                              f"reported{self._slurm_log_hint()}")
        return None

    def _slurm_log_hint(self) -> str:
        path = os.path.join(self.node_workdir, "logs", "slurm.txt")
        try:
            with open(path, errors="replace") as fh:
                last = [line.strip() for line in fh.readlines()[-20:] if line.strip()]
        except OSError:
            return ""
        return f": {last[-1]}" if last else ""

    def node_statuses(self) -> list[dict[str, Any]]:
        paths = RunPaths(self.node_workdir)
        out = []
        for k in range(self.node_count):
            try:
                with open(paths.node_report(k)) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
        return out

    # ---- files (only when the nodes' folder is not the run's own) --------------------------------

    def sync(self) -> None:
        if self.node_workdir != self.local_workdir:  # every node writes into the one shared folder
            self.mirror.pull_folder(0, self.node_workdir)

    def collect(self) -> None:
        if self.node_workdir == self.local_workdir:
            return
        self.sync()
        self.mirror.collect_folder(0, self.node_workdir)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            if self.rc is None:  # the supervisor stops following a job that still runs: end it
                subprocess.run(["scancel", self.job_id], capture_output=True, timeout=30, check=False)
            if self.node_workdir != self.local_workdir:
                self._remove_node_folder()
        except Exception as err:  # release must not raise
            print(f"torchyard: releasing Slurm job {self.job_id}: {err}", flush=True)

    def _remove_node_folder(self) -> None:
        # the job's processes are gone once Slurm reports its end; keep the folder if it may still run
        if self.rc is None:
            return
        shutil.rmtree(self.node_workdir, ignore_errors=True)

