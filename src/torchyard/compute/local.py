"""Local compute: ranks are processes on this machine; ``node_count > 1`` runs one launcher per
simulated node, all on 127.0.0.1, so multi-node code can be debugged before a cluster exists."""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec

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
from torchyard.compute.local_alloc import Ledger, Request
from torchyard.compute.local_alloc import _alive as alive
from torchyard.errors import ComputeError
from torchyard.launch.contract import node_gpus
from torchyard.paths import RunPaths
from torchyard.spec.job import JobSpec

#: the dry run's entry for the use_gpu fallback (shown by --dry-run; written to the run's log)
GPU_FALLBACK = "warning: use_gpu"


def _at_least(low: int) -> Callable[[int], str | None]:
    return lambda value: None if value >= low else f"must be at least {low}, got {value}"


def machine_gpus(environ: Any = None) -> list[str]:
    """The GPUs a local target hands out when it declares no ``gpus``: CUDA_VISIBLE_DEVICES when set
    (the devices it names), else every device NVML counts (nvidia-ml-py installed and a GPU present),
    else none."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    if importlib.util.find_spec("pynvml") is None:
        return []
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(int(pynvml.nvmlDeviceGetCount()))]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  (no driver, no device: no GPUs to hand out)
        return []


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalCompute(ComputeTarget):
    """This machine: one forked launcher per (simulated) node, every node on 127.0.0.1.

    With GPUs (``gpus``, declared or found) or ``max_concurrent_runs``, runs are admitted one by one:
    a run gets its own GPUs (``use_gpu``: one per process) and waits Queued, with the reason, while
    they are taken (torchyard.compute.local_alloc; docs/guides/sharing-a-machine.md)."""

    kind = "local"
    options = (
        Option(name="gpus", type=int, check=_at_least(0), example="4",
               help="GPUs to hand out, one per process of a use_gpu run (devices 0..N-1, or the first N of "
                    "CUDA_VISIBLE_DEVICES); default: CUDA_VISIBLE_DEVICES, else NVML's count, else 0 (no allocation)"),
        Option(name="max_concurrent_runs", type=int, check=_at_least(1), example="2",
               help="at most this many runs at once on this target; the others wait Queued"),
    )
    hints = {
        "MPI": "mpirun not found on PATH; install Open MPI, e.g. apt-get install openmpi-bin",
        "TORCHRUN": "torch is not installed in this interpreter",
        "GPU": "no NVIDIA GPU is visible on this machine",
    }

    gpus: int | None
    max_concurrent_runs: int | None

    def __init__(self, name: str | None = None, **settings: Any) -> None:
        super().__init__(name, **settings)
        features = Feature.MULTI_NODE | Feature.SHARED_FS | Feature.REATTACH
        if shutil.which("mpirun"):
            features |= Feature.MPI
        if importlib.util.find_spec("torch") is not None:
            features |= Feature.TORCHRUN
        if self.devices() or (self.gpus is None and node_gpus(os.environ)):
            features |= Feature.GPU
        if self.allocates():
            features |= Feature.QUEUEING
        self.features = features

    def devices(self) -> list[str]:
        """The GPU ids this target hands out (empty: it allocates no GPUs)."""
        if self.gpus is None:
            return machine_gpus()
        visible = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
        return visible[: self.gpus] if len(visible) >= self.gpus else [str(i) for i in range(self.gpus)]

    def allocates(self) -> bool:
        """Whether runs are admitted through the ledger: GPUs to hand out, or a run limit."""
        return bool(self.devices()) or self.max_concurrent_runs is not None

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
        # the launchers go on when the supervisor dies; the next one adopts them (reattach)
        common = common_plan(job, master_addr="127.0.0.1", master_port=free_port()).replace(outlives_supervisor=True)
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
        warnings = [plan.files[GPU_FALLBACK]] if GPU_FALLBACK in plan.files else []
        for warning in warnings:  # the first line of rank 0's log, which show_output streams
            log = RunPaths(plan.nodes[0].plan.workdir).rank_log(0)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "a") as fh:
                fh.write(f"torchyard: WARNING: {warning}\n")
        for node in plan.nodes:
            with open(node.argv[-1], "wb") as fh:  # the plan, for the record (and for a by-hand rerun)
                fh.write(node.plan.to_json())
        status_paths = [n.plan.status_path for n in plan.nodes]
        record = RunPaths(plan.nodes[0].plan.workdir).handle
        if not self.allocates():  # as always: every run starts at once
            return LocalHandle(_fork_all(plan, None), status_paths, warnings, record=record)
        first = plan.nodes[0].plan
        devices = self.devices()
        need = first.node_count * first.nproc if first.use_gpu and devices else 0
        if need > len(devices):
            raise ComputeError(f"the job needs {need} GPUs (use_gpu, one per process) but compute target "
                               f"{self.name!r} has {len(devices)}: it would wait forever")
        user, submitted = _run_owner(first.workdir, first.run_id)
        request = Request(first.run_id, need, _priority(first.workdir), user, submitted,
                          preemptible=_spec_field(first.workdir, "preemptible") is True, experiment=first.experiment)
        admission = LocalAdmission(Ledger(_ledger_folder(first.workspace, first.workdir)), self.name, devices,
                              self.max_concurrent_runs, request,
                              lambda gpus: _fork_all(plan, gpus if devices else None))
        return LocalHandle([], status_paths, warnings, admission=admission, record=record)

    def reattach(self, state: dict[str, Any]) -> LocalHandle | None:
        """The launchers a dead supervisor started (``LocalHandle.reattach_state``), by pid and start time;
        their GPUs stay theirs (the ledger entry moves to this process). None when it names none."""
        try:
            launchers = [(int(pid), float(ctime)) for pid, ctime in state["launchers"]]
            status_paths = [str(p) for p in state["status_paths"]]
        except (KeyError, TypeError, ValueError):
            return None
        if not launchers:
            return None
        handle = LocalHandle([], status_paths, list(state.get("warnings") or []))
        handle.adopted = dict(launchers)
        handle.codes = dict.fromkeys(handle.adopted)
        if state.get("run_id") and state.get("ledger"):
            Ledger(str(state["ledger"])).adopt(str(state["run_id"]))
            handle.admission_state = (str(state["ledger"]), str(state["run_id"]))
        handle.gpus = state.get("gpus")
        return handle


def _fork_all(plan: LaunchPlan, gpus: list[str] | None) -> list[int]:
    """Fork a launcher per node (no Python start-up); with ``gpus`` (an allocating target) they see
    only those devices, the way a Slurm job step sees its own: CUDA_VISIBLE_DEVICES in their environment."""
    from torchyard.launch.launcher import fork_launcher  # noqa: PLC0415

    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # the forks inherit it; restored below
    try:
        return [fork_launcher(node.plan) for node in plan.nodes]
    finally:
        if gpus is not None:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before


def _ledger_folder(workspace: str, workdir: str) -> str:
    """``<workspace>/local_alloc``: the workspace folder, else the one holding ``runs/<id>``."""
    root = workspace if os.path.isdir(workspace) else os.path.dirname(os.path.dirname(os.path.abspath(workdir)))
    return os.path.join(root, "local_alloc")


def _priority(workdir: str) -> int:
    try:
        return int(_spec_field(workdir, "priority") or 0)
    except (ValueError, TypeError):
        return 0


def _spec_field(workdir: str, name: str) -> Any:
    """A field of the run's job as submitted (``run_info.json``); None when it cannot be read."""
    try:
        with open(RunPaths(workdir).run_info) as fh:
            return json.load(fh)["spec"].get(name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _run_owner(workdir: str, run_id: str) -> tuple[str, float]:
    """Who submitted the run (the team server's user, else this machine's user) and when (the run's
    record, ``run_info.json``, is written once, at submit)."""
    path = RunPaths(workdir).run_info
    try:
        with open(path) as fh:
            user = json.load(fh).get("created_by")
        submitted = os.stat(path).st_mtime
    except (OSError, ValueError, AttributeError):
        user, submitted = None, time.time()
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001  (no name for this uid)
            user = str(os.getuid())
    return str(user), submitted


class LocalAdmission:
    """A run waiting for its GPUs (or a run slot) on an allocating local target."""

    def __init__(self, ledger: Ledger, target: str, devices: list[str], max_runs: int | None, request: Request,
                 start: Callable[[list[str]], list[int]]) -> None:
        self.ledger, self.target, self.devices, self.max_runs = ledger, target, devices, max_runs
        self.request = request
        self.start = start
        self.reason: str | None = None
        self.gpus: list[str] | None = None
        #: runs to preempt for this one (each named once), taken by :meth:`LocalHandle.preemptions`
        self.victims: list[str] = []

    def try_start(self) -> list[int] | None:
        """The launchers' pids once the run is admitted (they are started then); None while it waits."""
        gpus, self.reason = self.ledger.try_start(self.target, self.devices, self.max_runs, self.request,
                                                  victims=self.victims)
        if gpus is None:
            return None
        self.gpus = gpus
        return self.start(gpus)

    def release(self) -> None:
        """Give the run's GPUs (or its place in the queue) back; never raises."""
        try:
            self.ledger.release(self.request.run_id)
        except Exception as err:  # noqa: BLE001  (a dead supervisor's entries are reclaimed anyway)
            print(f"torchyard: could not release {self.request.run_id}'s local allocation: {err}", flush=True)


class LocalHandle(Handle):
    """Local launchers by pid; with ``admission``, none until the run is admitted (it waits Queued)."""

    def __init__(self, pids: list[int], status_paths: list[str], warnings: list[str] | None = None,
                 admission: LocalAdmission | None = None, record: str | None = None) -> None:
        self.codes: dict[int, int | None] = dict.fromkeys(pids)
        self.status_paths = status_paths
        self.warnings = list(warnings or [])
        self._canceled = False
        self.admission = admission
        self._waiting = admission is not None
        self._released = False
        #: launchers this process did not start (a dead supervisor's), by pid: their start times
        self.adopted: dict[int, float] = {}
        #: an adopted run's ledger entry: (ledger folder, run id)
        self.admission_state: tuple[str, str] | None = None
        self.gpus: list[str] | None = None
        self.record = record
        #: the exit code of the first launcher seen failing (not a node stopped because of it)
        self.first_failure: int | None = None
        if pids:
            self._write_state()

    def reattach_state(self) -> dict[str, Any] | None:
        """The launchers (pid, start time), their reports and the run's ledger entry: what a
        supervisor that replaces this one adopts (``LocalCompute.reattach``)."""
        if not self.codes:
            return None
        import psutil  # noqa: PLC0415

        launchers = []
        for pid in self.codes:
            ctime = self.adopted.get(pid)
            if ctime is None:
                try:
                    ctime = psutil.Process(pid).create_time()
                except psutil.Error:
                    ctime = 0.0
            launchers.append([pid, ctime])
        out: dict[str, Any] = {"launchers": launchers, "status_paths": self.status_paths, "warnings": self.warnings}
        if self.admission is not None:
            out.update(run_id=self.admission.request.run_id, ledger=self.admission.ledger.folder,
                       gpus=self.admission.gpus)
        elif self.admission_state is not None:
            out.update(ledger=self.admission_state[0], run_id=self.admission_state[1], gpus=self.gpus)
        return out

    def _write_state(self) -> None:
        state = self.reattach_state() if self.record else None
        if state is None or self.record is None:
            return
        tmp = f"{self.record}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(state, fh)
            os.replace(tmp, self.record)
        except OSError as err:  # the run goes on; only a replacing supervisor would miss it
            print(f"torchyard: could not record the run's launchers in {self.record}: {err}", flush=True)

    def details(self) -> dict[str, Any]:
        """``get_details()["compute"]``: the GPU fallback's warning, the GPUs a run was given."""
        out: dict[str, Any] = {"warnings": list(self.warnings)} if self.warnings else {}
        if self.admission is not None and self.admission.gpus is not None:
            out["gpus"] = list(self.admission.gpus)
        elif self.gpus is not None:
            out["gpus"] = list(self.gpus)
        return out

    def preemptions(self) -> list[str]:
        """Runs the ledger chose to preempt for this one since the last call."""
        if self.admission is None or not self.admission.victims:
            return []
        out, self.admission.victims = self.admission.victims, []
        return out

    def queued(self) -> str | None:
        """Why the run waits for this machine's GPUs or a run slot; None once its launchers started."""
        if not self._waiting or self.admission is None:
            return None
        return self.admission.reason or "waiting for this machine's GPUs"

    def release(self) -> None:
        """Give back the run's GPUs (or its place in the queue)."""
        if self._released:
            return
        self._released = True
        if self.admission is not None:
            self.admission.release()
        elif self.admission_state is not None:
            try:
                Ledger(self.admission_state[0]).release(self.admission_state[1])
            except Exception as err:  # noqa: BLE001  (a dead supervisor's entries are reclaimed anyway)
                print(f"torchyard: could not release {self.admission_state[1]}'s local allocation: {err}", flush=True)

    def poll(self) -> int | None:
        if self._waiting:
            if self._canceled:
                self._waiting = False
                return 128 + signal.SIGTERM  # canceled (or given up) before it started
            assert self.admission is not None
            pids = self.admission.try_start()
            if pids is None:
                return None
            self._waiting = False
            self.codes = dict.fromkeys(pids)
            self._write_state()
            state = self.reattach_state() or {}
            try:
                self.admission.ledger.started(self.admission.request.run_id,
                                              [(int(p), float(c)) for p, c in state.get("launchers", [])])
            except Exception as err:  # noqa: BLE001  (only a replacing supervisor's window is at stake)
                print(f"torchyard: could not record the launchers in the ledger: {err}", flush=True)
        if not self.codes:
            return 128 + signal.SIGTERM if self._canceled else None
        for index, (pid, code) in enumerate(self.codes.items()):
            if code is None:
                if pid in self.adopted:
                    self.codes[pid] = self._adopted_code(pid, index)
                    continue
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    rc = os.waitstatus_to_exitcode(status)
                    self.codes[pid] = 128 - rc if rc < 0 else rc
        failed = [c for c in self.codes.values() if c not in (None, 0)]
        if failed and self.first_failure is None:
            self.first_failure = failed[0]  # the cause: the others' codes come from the stop below
        if failed and not self._canceled:
            self.cancel()  # one node failed: stop the others now
        if any(c is None for c in self.codes.values()):
            return None
        return self.first_failure if failed else 0

    def _adopted_code(self, pid: int, index: int) -> int | None:
        """An adopted launcher's exit code (its report's) once it is gone; None while it lives. Gone
        without a report: killed (SIGKILL's code, as the failure report reads it)."""
        if alive(pid, self.adopted[pid]):
            return None
        try:
            with open(self.status_paths[index]) as fh:
                return int(json.load(fh)["exit_code"])
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return 128 + signal.SIGKILL

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
