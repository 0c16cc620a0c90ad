"""The two MLflow tracking stores behind ``torchyard:`` URIs (see :mod:`torchyard.integrations.mlflow`).

Imported by MLflow (through the plugin's builder) only; it imports mlflow at module level.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import (
    Experiment,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunOutputs,
    RunStatus,
    RunTag,
    ViewType,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.utils.search_utils import SearchExperimentsUtils, SearchUtils

from torchyard.integrations._mlflow_models import LoggedModelsMixin, Root, WorkspaceModels
from torchyard.integrations.mlflow import in_run_environment, workspace_path
from torchyard.tracking import journal as j

DEFAULT_EXPERIMENT = "Default"  # MLflow's experiment "0"
SYSTEM_TAG_PREFIX = "mlflow."
HEARTBEAT_SECONDS = 10.0

_RUNNING = RunStatus.to_string(RunStatus.RUNNING)


def _experiment_id(name: str) -> str:
    return "0" if name == DEFAULT_EXPERIMENT else name


def _experiment_name(experiment_id: str | None) -> str:
    return DEFAULT_EXPERIMENT if experiment_id in (None, "", "0") else str(experiment_id)


def _experiment(name: str, artifact_location: str) -> Experiment:
    return Experiment(_experiment_id(name), name, artifact_location, LifecycleStage.ACTIVE)


def _user(user_id: str | None = None) -> str:
    if user_id:
        return user_id
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def _user_tags(tags: Iterable[RunTag] | None) -> dict[str, str]:
    """Tags given at run creation, without MLflow's own ``mlflow.*`` system tags."""
    return {t.key: str(t.value) for t in tags or () if not t.key.startswith(SYSTEM_TAG_PREFIX)}


def _search(runs: list[Run], filter_string: str, max_results: int, order_by: Any, page_token: Any) -> Any:
    found = SearchUtils.sort(SearchUtils.filter(runs, filter_string), order_by)
    return SearchUtils.paginate(found, page_token, max_results)


def _not_found(what: str) -> MlflowException:
    return MlflowException(what, error_code=RESOURCE_DOES_NOT_EXIST)


def _unsupported(what: str) -> MlflowException:
    return MlflowException(f"{what} is not supported by torchyard's MLflow store", error_code=INVALID_PARAMETER_VALUE)


def _metrics_from_series(series: Iterable[tuple[str, list[Any], list[Any], list[Any]]]) -> list[Metric]:
    """The latest value of each series, as MLflow's RunData shows a metric."""
    return [
        Metric(name, values[-1], int(ts[-1] * 1000), steps[-1] if steps[-1] is not None else 0)
        for name, values, steps, ts in series
        if values
    ]


def _outputs(models: list[Any]) -> RunOutputs | None:
    return RunOutputs(model_outputs=models) if models else None


