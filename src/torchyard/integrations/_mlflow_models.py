"""MLflow 3's logged models in torchyard's two MLflow stores: one small JSON record per model.

``mlflow.<flavor>.log_model(...)`` creates a *logged model* (``create_logged_model``), writes the
model folder to its ``artifact_location`` and finalizes it (``finalize_logged_model``);
``models:/<model_id>`` is resolved through ``get_logged_model`` and ``runs:/<run_id>/<name>`` through
the run's artifacts. Here a logged model lives in a *root* folder::

    <root>/<name>/                               the model folder (MLmodel, weights, ...)
    <root>/.mlflow/logged_models/<model_id>.json its record: name, experiment, source run, status,
                                                 tags, params, metrics, the output step

A model with a source run has the run's ``outputs/`` as its root (inside a run: this node's
``outputs/``, collected into the run's artifacts at Finalizing; outside, through ``torchyard://``:
the run's artifacts' ``outputs/``), so the model folder *is* a run artifact (``outputs/<name>``)
and ``run.register_model(name, "outputs/<name>")`` registers it. A model logged without a run
(outside, with no active MLflow run) has ``<workspace>/mlflow/models`` as its root.

Nothing here uses the workspace database: a model id is found through a small pointer file
(``<workspace>/mlflow/index/<model_id>``, holding the source run id) or, failing that, by looking in
each run's artifacts and working folder (then the pointer is written).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.entities.paged_list import PagedList
from mlflow.utils.name_utils import _generate_random_name
from mlflow.utils.search_utils import SearchLoggedModelsUtils
from mlflow.utils.validation import _validate_logged_model_name, _validate_param, _validate_tag_name

RECORDS = os.path.join(".mlflow", "logged_models")  # under a root
WORKSPACE_MODELS = os.path.join("mlflow", "models")  # the root of models logged without a run
WORKSPACE_INDEX = os.path.join("mlflow", "index")  # model id -> source run id
SEARCH_MAX_RESULTS_DEFAULT = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


def not_found(model_id: str) -> MlflowException:
    return MlflowException(f"Logged model {model_id!r} not found", error_code=RESOURCE_DOES_NOT_EXIST)


def _check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not model_id or "/" in model_id or model_id.startswith("."):
        raise MlflowException(f"invalid logged model id {model_id!r}", error_code=INVALID_PARAMETER_VALUE)
    return model_id


class Root:
    """A folder holding logged models: their folders and their records (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))

    @property
    def records_dir(self) -> str:
        return os.path.join(self.path, RECORDS)

    def record_path(self, model_id: str) -> str:
        return os.path.join(self.records_dir, _check_model_id(model_id) + ".json")

    def has(self, model_id: str) -> bool:
        return os.path.isfile(self.record_path(model_id))

    def read(self, model_id: str) -> dict[str, Any] | None:
        try:
            with open(self.record_path(model_id)) as fh:
                rec: dict[str, Any] = json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError:  # a record half-written by a process that died: treat as absent
            return None
        return rec

    def records(self) -> list[dict[str, Any]]:
        try:
            names = sorted(os.listdir(self.records_dir))
        except OSError:
            return []
        out = []
        for name in names:
            if name.endswith(".json"):
                rec = self.read(name[: -len(".json")])
                if rec is not None:
                    out.append(rec)
        return out

    def write(self, rec: dict[str, Any]) -> None:
        path = self.record_path(rec["model_id"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(rec, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)  # never a half-written record; breaks a hard link to a collected copy

    @contextlib.contextmanager
    def updating(self, model_id: str) -> Iterator[dict[str, Any]]:
        """Read-modify-write of one record under an exclusive lock (another process may finalize it
        or tag it at the same time)."""
        try:
            fd = os.open(self.records_dir, os.O_RDONLY)  # the lock: the records folder itself
        except FileNotFoundError:
            raise not_found(model_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            rec = self.read(model_id)
            if rec is None:
                raise not_found(model_id)
            yield rec
            rec["last_updated_timestamp"] = _now_ms()
            self.write(rec)
        finally:
            os.close(fd)

    def claim_folder(self, name: str, model_id: str) -> str:
        """The model folder's name: ``name`` when free (claimed atomically), else ``name-<model_id>``."""
        os.makedirs(self.path, exist_ok=True)
        try:
            os.mkdir(os.path.join(self.path, name))
            return name
        except FileExistsError:
            folder = f"{name}-{model_id}"
            os.makedirs(os.path.join(self.path, folder), exist_ok=True)
            return folder

    def location(self, rec: dict[str, Any]) -> str:
        return Path(self.path, rec["folder"]).as_uri()


def new_record(model_id: str, experiment_id: str, name: str, folder: str, source_run_id: str | None,
               model_type: str | None, tags: dict[str, str], params: dict[str, str]) -> dict[str, Any]:
    now = _now_ms()
    return {
        "model_id": model_id,
        "experiment_id": experiment_id,
        "name": name,
        "folder": folder,
        "source_run_id": source_run_id,
        "model_type": model_type,
        "status": str(LoggedModelStatus.PENDING),
        "status_message": None,
        "creation_timestamp": now,
        "last_updated_timestamp": now,
        "tags": tags,
        "params": params,
        "metrics": [],
        "step": None,
        "deleted": False,
    }


def entity(root: Root, rec: dict[str, Any]) -> LoggedModel:
    metrics = [
        Metric(m["key"], m["value"], m["timestamp"], m["step"], model_id=rec["model_id"],
               dataset_name=m.get("dataset_name"), dataset_digest=m.get("dataset_digest"), run_id=m.get("run_id"))
        for m in rec.get("metrics") or []
    ]
    return LoggedModel(
        experiment_id=rec["experiment_id"],
        model_id=rec["model_id"],
        name=rec["name"],
        artifact_location=root.location(rec),
        creation_timestamp=rec["creation_timestamp"],
        last_updated_timestamp=rec["last_updated_timestamp"],
        model_type=rec.get("model_type"),
        source_run_id=rec.get("source_run_id"),
        status=LoggedModelStatus(rec.get("status") or "PENDING"),
        status_message=rec.get("status_message"),
        tags=dict(rec.get("tags") or {}),
        params=dict(rec.get("params") or {}),
        metrics=metrics,
    )


def _pairs(items: Iterable[Any] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        if what == "tag":
            _validate_tag_name(item.key)
        else:
            _validate_param(item.key, item.value)
        out[str(item.key)] = str(item.value)
    return out


def _metric_point(metric: Metric) -> dict[str, Any]:
    return {"key": metric.key, "value": float(metric.value), "timestamp": int(metric.timestamp),
            "step": int(metric.step or 0), "run_id": metric.run_id,
            "dataset_name": metric.dataset_name, "dataset_digest": metric.dataset_digest}


class WorkspaceModels:
    """Finding a logged model by id in a workspace folder (files only, no database)."""

    def __init__(self, ws_path: str) -> None:
        self.ws_path = os.path.abspath(ws_path)

    @property
    def runless(self) -> Root:
        return Root(os.path.join(self.ws_path, WORKSPACE_MODELS))

    def run_roots(self, run_id: str) -> list[Root]:
        """Where a run's models can be: its collected artifacts, then its working folder (live)."""
        return [Root(os.path.join(self.ws_path, "artifacts", run_id, "outputs")),
                Root(os.path.join(self.ws_path, "runs", run_id, "outputs"))]

    def _pointer(self, model_id: str) -> str:
        return os.path.join(self.ws_path, WORKSPACE_INDEX, _check_model_id(model_id))

    def remember(self, model_id: str, run_id: str) -> None:
        path = self._pointer(model_id)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(run_id)
            os.replace(tmp, path)
        except OSError:  # a read-only workspace: the next lookup looks again
            pass

    def find(self, model_id: str) -> Root | None:
        """The root holding ``model_id``'s record, or None."""
        _check_model_id(model_id)
        try:
            with open(self._pointer(model_id)) as fh:
                run_id = fh.read().strip()
        except OSError:
            run_id = ""
        if run_id:
            for root in self.run_roots(run_id):
                if root.has(model_id):
                    return root
        if self.runless.has(model_id):
            return self.runless
        for sub in ("artifacts", "runs"):
            try:
                run_ids = sorted(os.listdir(os.path.join(self.ws_path, sub)))
            except OSError:
                continue
            for rid in run_ids:
                root = Root(os.path.join(self.ws_path, sub, rid, "outputs"))
                if root.has(model_id):
                    self.remember(model_id, rid)
                    # a collected copy wins over the working folder's
                    return next(r for r in self.run_roots(rid) if r.has(model_id))
        return None


class LoggedModelsMixin:
    """MLflow 3's logged-model calls of a tracking store. The store provides where models go
    (``_lm_new_root``), where one is (``_lm_find``), which ones a search sees (``_lm_candidates``)
    and how a run's metric history reads (``get_metric_history``)."""

    # ---- provided by the store ------------------------------------------------------------------

    def _lm_new_root(self, experiment_id: str, source_run_id: str | None) -> tuple[Root, str, str | None]:
        """(root, experiment id, source run id) for a new model."""
        raise NotImplementedError

    def _lm_find(self, model_id: str) -> Root | None:
        raise NotImplementedError

    def _lm_candidates(self, experiment_ids: list[str]) -> Iterable[tuple[Root, dict[str, Any]]]:
        raise NotImplementedError

    def _lm_run_roots(self, run_id: str) -> list[Root]:
        raise NotImplementedError

    def _lm_in(self, rec: dict[str, Any], experiment_ids: set[str]) -> bool:
        """Whether a search of ``experiment_ids`` sees the model."""
        return rec["experiment_id"] in experiment_ids

    if TYPE_CHECKING:  # the store's own

        def get_metric_history(self, run_id: str, metric_key: str, max_results: Any = None,
                               page_token: Any = None) -> Any: ...

    # ---- helpers ---------------------------------------------------------------------------------

    def _lm_root(self, model_id: str) -> Root:
        root = self._lm_find(model_id)
        if root is None:
            raise not_found(model_id)
        return root

    def _lm_outputs(self, run_id: str) -> list[LoggedModelOutput]:
        """The run's logged models with the step each was logged at (a Run's ``outputs``)."""
        seen: set[str] = set()
        out = []
        for root in self._lm_run_roots(run_id):
            for rec in root.records():
                if rec["model_id"] in seen or rec.get("deleted") or rec.get("source_run_id") != run_id:
                    continue
                seen.add(rec["model_id"])
                if rec.get("step") is not None:
                    out.append(LoggedModelOutput(rec["model_id"], rec["step"]))
        return out

    def _lm_split_metrics(self, run_id: str, metrics: list[Metric]) -> list[Metric]:
        """Record the metrics that name a logged model on that model; returns those the run's own
        series still needs. MLflow's ``log_model`` re-logs the run's metrics at the model's step with
        the model id attached: a point the run already has is not added to it a second time."""
        for_models = [m for m in metrics if getattr(m, "model_id", None)]
        if not for_models:
            return metrics
        have: set[tuple[str, float, int, int]] = set()
        for key in {m.key for m in for_models}:
            have.update((h.key, float(h.value), int(h.step or 0), int(h.timestamp))
                        for h in self.get_metric_history(run_id, key))
        by_model: dict[str, list[Metric]] = {}
        for m in for_models:
            by_model.setdefault(str(m.model_id), []).append(m)
        for model_id, ms in by_model.items():
            with self._lm_root(model_id).updating(model_id) as rec:
                points = rec.setdefault("metrics", [])
                for m in ms:
                    point = {**_metric_point(m), "run_id": m.run_id or run_id}
                    if point not in points:
                        points.append(point)
        return [m for m in metrics if not getattr(m, "model_id", None)
                or (m.key, float(m.value), int(m.step or 0), int(m.timestamp)) not in have]

    # ---- MLflow's calls --------------------------------------------------------------------------

    def create_logged_model(self, experiment_id: str = "0", name: str | None = None, source_run_id: str | None = None,
                            tags: Any = None, params: Any = None, model_type: str | None = None) -> LoggedModel:
        _validate_logged_model_name(name)
        tag_map, param_map = _pairs(tags, "tag"), _pairs(params, "param")
        name = name or _generate_random_name()
        root, exp_id, run_id = self._lm_new_root(str(experiment_id), source_run_id)
        model_id = f"m-{uuid.uuid4().hex}"
        folder = root.claim_folder(name, model_id)
        rec = new_record(model_id, exp_id, name, folder, run_id, model_type, tag_map, param_map)
        root.write(rec)
        return entity(root, rec)

    def log_logged_model_params(self, model_id: str, params: Any) -> None:
        param_map = _pairs(params, "param")
        with self._lm_root(model_id).updating(model_id) as rec:
            rec["params"] = {**rec.get("params", {}), **param_map}

    def set_logged_model_tags(self, model_id: str, tags: Any) -> None:
        tag_map = _pairs(tags, "tag")
        with self._lm_root(model_id).updating(model_id) as rec:
            rec["tags"] = {**rec.get("tags", {}), **tag_map}

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        with self._lm_root(model_id).updating(model_id) as rec:
            if key not in rec.get("tags", {}):
                raise MlflowException(f"No tag with key {key!r} found for model with ID {model_id!r}.",
                                      error_code=RESOURCE_DOES_NOT_EXIST)
            del rec["tags"][key]

    def finalize_logged_model(self, model_id: str, status: Any) -> LoggedModel:
        root = self._lm_root(model_id)
        with root.updating(model_id) as rec:
            rec["status"] = str(LoggedModelStatus(str(status)))
        return self.get_logged_model(model_id)

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> LoggedModel:
        root = self._lm_root(model_id)
        rec = root.read(model_id)
        if rec is None or (rec.get("deleted") and not allow_deleted):
            raise not_found(model_id)
        return entity(root, rec)

    def delete_logged_model(self, model_id: str) -> None:
        """Marks the record deleted (MLflow's soft delete); the model folder stays a run artifact."""
        with self._lm_root(model_id).updating(model_id) as rec:
            rec["deleted"] = True

    def search_logged_models(self, experiment_ids: list[str], filter_string: str | None = None, datasets: Any = None,
                             max_results: int | None = None, order_by: Any = None,
                             page_token: str | None = None) -> PagedList[LoggedModel]:
        if datasets and not all(d.get("dataset_name") for d in datasets):
            raise MlflowException("`dataset_name` in the `datasets` clause must be specified.",
                                  error_code=INVALID_PARAMETER_VALUE)
        wanted = {str(e) for e in experiment_ids or []}
        seen: set[str] = set()
        models = []
        for root, rec in self._lm_candidates(sorted(wanted)):
            if rec["model_id"] in seen or rec.get("deleted") or not self._lm_in(rec, wanted):
                continue
            seen.add(rec["model_id"])
            models.append(entity(root, rec))
        found = SearchLoggedModelsUtils.filter_logged_models(models, filter_string, datasets)
        found = SearchLoggedModelsUtils.sort(found, order_by)
        page, token = SearchLoggedModelsUtils.paginate(found, page_token, max_results or SEARCH_MAX_RESULTS_DEFAULT)
        return PagedList(page, token)

    def log_outputs(self, run_id: str, models: list[LoggedModelOutput]) -> None:
        for out in models or []:
            with self._lm_root(out.model_id).updating(out.model_id) as rec:
                rec["step"] = int(out.step or 0)

    def record_logged_model(self, run_id: str, mlflow_model: Any) -> None:
        pass  # MLflow 2's run tag listing a run's models: the records above keep them
