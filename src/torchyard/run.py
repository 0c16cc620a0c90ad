"""Experiment and Run: the SDK's view of runs in a workspace (Azure ML's shapes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from torchyard.errors import NotFoundError, RunFailedError, SpecError
from torchyard.status import ACTIVE_VALUES, TERMINAL_VALUES, RunStatus

if TYPE_CHECKING:
    from torchyard.tracking.context import LiveRun, OfflineRun
    from torchyard.workspace.workspace import Workspace

#: a supervisor silent this long is NotResponding; this long again and the run is Failed
STALE_SECONDS = 30.0
DEAD_SECONDS = 300.0


class Experiment:
    """A named group of runs in a workspace."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        from torchyard.workspace.workspace import check_name  # noqa: PLC0415

        self.workspace = workspace
        self.name = check_name(name)

    def submit(self, config: Any, tags: Mapping[str, Any] | None = None) -> Run:
        """Submit a ``PyTorch`` estimator, a ``ScriptRunConfig`` or a ``JobSpec``; returns the Run.
        A ``HyperDriveConfig`` starts a sweep and returns its ``HyperDriveRun``."""
        from torchyard.spec.job import JobSpec  # noqa: PLC0415

        if getattr(config, "__torchyard_sweep__", False):
            from torchyard.sweeps.controller import start_sweep  # noqa: PLC0415
            from torchyard.sweeps.run import HyperDriveRun  # noqa: PLC0415

            return HyperDriveRun(self, start_sweep(self.workspace, self.name, config, dict(tags) if tags else None))
        spec = config if isinstance(config, JobSpec) else getattr(config, "to_job_spec", lambda: None)()
        if not isinstance(spec, JobSpec):
            raise SpecError("config", f"cannot submit {type(config).__name__}; pass a PyTorch estimator or ScriptRunConfig")
        run_id = self.workspace.submit(self.name, spec, tags=dict(tags) if tags else None)
        return Run(self, run_id)

    def get_runs(self, status: str | None = None, limit: int | None = None) -> list[Run]:
        """This experiment's runs, newest first."""
        rows = self.workspace.store.list_runs(experiment=self.name, status=status, limit=limit)
        return [Run(self, r["id"], _row=r) for r in rows]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.path!r})"