class InRunStore(LoggedModelsMixin, AbstractStore):
    """MLflow inside a torchyard run: one MLflow run, the torchyard run, written through the rank's journal.

    Every ``create_run`` (``mlflow.start_run()``, Lightning's ``MLFlowLogger``, the HF Trainer's
    callback) returns the torchyard run; ending it leaves the torchyard run's status to its
    supervisor. Any experiment name is the run's experiment. Reads (``get_run``,
    ``get_metric_history``) come from this rank's own journal. Logged models (MLflow 3's
    ``log_model``) go into this node's ``outputs/`` (see :mod:`._mlflow_models`); a model id from
    another run is looked up in the workspace folder when this node sees it.
    """

    def __init__(self, store_uri: str, artifact_uri: str | None = None) -> None:
        super().__init__()
        from torchyard.tracking.context import get_context  # noqa: PLC0415

        run = get_context()
        self._run: Any = run
        self._run_id: str = run.id
        env = os.environ
        self._experiment_name = env.get("TORCHYARD_EXPERIMENT") or DEFAULT_EXPERIMENT
        self._exp_id = _experiment_id(self._experiment_name)
        out = env.get("TORCHYARD_OUTPUT_DIR") or os.path.abspath("outputs")
        self._artifact_uri = Path(out).as_uri()
        self._journal = j.journal_path(env["TORCHYARD_JOURNAL_DIR"], run.rank)
        self._start = int(time.time() * 1000)
        self._status = _RUNNING
        self._user = _user()
        self._models_root = Root(out)
        ws = env.get("TORCHYARD_WORKSPACE") or workspace_path(store_uri)
        seen = bool(ws) and os.path.isfile(os.path.join(ws, "workspace.json"))
        self._ws_models = WorkspaceModels(ws) if seen else None

    # ---- experiments: one, the run's ----------------------------------------------------------

    def _exp(self) -> Experiment:
        return _experiment(self._experiment_name, self._artifact_uri)

    def search_experiments(self, view_type: Any = ViewType.ACTIVE_ONLY, max_results: Any = None,
                           filter_string: Any = None, order_by: Any = None, page_token: Any = None) -> Any:
        return PagedList([self._exp()], None)

    def create_experiment(self, name: str, artifact_location: Any = None, tags: Any = None) -> str:
        return self._exp_id

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self._exp()

    def get_experiment_by_name(self, experiment_name: str) -> Experiment:
        return self._exp()

    def delete_experiment(self, experiment_id: str) -> None:
        raise _unsupported("deleting an experiment inside a run")

    def restore_experiment(self, experiment_id: str) -> None:
        raise _unsupported("restoring an experiment inside a run")

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        raise _unsupported("renaming an experiment inside a run")

    def set_experiment_tag(self, experiment_id: str, tag: Any) -> None:
        pass  # the run's experiment has no tags of its own

    # ---- the run ------------------------------------------------------------------------------

    def _check(self, run_id: str) -> None:
        if run_id != self._run_id:
            raise _not_found(f"run {run_id!r}: inside torchyard run {self._run_id!r} only that run exists")

    def _info(self) -> RunInfo:
        return RunInfo(self._run_id, self._exp_id, self._user, self._status, self._start, None,
                       LifecycleStage.ACTIVE, self._artifact_uri, self._run_id)

    def _read_journal(self) -> tuple[list[Any], list[Any]]:
        self._run.flush()
        return j.JournalReader(self._journal).read_new()

    def get_run(self, run_id: str) -> Run:
        self._check(run_id)
        series, records = self._read_journal()
        merged: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
        for name, values, steps, ts in series:
            acc = merged.setdefault(name, ([], [], []))
            acc[0].extend(values)
            acc[1].extend(steps)
            acc[2].extend(ts)
        params = {name: value for kind, name, value, _s, _t in records if kind == j.PROPERTY}
        tags = {name: value for kind, name, value, _s, _t in records if kind == j.TAG}
        data = RunData(
            metrics=_metrics_from_series((n, *cols) for n, cols in merged.items()),
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        return Run(self._info(), data, run_outputs=_outputs(self._lm_outputs(self._run_id)))

    def create_run(self, experiment_id: str, user_id: str, start_time: int, tags: Any, run_name: str | None) -> Run:
        user = _user_tags(tags)
        if user:
            self._run.set_tags(user)
        self._status = _RUNNING
        return self.get_run(self._run_id)

    def update_run_info(self, run_id: str, run_status: Any, end_time: Any, run_name: Any) -> RunInfo:
        self._check(run_id)
        self._status = RunStatus.to_string(run_status)
        if self._status != _RUNNING:
            self._run.flush()
        return self._info()

    def delete_run(self, run_id: str) -> None:
        raise _unsupported("deleting the run from inside it")

    def restore_run(self, run_id: str) -> None:
        raise _unsupported("restoring a run")

    def _search_runs(self, experiment_ids: Any, filter_string: Any, run_view_type: Any, max_results: Any,
                     order_by: Any, page_token: Any) -> Any:
        return _search([self.get_run(self._run_id)], filter_string, max_results, order_by, page_token)

    def get_metric_history(self, run_id: str, metric_key: str, max_results: Any = None, page_token: Any = None) -> Any:
        self._check(run_id)
        series, _records = self._read_journal()
        out = [
            Metric(metric_key, v, int(t * 1000), s if s is not None else 0)
            for name, values, steps, ts in series
            if name == metric_key
            for v, s, t in zip(values, steps, ts, strict=True)
        ]
        return PagedList(out, None)

    # ---- logging: the journal -----------------------------------------------------------------

    def log_metric(self, run_id: str, metric: Metric) -> None:
        if run_id != self._run_id:
            self._check(run_id)
        if getattr(metric, "model_id", None):
            self.log_batch(run_id, [metric], [], [])
            return
        self._run.log_scalars(((metric.key, metric.value, metric.step, metric.timestamp / 1000.0),))

    def log_param(self, run_id: str, param: Param) -> None:
        self._check(run_id)
        self._run.add_properties({param.key: param.value})

    def set_tag(self, run_id: str, tag: RunTag) -> None:
        self._check(run_id)
        self._run.tag(tag.key, tag.value)

    def delete_tag(self, run_id: str, key: str) -> None:
        raise _unsupported("deleting a tag (torchyard tags can be overwritten, not removed)")

    def log_batch(self, run_id: str, metrics: Sequence[Metric], params: Sequence[Param], tags: Sequence[RunTag]) -> None:
        self._check(run_id)
        metrics = self._lm_split_metrics(run_id, list(metrics))
        if metrics:
            self._run.log_scalars((m.key, m.value, m.step, m.timestamp / 1000.0) for m in metrics)
        if params:
            self._run.add_properties({p.key: p.value for p in params})
        if tags:
            self._run.set_tags({t.key: t.value for t in tags})

    def log_inputs(self, run_id: str, datasets: Any = None, models: Any = None) -> None:
        pass  # dataset and model inputs are not kept (metrics, params, tags and artifacts are)

    def link_traces_to_run(self, trace_ids: list[str], run_id: str) -> None:
        pass  # traces are not kept

    # ---- logged models: this run's, in this node's outputs/ -----------------------------------

    def _lm_new_root(self, experiment_id: str, source_run_id: str | None) -> tuple[Root, str, str | None]:
        if source_run_id:
            self._check(source_run_id)
        return self._models_root, self._exp_id, self._run_id  # a model logged in a run is the run's

    def _lm_find(self, model_id: str) -> Root | None:
        if self._models_root.has(model_id):
            return self._models_root
        return self._ws_models.find(model_id) if self._ws_models is not None else None

    def _lm_candidates(self, experiment_ids: list[str]) -> Any:
        return ((self._models_root, rec) for rec in self._models_root.records())

    def _lm_in(self, rec: dict[str, Any], experiment_ids: set[str]) -> bool:
        return True  # any experiment is the run's

    def _lm_run_roots(self, run_id: str) -> list[Root]:
        return [self._models_root] if run_id == self._run_id else []


_TO_TORCHYARD = {"FINISHED": "Completed", "FAILED": "Failed", "KILLED": "Canceled", "RUNNING": "Running"}
_TO_MLFLOW = {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED", "NotStarted": "SCHEDULED",
              "Queued": "SCHEDULED"}


class WorkspaceStore(LoggedModelsMixin, AbstractStore):
    """MLflow outside a run, logging into a torchyard workspace: each MLflow run is a new torchyard run.

    A logged model with a source run goes into that run's artifacts (``outputs/<name>``); one
    logged with no run into ``<workspace>/mlflow/models`` (see :mod:`._mlflow_models`).
    """

    def __init__(self, store_uri: str, artifact_uri: str | None = None) -> None:
        super().__init__()
        from torchyard.sdk import Workspace  # noqa: PLC0415

        self._uri = store_uri
        self._ws = Workspace(path=workspace_path(store_uri) or None)
        self._store = self._ws.store
        self._models = WorkspaceModels(self._ws.path)
        self._new_experiments: set[str] = set()
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None

    # ---- experiments ------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        names = set(self._store.list_experiments()) | self._new_experiments | {DEFAULT_EXPERIMENT}
        return sorted(names)

    def _artifact_root(self) -> str:
        return Path(self._ws.path, "artifacts").as_uri()

    def search_experiments(self, view_type: Any = ViewType.ACTIVE_ONLY, max_results: Any = None,
                           filter_string: Any = None, order_by: Any = None, page_token: Any = None) -> Any:
        exps = [_experiment(n, self._artifact_root()) for n in self._names()]
        if filter_string:
            exps = SearchExperimentsUtils.filter(exps, filter_string)
        return PagedList(exps, None)

    def create_experiment(self, name: str, artifact_location: Any = None, tags: Any = None) -> str:
        from torchyard.workspace.workspace import check_name  # noqa: PLC0415

        try:
            check_name(name)
        except Exception as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        self._new_experiments.add(name)  # it is stored with its first run
        return _experiment_id(name)

    def get_experiment(self, experiment_id: str) -> Experiment:
        return _experiment(_experiment_name(experiment_id), self._artifact_root())

    def get_experiment_by_name(self, experiment_name: str) -> Experiment | None:
        if experiment_name not in self._names():
            return None
        return _experiment(experiment_name, self._artifact_root())

    def delete_experiment(self, experiment_id: str) -> None:
        raise _unsupported("deleting an experiment")

    def restore_experiment(self, experiment_id: str) -> None:
        raise _unsupported("restoring an experiment")

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        raise _unsupported("renaming an experiment")

    def set_experiment_tag(self, experiment_id: str, tag: Any) -> None:
        pass  # torchyard experiments have no tags

    # ---- runs ---------------------------------------------------------------------------------

    def _row(self, run_id: str) -> dict[str, Any]:
        from torchyard.errors import NotFoundError  # noqa: PLC0415

        try:
            return dict(self._store.get_run(run_id))
        except NotFoundError:
            raise _not_found(f"no run {run_id!r} in workspace {self._ws.path}") from None

    def _artifact_uri(self, run_id: str) -> str:
        return Path(self._ws.artifacts_dir(run_id), "outputs").as_uri()

    def _info(self, row: dict[str, Any]) -> RunInfo:
        status = _TO_MLFLOW.get(row["status"], _RUNNING)
        spec = json.loads(row["spec"] or "{}")
        end = int(row["ended_at"] * 1000) if row.get("ended_at") else None
        return RunInfo(row["id"], _experiment_id(row["experiment"]), spec.get("user") or _user(), status,
                       int(row["created_at"] * 1000), end, LifecycleStage.ACTIVE, self._artifact_uri(row["id"]),
                       row.get("display_name") or row["id"])

    def _run(self, row: dict[str, Any]) -> Run:
        run_id = row["id"]
        series = self._store.get_series(run_id, rank=0)
        data = RunData(
            metrics=_metrics_from_series((name, *cols) for (_rank, name), cols in series.items()),
            params=[Param(k, v) for k, v in self._store.get_properties(run_id).items()],
            tags=[RunTag(k, v) for k, v in self._store.get_tags(run_id).items()],
        )
        return Run(self._info(row), data, run_outputs=_outputs(self._lm_outputs(run_id)))

    def get_run(self, run_id: str) -> Run:
        return self._run(self._row(run_id))

    def create_run(self, experiment_id: str, user_id: str, start_time: int, tags: Any, run_name: str | None) -> Run:
        from torchyard.status import RunStatus as TyStatus  # noqa: PLC0415

        experiment = _experiment_name(experiment_id)
        run_id = f"{experiment}_{int(time.time())}_{secrets.token_hex(4)}"
        run_dir = self._ws.run_dir(run_id)
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(self._ws.artifacts_dir(run_id), "outputs"), exist_ok=True)
        spec = {"kind": "mlflow", "tracking_uri": self._uri, "user": _user(user_id), "pid": os.getpid()}
        self._store.create_run(run_id=run_id, experiment=experiment, spec_json=json.dumps(spec),
                               compute_target="mlflow", run_dir=run_dir, tags=_user_tags(tags),
                               display_name=run_name)
        self._store.set_status(run_id, TyStatus.RUNNING, "logging from MLflow")
        self._store.set_supervisor(run_id, os.getpid())  # a process that dies mid-run is noticed
        with self._lock:
            self._live.add(run_id)
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeat, name="torchyard-mlflow-heartbeat", daemon=True)
                self._beat.start()
        return self.get_run(run_id)

    def _heartbeat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            with self._lock:
                live = list(self._live)
            for run_id in live:
                try:
                    self._store.heartbeat(run_id)
                except Exception:  # the database is away for a moment: the next beat tries again
                    pass

    def update_run_info(self, run_id: str, run_status: Any, end_time: Any, run_name: Any) -> RunInfo:
        from torchyard.status import RunStatus as TyStatus  # noqa: PLC0415

        status = TyStatus(_TO_TORCHYARD.get(RunStatus.to_string(run_status), "Running"))
        if status.is_terminal:
            with self._lock:
                self._live.discard(run_id)
            self._store.set_status(run_id, status, "ended by MLflow",
                                   exit_code=0 if status is TyStatus.COMPLETED else None)
        return self._info(self._row(run_id))

    def delete_run(self, run_id: str) -> None:
        raise _unsupported("deleting a run")

    def restore_run(self, run_id: str) -> None:
        raise _unsupported("restoring a run")

    def _search_runs(self, experiment_ids: Any, filter_string: Any, run_view_type: Any, max_results: Any,
                     order_by: Any, page_token: Any) -> Any:
        rows: list[dict[str, Any]] = []
        for exp_id in experiment_ids or ["0"]:
            rows.extend(self._store.list_runs(experiment=_experiment_name(exp_id)))
        return _search([self._run(r) for r in rows], filter_string, max_results, order_by, page_token)

    def get_metric_history(self, run_id: str, metric_key: str, max_results: Any = None, page_token: Any = None) -> Any:
        self._row(run_id)
        got = self._store.get_series(run_id, rank=0, name=metric_key).get((0, metric_key))
        if not got:
            return PagedList([], None)
        values, steps, ts = got
        return PagedList([Metric(metric_key, v, int(t * 1000), s if s is not None else 0)
                          for v, s, t in zip(values, steps, ts, strict=True)], None)

    # ---- logging: the store -------------------------------------------------------------------

    def log_batch(self, run_id: str, metrics: Sequence[Metric], params: Sequence[Param], tags: Sequence[RunTag]) -> None:
        metrics = self._lm_split_metrics(run_id, list(metrics))
        if metrics:
            columns: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
            for m in metrics:
                col = columns.setdefault(m.key, ([], [], []))
                col[0].append(float(m.value))
                col[1].append(m.step)
                col[2].append(m.timestamp / 1000.0)
            self._store.insert_series(run_id, 0, [(k, *cols) for k, cols in columns.items()])
        if params:
            try:
                self._store.add_properties(run_id, {p.key: str(p.value) for p in params})
            except Exception as err:
                raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        if tags:
            self._store.set_tags(run_id, {t.key: str(t.value) for t in tags})

    def delete_tag(self, run_id: str, key: str) -> None:
        raise _unsupported("deleting a tag (torchyard tags can be overwritten, not removed)")

    def log_inputs(self, run_id: str, datasets: Any = None, models: Any = None) -> None:
        pass  # dataset and model inputs are not kept (metrics, params, tags and artifacts are)

    def link_traces_to_run(self, trace_ids: list[str], run_id: str) -> None:
        pass  # traces are not kept

    # ---- logged models ------------------------------------------------------------------------

    def _lm_new_root(self, experiment_id: str, source_run_id: str | None) -> tuple[Root, str, str | None]:
        if not source_run_id:
            return self._models.runless, experiment_id, None
        row = self._row(source_run_id)
        return Root(Path(self._ws.artifacts_dir(source_run_id), "outputs")), _experiment_id(row["experiment"]), row["id"]

    def create_logged_model(self, experiment_id: str = "0", name: str | None = None, source_run_id: str | None = None,
                            tags: Any = None, params: Any = None, model_type: str | None = None) -> Any:
        model = super().create_logged_model(experiment_id, name, source_run_id, tags, params, model_type)
        if model.source_run_id:
            self._models.remember(model.model_id, model.source_run_id)
        return model

    def _lm_find(self, model_id: str) -> Root | None:
        return self._models.find(model_id)

    def _lm_candidates(self, experiment_ids: list[str]) -> Any:
        for exp_id in experiment_ids:
            for row in self._store.list_runs(experiment=_experiment_name(exp_id)):
                for root in self._models.run_roots(row["id"]):
                    for rec in root.records():
                        yield root, rec
        runless = self._models.runless
        for rec in runless.records():
            yield runless, rec

    def _lm_run_roots(self, run_id: str) -> list[Root]:
        return self._models.run_roots(run_id)


def tracking_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    """MLflow's store builder for the ``torchyard`` scheme (called by MLflow)."""
    if in_run_environment(store_uri):
        return InRunStore(store_uri, artifact_uri)
    return WorkspaceStore(store_uri, artifact_uri)
