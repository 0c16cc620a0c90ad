"""Run: the SDK's view of one run in a workspace (Azure ML's shape)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from torchyard.errors import NotFoundError, RunFailedError, SpecError
from torchyard.runtime.liveness import reconcile
from torchyard.runtime.summary import execution_summary, metrics_by_rank
from torchyard.status import RunStatus, follow_until_done

if TYPE_CHECKING:
    from torchyard.tracking.context import LiveRun, OfflineRun
    from torchyard.workspace.workspace import WorkspaceFolder


class Experiment(Protocol):
    """What a Run needs of its experiment (``torchyard.Experiment`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def workspace(self) -> WorkspaceFolder: ...


class Run:
    """One execution of a job. ``Run.get_context()`` inside a training script; ``Run(exp, run_id)``
    or ``exp.submit(...)`` outside."""

    def __new__(cls, experiment: Experiment, run_id: str, *, _row: dict[str, Any] | None = None) -> Any:
        if getattr(experiment.workspace, "is_remote", False):  # a team server's run (torchyard.remote)
            from torchyard.remote.run import RemoteRun, RemoteSweepRun  # noqa: PLC0415

            remote = RemoteSweepRun if getattr(cls, "_sweep_parent", False) else RemoteRun
            return remote(experiment.workspace, experiment, run_id)
        return super().__new__(cls)

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
        """The run's folder: the exact code it runs, its ``outputs/`` and ``logs/``."""
        return str(self._row["run_dir"])

    def get_status(self) -> str:
        """NotStarted, Queued, Preparing, Starting, Running, Finalizing, CancelRequested,
        NotResponding, Completed, Failed or Canceled."""
        return str(self._refresh()["status"])

    @property
    def status(self) -> str:
        """The run's current status (the same as :meth:`get_status`)."""
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
        by_rank = metrics_by_rank(self._store, self.id, want, name)
        if every:
            return dict(sorted(by_rank.items()))  # rank → metrics
        return by_rank.get(int(rank), {})  # type: ignore[arg-type]

    # ---- tags, properties, logging from outside -------------------------------------------------

    def tag(self, key: str, value: Any = None) -> None:
        """Set one tag (tags are mutable); ``value`` None gives an empty tag."""
        self._store.set_tags(self.id, {str(key): "" if value is None else str(value)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        self._store.set_tags(self.id, {str(k): str(v) for k, v in tags.items()})

    def get_tags(self) -> dict[str, str]:
        """The run's tags."""
        return dict(self._store.get_tags(self.id))

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Immutable once set: re-adding a key with another value raises WorkspaceError."""
        self._store.add_properties(self.id, {str(k): str(v) for k, v in properties.items()})

    def get_properties(self) -> dict[str, str]:
        """The run's properties (immutable once set)."""
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

    def download_files(self, prefix: str = "", output_directory: str = ".",
                       progress: Callable[[str, int], None] | None = None) -> list[str]:
        """Download every artifact whose name starts with ``prefix`` into ``output_directory``; returns the
        paths written. ``progress`` hears ("files", N) once, then ("bytes", size) after each file."""
        names = [n for n in self.get_file_names() if n.startswith(prefix)]
        if progress is not None:
            progress("files", len(names))
        out = []
        for name in names:
            dest = os.path.join(output_directory, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            self._copy_artifact(name, dest)
            out.append(dest)
            if progress is not None:
                progress("bytes", os.path.getsize(dest))
        return out

    # ---- control ------------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None, *, requeue: bool = False) -> None:
        """Stop the run (SIGTERM, a grace period, SIGKILL to every rank) and mark it Canceled. Idempotent.

        ``reason`` becomes the Canceled status's detail and ``details["cancel_reason"]``. With
        ``requeue`` the run is preempted instead: every rank gets SIGTERM with ``run.preempted`` set
        and the job's ``preempt_grace_seconds`` to commit a checkpoint, then the run resumes from its
        latest checkpoint as a new attempt (cause ``preempted``; not counted in ``max_retries``)."""
        from torchyard.runtime.cancel import cancel_run  # noqa: PLC0415

        cancel_run(self._store, self._refresh(), reason, requeue=requeue)

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
        status = follow_until_done(self.id, self.get_status, follower, stream, timeout, on_status)
        if follower is not None:
            follower.pump(stream)
            stream.write(self._summary())
            stream.flush()
        details = self.get_details()
        if raise_on_error and status != RunStatus.COMPLETED:
            reason = (details.get("error") or {}).get("message") or details.get("cancel_reason") or status
            raise RunFailedError(f"run {self.id} ended {status}: {reason}", run_id=self.id, status=status)
        return details

    def _summary(self) -> str:
        return execution_summary(self._store, self._row)

    # ---- model registry (issue 13): the one wiring point in this file ----
    def register_model(self, model_name: str, model_path: str = "outputs/model.pt", tags: Mapping[str, Any] | None = None,
                       properties: Mapping[str, Any] | None = None, description: str | None = None,
                       model_framework: str | None = None, *, checkpoint: int | None = None) -> Any:
        """Register this run's artifact ``model_path`` (file or folder) as a new version of ``model_name``.
        With ``checkpoint=STEP``: the committed checkpoint ``step_STEP`` instead (a running run's too),
        with its step, attempt and metrics as properties; NotFoundError names the steps there are."""
        if checkpoint is not None:
            from torchyard.models.model import register_checkpoint  # noqa: PLC0415

            if model_path != "outputs/model.pt":
                raise SpecError("checkpoint", f"give model_path ({model_path!r}) or checkpoint={checkpoint!r}, not both")

            return register_checkpoint(self, model_name, checkpoint, tags, properties, description, model_framework)
        from torchyard.models.model import register_from_run  # noqa: PLC0415

        return register_from_run(self, model_name, model_path, tags, properties, description, model_framework)

    # ---- checkpoints (issue 25): what the script committed with run.checkpoint(step) ----
    def get_checkpoints(self) -> list[dict[str, Any]]:
        """The run's committed checkpoints, oldest step first: ``step``, ``time``, ``size`` (bytes),
        ``metrics`` (given at that step), ``where`` (``artifacts``: kept with the run's artifacts, under
        ``artifact``; ``node``: committed in the run folder, not copied yet) and ``path`` (a local folder,
        None when it lives in a remote artifact store)."""
        from torchyard.runtime.checkpoints import ARTIFACT_PREFIX, run_checkpoints  # noqa: PLC0415
        from torchyard.tracking.checkpoint import MANIFEST  # noqa: PLC0415

        found = run_checkpoints(self.experiment.workspace, self.id, self._row.get("run_dir"))
        remote = self._remote()
        if remote is None:
            return found
        import tempfile  # noqa: PLC0415

        by_step = {c["step"]: c for c in found}
        for name in self.get_file_names():  # kept in the remote artifact store: read each manifest
            parts = name.split("/")
            if len(parts) != 3 or parts[0] != ARTIFACT_PREFIX or parts[2] != MANIFEST or not parts[1].startswith("step_"):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                self._copy_artifact(name, os.path.join(tmp, MANIFEST))
                with open(os.path.join(tmp, MANIFEST)) as fh:
                    manifest = json.load(fh)
            step = int(manifest["step"])
            by_step[step] = {"step": step, "time": manifest.get("time"), "size": manifest.get("size", 0),
                             "metrics": manifest.get("metrics") or {}, "attempt": manifest.get("attempt", 0),
                             "world_size": manifest.get("world_size"), "path": None, "where": "artifacts",
                             "artifact": f"{ARTIFACT_PREFIX}/{parts[1]}"}
        return [by_step[s] for s in sorted(by_step)]

    def latest_checkpoint(self) -> Any:
        """The local folder (a ``pathlib.Path``) of the run's latest committed checkpoint; None when it
        has none (or keeps them in a remote artifact store only: ``download_files("checkpoints/...")``)."""
        from pathlib import Path  # noqa: PLC0415

        for ck in reversed(self.get_checkpoints()):
            if ck.get("path"):
                return Path(ck["path"])
        return None

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

    def rerun(self, changes: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None) -> Run:
        """Clone and re-run: a new run of this run's experiment from the same code snapshot, environment
        and inputs, with ``changes`` — job settings (``{"node_count": 2}``) or script arguments
        (``{"lr": 0.1}`` sets ``--lr``) — recorded as lineage (``rerun_of``). Returns the new Run."""
        from torchyard.runtime.rerun import rerun  # noqa: PLC0415

        new_id = rerun(self.experiment.workspace, self.id, {str(k): str(v) for k, v in (changes or {}).items()},
                       tags=tags)
        return Run(self.experiment, new_id)

    def get_children(self) -> list[Run]:
        """The run's child runs (a sweep's trials)."""
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