def _pid_alive(pid: int, since: float) -> bool:
    import psutil  # noqa: PLC0415

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= since + 5
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reconcile(store: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Notice a run whose supervisor died: NotResponding, then Failed. Returns the fresh row."""
    from torchyard.workspace.store import HOSTNAME  # noqa: PLC0415

    if row["status"] not in ACTIVE_VALUES or row["status"] == RunStatus.NOT_STARTED.value:
        return row
    pid, beat = row.get("supervisor_pid"), row.get("heartbeat_at")
    if pid is None or beat is None:
        return row
    now = time.time()
    gone = row.get("supervisor_host") == HOSTNAME and not _pid_alive(pid, now)
    stale = now - beat
    if not gone and stale < STALE_SECONDS:
        return row
    run_id = row["id"]
    if row.get("parent_id") is None and '"kind": "sweep"' in (row.get("spec") or ""):
        from torchyard.sweeps.controller import is_sweep_row, revive  # noqa: PLC0415

        if is_sweep_row(row):  # a sweep's controller is restarted, not given up on
            return revive(store, row)
    if gone or stale >= DEAD_SECONDS:
        why = f"supervisor process {pid} is gone" if gone else f"no supervisor heartbeat for {stale:.0f} s"
        store.set_status(run_id, RunStatus.NOT_RESPONDING, why)
        store.set_status(
            run_id, RunStatus.FAILED, why, details={"error": {"message": f"{why}; the run was not completed"}}
        )
    else:
        store.set_status(run_id, RunStatus.NOT_RESPONDING, f"no supervisor heartbeat for {stale:.0f} s")
    return dict(store.get_run(run_id))


def shape_metrics(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Azure's shapes: a scalar for a metric logged once, a list for one logged more often;
    rows accumulate into ``{column: [values]}``; tables are ``{column: [values]}``."""
    values: dict[str, list[Any]] = {}
    kinds: dict[str, int] = {}
    for name, _rank, _step, value, payload, kind, _ts in rows:
        kinds[name] = kind
        values.setdefault(name, []).append(value if kind == 0 else json.loads(payload))
    out: dict[str, Any] = {}
    for name, vals in values.items():
        kind = kinds[name]
        if kind == 2:  # rows
            table: dict[str, list[Any]] = {}
            for row in vals:
                for col, v in row.items():
                    table.setdefault(col, []).append(v)
            out[name] = table
        elif kind in (1, 3):  # list, table: the last one logged
            out[name] = vals[-1] if len(vals) == 1 else vals
        else:
            out[name] = vals[0] if len(vals) == 1 else vals
    return out


class Run:
    """One execution of a job. ``Run.get_context()`` inside a training script; ``Run(exp, run_id)``
    or ``exp.submit(...)`` outside."""

    def __init__(self, experiment: Experiment, run_id: str, *, _row: dict[str, Any] | None = None) -> None:
        self.experiment = experiment
        self.id = run_id
        self._row = _row if _row is not None else experiment.workspace.store.get_run(run_id)
        if self._row["experiment"] != experiment.name:
            raise NotFoundError(f"run {run_id!r} belongs to experiment {self._row['experiment']!r}, not {experiment.name!r}")

    @staticmethod
    def get_context(allow_offline: bool = True) -> LiveRun | OfflineRun:
        """Inside a script torchyard launched: the live run. Elsewhere: an offline run that prints."""
        from torchyard.tracking.context import get_context  # noqa: PLC0415

        return get_context(allow_offline)

    # ---- state --------------------------------------------------------------------------------------

    @property
    def _store(self) -> Any:
        return self.experiment.workspace.store

    def _refresh(self) -> dict[str, Any]:
        self._row = reconcile(self._store, self._store.get_run(self.id))
        return self._row

    @property
    def workdir(self) -> str:
        return str(self._row["run_dir"])

    def get_status(self) -> str:
        """NotStarted, Queued, Preparing, Starting, Running, Finalizing, CancelRequested,
        NotResponding, Completed, Failed or Canceled."""
        return str(self._refresh()["status"])

    @property
    def status(self) -> str:
        return self.get_status()

    def get_details(self) -> dict[str, Any]:
        """Azure-shaped details: ids, status, times, tags, properties, the job definition, log files,
        the status history, and ``error`` for a failed run."""
        row = self._refresh()
        details = json.loads(row["details"] or "{}")
        logs_dir = os.path.join(self.workdir, "logs")
        try:
            logs = {f"logs/{n}": os.path.join(logs_dir, n) for n in sorted(os.listdir(logs_dir))}
        except OSError:
            logs = {}
        out = {
            "runId": self.id,
            "experiment": row["experiment"],
            "status": row["status"],
            "target": row["compute_target"],
            "createdTimeUtc": _iso(row["created_at"]),
            "startTimeUtc": _iso(row["started_at"]),
            "endTimeUtc": _iso(row["ended_at"]),
            "exitCode": row["exit_code"],
            "tags": self.get_tags(),
            "properties": self.get_properties(),
            "runDefinition": json.loads(row["spec"]),
            "logFiles": logs,
            "statusHistory": self._store.status_history(self.id),
        }
        out.update(details)
        return out

    def get_metrics(self, name: str | None = None, rank: int | str | None = 0) -> dict[Any, Any]:
        """Metrics by name (rank 0's by default; ``rank=N`` for another, ``rank="all"`` for
        ``{rank: metrics}``)."""
        every = rank == "all" or rank is None
        if not every and not isinstance(rank, int):
            raise SpecError("rank", f"must be a rank number or 'all', got {rank!r}")
        want = None if every else int(rank)  # type: ignore[arg-type]
        by_rank: dict[int, dict[str, Any]] = {}
        for (r, metric), (values, _steps, _ts) in self._store.get_series(self.id, rank=want, name=name).items():
            by_rank.setdefault(r, {})[metric] = values[0] if len(values) == 1 else values
        rows_by_rank: dict[int, list[tuple[Any, ...]]] = {}
        for row in self._store.get_metric_rows(self.id, rank=want, name=name):
            rows_by_rank.setdefault(row[1], []).append(row)
        for r, rows in rows_by_rank.items():
            by_rank.setdefault(r, {}).update(shape_metrics(rows))
        if every:
            return dict(sorted(by_rank.items()))  # rank → metrics
        return by_rank.get(int(rank), {})  # type: ignore[arg-type]

    # ---- tags, properties, logging from outside -------------------------------------------------

    def tag(self, key: str, value: Any = None) -> None:
        self._store.set_tags(self.id, {str(key): "" if value is None else str(value)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._store.set_tags(self.id, {str(k): str(v) for k, v in tags.items()})

    def get_tags(self) -> dict[str, str]:
        return dict(self._store.get_tags(self.id))

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Immutable once set: re-adding a key with another value raises WorkspaceError."""
        self._store.add_properties(self.id, {str(k): str(v) for k, v in properties.items()})

    def get_properties(self) -> dict[str, str]:
        return dict(self._store.get_properties(self.id))

    def log(self, name: str, value: float, step: int | None = None) -> None:
        """Log a scalar to this run from outside it (recorded as rank 0)."""
        self._store.insert_series(self.id, 0, [(name, [float(value)], [step], [time.time()])])

    # ---- files ------------------------------------------------------------------------------------

    def _artifacts(self) -> str:
        return self.experiment.workspace.artifacts_dir(self.id)

    def _remote(self) -> tuple[Any, str] | None:
        """(datastore, prefix) when this run's artifacts live in the workspace's remote artifact store."""
        where = json.loads(self._row["details"] or "{}").get("artifact_store")
        if not where:
            return None
        from torchyard.data.datastore import Datastore  # noqa: PLC0415

        return Datastore.get(self.experiment.workspace, where["datastore"]), where["prefix"]

    def _copy_artifact(self, name: str, dest: str) -> None:
        remote = self._remote()
        if remote is None:
            shutil.copyfile(os.path.join(self._artifacts(), name), dest)
            return
        ds, prefix = remote
        fs = ds.filesystem()
        fs.get_file(ds._fs_path(fs, f"{prefix}/{name}"), dest)

    def get_file_names(self) -> list[str]:
        """Artifact paths, e.g. ``outputs/model.pt`` and ``logs/rank_0.txt`` (after Finalizing)."""
        remote = self._remote()
        if remote is not None:
            ds, prefix = remote
            return sorted(p[len(prefix) + 1 :] for p in ds.list(prefix) if p.startswith(prefix + "/"))
        root = self._artifacts()
        names = []
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                names.append(os.path.relpath(os.path.join(dirpath, f), root))
        return sorted(names)

    def download_file(self, name: str, output_file_path: str | None = None) -> str:
        """Copy artifact ``name`` to ``output_file_path`` (a file or folder; default: here)."""
        name = os.path.normpath(name).lstrip("/")
        names = self.get_file_names()
        if name not in names:
            hint = f"; it has {', '.join(names[:10])}" if names else "; it has no artifacts (yet)"
            raise NotFoundError(f"run {self.id} has no file {name!r}{hint}")
        dest = output_file_path or os.path.basename(name)
        if os.path.isdir(dest):
            dest = os.path.join(dest, os.path.basename(name))
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        self._copy_artifact(name, dest)
        return dest

    def download_files(self, prefix: str = "", output_directory: str = ".") -> list[str]:
        out = []
        for name in self.get_file_names():
            if name.startswith(prefix):
                dest = os.path.join(output_directory, name)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                self._copy_artifact(name, dest)
                out.append(dest)
        return out

    # ---- control ------------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None) -> None:
        """Stop the run (SIGTERM, a grace period, SIGKILL to every rank) and mark it Canceled. Idempotent.

        ``reason`` becomes the Canceled status's detail and ``details["cancel_reason"]``."""
        from torchyard.workspace.store import HOSTNAME  # noqa: PLC0415

        row = self._refresh()
        if row["status"] in TERMINAL_VALUES:
            return
        self._store.set_status(self.id, RunStatus.CANCEL_REQUESTED, reason or "canceled by user")
        pid = row.get("supervisor_pid")
        if pid and row.get("supervisor_host") == HOSTNAME and _pid_alive(pid, time.time()):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
        *,
        ranks: str | int = 0,
        out: TextIO | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the run ends. With ``show_output`` the script's output streams live (rank 0 by
        default, ``ranks="all"`` for every rank prefixed ``[rank N]``), then an execution summary.
        Raises RunFailedError for a failed run unless ``raise_on_error=False``."""
        stream = out or sys.stdout
        follower = LogFollower(self.workdir, ranks) if show_output else None
        deadline = None if timeout is None else time.time() + timeout
        delay = 0.02
        last_status = None
        while True:
            status = self.get_status()
            if status != last_status and on_status is not None:
                on_status(status)
            last_status = status
            if follower is not None:
                follower.pump(stream)
            if status in TERMINAL_VALUES:
                break
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"run {self.id} still {status} after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        if follower is not None:
            follower.pump(stream)
            stream.write(self._summary())
            stream.flush()
        details = self.get_details()
        if raise_on_error and status != RunStatus.COMPLETED.value:
            reason = (details.get("error") or {}).get("message") or details.get("cancel_reason") or status
            raise RunFailedError(f"run {self.id} ended {status}: {reason}", run_id=self.id, status=status)
        return details

    def _summary(self) -> str:
        row = self._row
        dur = (row["ended_at"] or time.time()) - (row["started_at"] or row["created_at"])
        lines = ["", "Execution Summary", "=================", f"RunId: {self.id}", f"Status: {row['status']}"]
        lines.append(f"Duration: {dur:.1f} s")
        metrics = self.get_metrics()
        if metrics:
            parts = []
            for k, v in metrics.items():
                last = v[-1] if isinstance(v, list) and v else v
                parts.append(f"{k}={last:.4g}" if isinstance(last, float) else f"{k}={last}")
            lines.append("Metrics: " + ", ".join(parts))
        details = json.loads(row["details"] or "{}")
        if "error" in details:
            lines.append(f"Error: {details['error'].get('message')}")
        return "\n".join(lines) + "\n"

    # ---- model registry (issue 13): the one wiring point in this file ----
    def register_model(self, model_name: str, model_path: str = "outputs/model.pt", tags: Mapping[str, Any] | None = None,
                       properties: Mapping[str, Any] | None = None, description: str | None = None,
                       model_framework: str | None = None) -> Any:
        """Register this run's artifact ``model_path`` (file or folder) as a new version of ``model_name``."""
        from torchyard.models.model import register_from_run  # noqa: PLC0415

        return register_from_run(self, model_name, model_path, tags, properties, description, model_framework)

    def restore_snapshot(self, path: str | None = None) -> str:
        """Write the exact code this run executed into ``path`` (default ``./<run_id>_code``)."""
        snapshot_id = self.get_properties().get("torchyard.snapshot")
        if not snapshot_id:
            raise NotFoundError(f"run {self.id} has no recorded snapshot")
        dest = path or f"{self.id}_code"
        self.experiment.workspace.snapshots.restore(snapshot_id, dest)
        return dest

    def get_environment(self) -> dict[str, Any]:
        """The environment the run used: ``python``, its cache ``key`` (None for the submitting
        interpreter), whether it came from the cache, and the exact ``packages`` installed in it."""
        env: dict[str, Any] = json.loads(self._refresh()["details"] or "{}").get("environment", {})
        return env

    def get_children(self) -> list[Run]:
        rows = self._store.list_runs(parent_id=self.id)
        return [Run(self.experiment, r["id"], _row=r) for r in rows]

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r}, status={self._row['status']!r})"


class LogFollower:
    """Streams new lines of a run's rank logs (rank N, or all with a ``[rank N]`` prefix)."""

    def __init__(self, workdir: str, ranks: str | int = 0) -> None:
        self.logs = os.path.join(workdir, "logs")
        self.ranks = ranks
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, str] = {}

    def _files(self) -> list[str]:
        if self.ranks == "all":
            try:
                names = sorted(n for n in os.listdir(self.logs) if n.startswith("rank_"))
            except OSError:
                return []
            return names
        return [f"rank_{int(self.ranks)}.txt"]

    def pump(self, out: TextIO) -> None:
        for name in self._files():
            path = os.path.join(self.logs, name)
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.offsets.get(name, 0))
                    data = fh.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[name] = self.offsets.get(name, 0) + len(data)
            text = self.partial.pop(name, "") + data.decode("utf-8", "replace")
            if self.ranks == "all":
                lines = text.split("\n")
                if lines[-1]:
                    self.partial[name] = lines[-1]
                prefix = f"[rank {name[5:-4]}] "
                out.write("".join(prefix + line + "\n" for line in lines[:-1]))
            else:
                out.write(text)
        out.flush()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

