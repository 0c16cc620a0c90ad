"""A run on a team server: the SDK's ``Run`` calls, answered over HTTP."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from torchyard.errors import NotFoundError, RunFailedError
from torchyard.limits import decode_number
from torchyard.remote.client import q
from torchyard.status import RunStatus, follow_until_done


class ExperimentRef:
    """What a remote run knows of its experiment: the name and the workspace."""

    def __init__(self, workspace: Any, name: str) -> None:
        self.workspace = workspace
        self.name = name

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace!r})"


class RemoteRun:
    """One run of a :class:`~torchyard.remote.workspace.RemoteWorkspace` (``Run``'s methods)."""

    def __init__(self, workspace: Any, experiment: Any, run_id: str, *, row: dict[str, Any] | None = None) -> None:
        self.workspace = workspace
        self.experiment = experiment if not isinstance(experiment, str) else ExperimentRef(workspace, experiment)
        self.id = run_id
        self._row = row or {}
        self._base = f"/api/v1/runs/{q(run_id)}"

    @property
    def _client(self) -> Any:
        return self.workspace.client

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r}, server={self.workspace.url!r})"

    # ---- state ----------------------------------------------------------------------------------

    def get_status(self) -> str:
        """The run's status (the server reconciles liveness: it can see the supervisor)."""
        return str(self._client.get(self._base + "/status")["status"])

    @property
    def status(self) -> str:
        return self.get_status()

    def get_details(self) -> dict[str, Any]:
        """Azure-shaped details, as ``Run.get_details()`` (``logFiles`` are on the server)."""
        found = self._client.get(self._base + "/details")
        self._row = found["run"]
        details: dict[str, Any] = found["details"]
        return details

    def get_metrics(self, name: str | None = None, rank: int | str | None = 0) -> dict[Any, Any]:
        """Metrics by name (rank 0's; ``rank="all"``: ``{rank: metrics}``)."""
        want = "all" if rank in ("all", None) else str(int(rank))
        found = _numbers(self._client.get(self._base + "/values", rank=want, name=name)["metrics"])
        if want == "all":
            return {int(k): v for k, v in found.items()}
        return dict(found)

    def get_tags(self) -> dict[str, str]:
        return dict(self.get_details()["tags"])

    def get_properties(self) -> dict[str, str]:
        return dict(self.get_details()["properties"])

    def tag(self, key: str, value: Any = None) -> None:
        self.set_tags({str(key): "" if value is None else str(value)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._client.post(self._base + "/tags", {"tags": {str(k): str(v) for k, v in tags.items()}})

    def log(self, name: str, value: float, step: int | None = None) -> None:
        """Log a scalar to this run from outside it (rank 0)."""
        self.log_batch({name: ([float(value)], [step])})

    def log_batch(self, series: Mapping[str, tuple[list[float], list[int | None]]], rank: int = 0) -> int:
        """Many values in one request: ``{name: (values, steps)}``; how many were stored."""
        now = time.time()
        body = {"rank": rank, "series": [[n, list(v), list(s), [now] * len(v)] for n, (v, s) in series.items()]}
        return int(self._client.post(self._base + "/log", body)["stored"])

    # ---- files ----------------------------------------------------------------------------------

    def get_file_names(self) -> list[str]:
        return list(self._client.get(self._base + "/files")["files"])

    def _fetch(self, name: str, dest: str) -> str:
        path = self._base + "/artifacts/" + "/".join(q(p) for p in name.split("/"))
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        return str(self._client.download(path, dest))

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
        return self._fetch(name, dest)

    def download_files(self, prefix: str = "", output_directory: str = ".") -> list[str]:
        return [self._fetch(n, os.path.join(output_directory, n)) for n in self.get_file_names() if n.startswith(prefix)]

    def get_environment(self) -> dict[str, Any]:
        """The environment the run used on the server: ``python``, ``base_python``, its cache ``key``,
        whether it came from the cache, and the exact ``packages`` installed in it (``{}`` before it
        started)."""
        env = self._client.get(self._base + "/environment")["environment"]
        return {k: v for k, v in env.items() if v is not None}

    # ---- control --------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None, *, requeue: bool = False) -> None:
        """Cancel the run on the server (idempotent). ``requeue`` (preempt and resume) is not offered
        by team servers yet."""
        if requeue:
            from torchyard.errors import NotSupportedError  # noqa: PLC0415

            raise NotSupportedError("requeue", "preempting a run works on a local workspace's runs only, not yet "
                                                "through a team server; cancel without --requeue")
        self._client.post(self._base + "/cancel", {"reason": reason} if reason else {})

    def log_follower(self, ranks: str | int = 0) -> RemoteLogFollower:
        return RemoteLogFollower(self, ranks)

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
        """Block until the run ends (``show_output``: stream its output, then the execution summary)."""
        stream = out or sys.stdout
        follower = self.log_follower(ranks) if show_output else None
        status = follow_until_done(self.id, self.get_status, follower, stream, timeout, on_status,
                                   first=0.05, most=0.5)  # each status is a request to the server
        found = self._client.get(self._base + "/details", summary="1" if show_output else None)
        details: dict[str, Any] = found["details"]
        if follower is not None:
            follower.pump(stream)
            stream.write(found.get("summary") or "")
            stream.flush()
        if raise_on_error and status != RunStatus.COMPLETED:
            reason = (details.get("error") or {}).get("message") or details.get("cancel_reason") or status
            raise RunFailedError(f"run {self.id} ended {status}: {reason}", run_id=self.id, status=status)
        return details

    def get_children(self) -> list[RemoteRun]:
        rows = self.workspace.store.list_runs(parent_id=self.id)
        return [RemoteRun(self.workspace, self.experiment, r["id"], row=r) for r in rows]

    def register_model(self, model_name: str, model_path: str = "outputs/model.pt",
                       tags: Mapping[str, Any] | None = None, properties: Mapping[str, Any] | None = None,
                       description: str | None = None, model_framework: str | None = None) -> Any:
        """Register this run's artifact ``model_path`` (file or folder) as a new version of
        ``model_name``, on the server (its files never travel; needs EDIT on the experiment)."""
        from torchyard.models.model import Model  # noqa: PLC0415
        from torchyard.remote.models import record_of  # noqa: PLC0415

        body = {"name": model_name, "model_path": model_path,
                "tags": {str(k): str(v) for k, v in (tags or {}).items()},
                "properties": {str(k): str(v) for k, v in (properties or {}).items()},
                "description": description, "framework": model_framework}
        found = self._client.post(self._base + "/models", body)["model"]
        return Model(self.workspace, _record=record_of(found))


class RemoteSweepRun(RemoteRun):
    """A sweep's parent run on a team server (``HyperDriveRun``'s methods); its controller runs on
    the server, and cancel (``RemoteRun.cancel``) cancels its trials there too."""

    def _sweep(self, **params: Any) -> dict[str, Any]:
        found: dict[str, Any] = self._client.get(self._base + "/sweep", **params)
        return found

    @property
    def primary_metric_name(self) -> str:
        return str(self.get_primary_metric_config()["name"])

    @property
    def maximize(self) -> bool:
        return self.get_primary_metric_config()["goal"] == "MAXIMIZE"

    def get_primary_metric_config(self) -> dict[str, str]:
        return dict(self._sweep(top=1)["primary_metric"])

    def get_children(self) -> list[RemoteRun]:
        """The trials, in the order they were started."""
        return [RemoteRun(self.workspace, self.experiment, run_id) for run_id in self._sweep(top=1)["children"]]

    def get_hyperparameters(self) -> dict[str, dict[str, Any]]:
        """``{child run id: {parameter: value}}`` for every trial."""
        return dict(self._sweep(top=1)["hyperparameters"])

    def get_metrics(self, name: str | None = None, rank: int | str | None = 0) -> dict[Any, Any]:
        """``{child run id: that run's metrics}`` for every trial."""
        return {child.id: child.get_metrics(name, rank) for child in self.get_children()}

    def get_children_sorted_by_primary_metric(self, top: int = 0, reverse: bool = False,
                                              discard_no_metric: bool = False) -> list[dict[str, Any]]:
        """The trials best first (see ``HyperDriveRun.get_children_sorted_by_primary_metric``)."""
        ranked: list[dict[str, Any]] = self._sweep(top=top, reverse="1" if reverse else "0",
                                                   discard_no_metric="1" if discard_no_metric else "0")["ranked"]
        return ranked

    def get_best_run_by_primary_metric(self, include_failed: bool = True,
                                       include_canceled: bool = True) -> RemoteRun | None:
        """The trial with the best primary metric (the best value each logged), or None."""
        for entry in self.get_children_sorted_by_primary_metric(discard_no_metric=True):
            if not include_failed and entry["status"] == RunStatus.FAILED:
                continue
            if not include_canceled and entry["status"] == RunStatus.CANCELED:
                continue
            return RemoteRun(self.workspace, self.experiment, entry["run_id"])
        return None

    def resume(self) -> bool:
        """Start the sweep's controller again on the server if it is not running."""
        return bool(self._client.post(self._base + "/sweep/resume")["started"])

    def __repr__(self) -> str:
        return f"HyperDriveRun(experiment={self.experiment.name!r}, id={self.id!r}, server={self.workspace.url!r})"


class RemoteLogFollower:
    """Prints new text of a run's rank logs, read by byte offset from the server."""

    def __init__(self, run: RemoteRun, ranks: str | int = 0) -> None:
        self.run = run
        self.ranks = ranks
        self.offsets: dict[int, int] = {}
        self.partial: dict[int, str] = {}

    def _ranks(self) -> list[int]:
        if self.ranks != "all":
            return [int(self.ranks)]
        logs = self.run._client.get(self.run._base + "/logs")["logs"]
        return sorted(f["rank"] for f in logs if f["rank"] is not None)

    def pump(self, out: TextIO) -> None:
        for rank in self._ranks():
            while True:
                try:
                    chunk = self.run._client.get(f"{self.run._base}/logs/{rank}", offset=self.offsets.get(rank, 0),
                                                 limit=1 << 20)
                except NotFoundError:
                    break
                if chunk["next_offset"] <= self.offsets.get(rank, 0):
                    break
                self.offsets[rank] = chunk["next_offset"]
                text = self.partial.pop(rank, "") + chunk["text"]
                if self.ranks == "all":
                    lines = text.split("\n")
                    if lines[-1]:
                        self.partial[rank] = lines[-1]
                    out.write("".join(f"[rank {rank}] {line}\n" for line in lines[:-1]))
                else:
                    out.write(text)
        out.flush()


def _numbers(value: Any) -> Any:
    """The JSON API's ``"Infinity"``, ``"-Infinity"`` and ``"NaN"`` back to floats (torchyard.limits)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return decode_number(value)
