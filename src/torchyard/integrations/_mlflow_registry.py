"""MLflow's model registry over torchyard's: the ``mlflow.model_registry_store`` plugin for ``torchyard:`` URIs.

``mlflow.register_model(model_uri, name)`` (and ``log_model(..., registered_model_name=...)``) make a
new version of ``name`` in the workspace's model registry, the same registry as ``Model.register``
and ``run.register_model``: the model folder is stored by content, with lineage to the source run
and its experiment (properties ``azureml.runId``, ``mlflow.model_id``, ``mlflow.source``; framework
``MLflow``). ``models:/<name>/<version>``, ``models:/<name>@<alias>`` and ``models:/<name>/latest``
load a version back (materialized, as read-only hard links, under ``<workspace>/mlflow/registry/``).

torchyard's registry has no separate "registered model" object, no stages and immutable
descriptions: ``create_registered_model`` reserves a name for its first version, stages are always
``None``, and the calls that would need more say so. Imported by MLflow (through the plugin's
builder) only; it imports mlflow at module level.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from mlflow.entities.model_registry import (
    ModelVersion,
    ModelVersionTag,
    RegisteredModel,
    RegisteredModelAlias,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.abstract_store import AbstractStore
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.search_utils import SearchModelUtils, SearchModelVersionUtils, SearchUtils

from torchyard.errors import NotFoundError, SpecError, WorkspaceError
from torchyard.integrations.mlflow import workspace_path

STAGE = "None"  # MLflow's stage of a version that was never transitioned: every version here
FRAMEWORK = "MLflow"
SEARCH_MAX_RESULTS_DEFAULT = 100


def _unsupported(what: str) -> MlflowException:
    return MlflowException(f"{what} is not supported by torchyard's model registry", error_code=INVALID_PARAMETER_VALUE)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """torchyard's errors as MLflow's (so MLflow's callers see the codes they test for)."""
    try:
        yield
    except NotFoundError as err:
        raise MlflowException(str(err), error_code=RESOURCE_DOES_NOT_EXIST) from None
    except SpecError as err:
        raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
    except WorkspaceError as err:
        raise MlflowException(str(err), error_code=INVALID_STATE) from None


def _version_number(version: Any) -> int:
    try:
        number = int(str(version))
    except ValueError:
        raise MlflowException(f"invalid model version {version!r}", error_code=INVALID_PARAMETER_VALUE) from None
    if number < 1:
        raise MlflowException(f"invalid model version {version!r}", error_code=INVALID_PARAMETER_VALUE)
    return number


def _local_path(uri: str) -> str | None:
    """The local path a ``file:`` URI or a plain path names, else None."""
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme == "file" or (scheme == "" and uri):
        return os.path.abspath(local_file_uri_to_path(uri))
    return None


class RegistryStore(AbstractStore):
    """MLflow's registry calls on a workspace's model registry (local workspace folder or database)."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        super().__init__(store_uri, tracking_uri)
        from torchyard.models.model import registry  # noqa: PLC0415
        from torchyard.sdk import Workspace  # noqa: PLC0415

        self._uri = store_uri
        self._tracking_uri = tracking_uri
        self._ws = Workspace(path=workspace_path(store_uri) or None)
        self._reg = registry(self._ws)
        self._reserved: dict[str, int] = {}  # names created with no version yet -> creation time (ms)

    # ---- entities --------------------------------------------------------------------------------

    def _version(self, rec: Any) -> ModelVersion:
        created = int(rec.created_at * 1000)
        return ModelVersion(
            name=rec.name,
            version=str(rec.version),
            creation_timestamp=created,
            last_updated_timestamp=created,
            description=rec.description,
            user_id=rec.created_by,
            current_stage=STAGE,
            source=rec.properties.get("mlflow.source") or f"models:/{rec.name}/{rec.version}",
            run_id=rec.run_id,
            tags=[ModelVersionTag(k, v) for k, v in rec.tags.items()],
            aliases=list(rec.aliases),
            model_id=rec.properties.get("mlflow.model_id"),
        )

    def _registered(self, name: str) -> RegisteredModel:
        with _errors():
            versions = self._reg.list(name=name)
        if not versions:
            if name in self._reserved:
                return RegisteredModel(name, self._reserved[name], self._reserved[name])
            raise MlflowException(f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        latest, first = versions[0], versions[-1]
        aliases = [RegisteredModelAlias(a, str(rec.version)) for rec in versions for a in rec.aliases]
        return RegisteredModel(name, int(first.created_at * 1000), int(latest.created_at * 1000),
                               latest_versions=[self._version(latest)], aliases=aliases)

    # ---- registered models -----------------------------------------------------------------------

    def create_registered_model(self, name: str, tags: Any = None, description: Any = None,
                                deployment_job_id: Any = None) -> RegisteredModel:
        from torchyard.workspace.models import check_model_name  # noqa: PLC0415

        with _errors():
            check_model_name(name, "name")
            exists = bool(self._reg.list(name=name))
        if exists:
            raise MlflowException(f"Registered Model (name={name}) already exists.", error_code=RESOURCE_ALREADY_EXISTS)
        if tags:
            raise _unsupported("tags on a registered model (tag its versions)")
        self._reserved.setdefault(name, int(time.time() * 1000))  # stored with its first version
        return RegisteredModel(name, self._reserved[name], self._reserved[name], description=description)

    def get_registered_model(self, name: str) -> RegisteredModel:
        return self._registered(name)

    def search_registered_models(self, filter_string: Any = None, max_results: Any = None, order_by: Any = None,
                                 page_token: Any = None) -> PagedList[RegisteredModel]:
        names = sorted(set(self._reg.names()) | set(self._reserved))
        found = SearchModelUtils.filter([self._registered(n) for n in names], filter_string)
        return self._page(SearchModelUtils.sort(found, order_by), max_results, page_token)

    def get_latest_versions(self, name: str, stages: Any = None) -> list[ModelVersion]:
        model = self._registered(name)
        if stages and not any(str(s).lower() == STAGE.lower() for s in stages):
            return []
        return list(model.latest_versions or [])

    def update_registered_model(self, name: str, description: Any, deployment_job_id: Any = None) -> Any:
        raise _unsupported("a registered model's description (each version keeps its own)")

    def rename_registered_model(self, name: str, new_name: str) -> Any:
        raise _unsupported("renaming a registered model")

    def delete_registered_model(self, name: str) -> None:
        raise _unsupported("deleting a registered model (delete its versions)")

    def set_registered_model_tag(self, name: str, tag: Any) -> None:
        raise _unsupported("tags on a registered model (tag its versions)")

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        raise _unsupported("tags on a registered model (tag its versions)")

    # ---- versions --------------------------------------------------------------------------------

    def _logged_model(self, model_id: str) -> Any:
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        return MlflowClient(tracking_uri=self._tracking_uri).get_logged_model(model_id)

    def _source_folder(self, source: str, model_id: str | None, local_model_path: str | None,
                       tmp: str) -> tuple[str, Any]:
        """(the folder to register, the logged model or None)."""
        have_local = bool(local_model_path) and os.path.exists(str(local_model_path))
        logged = None
        if model_id:
            try:
                logged = self._logged_model(model_id)
            except MlflowException:
                if not have_local:
                    raise
        if have_local:
            return str(local_model_path), logged
        if logged is not None:
            path = _local_path(logged.artifact_location)
            if path and os.path.exists(path):
                return path, logged
            source = logged.artifact_location
        if source.startswith("runs:/"):
            from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository  # noqa: PLC0415

            underlying = RunsArtifactRepository.get_underlying_uri(source, self._tracking_uri)
            path = _local_path(underlying)
            if path and os.path.exists(path):
                return path, logged
        path = _local_path(source)
        if path is not None:
            if not os.path.exists(path):
                raise MlflowException(f"{source!r} does not exist", error_code=INVALID_PARAMETER_VALUE)
            return path, logged
        import mlflow.artifacts  # noqa: PLC0415

        return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=self._tracking_uri), logged

    def create_model_version(self, name: str, source: str, run_id: str | None = None, tags: Any = None,
                             run_link: Any = None, description: str | None = None, local_model_path: str | None = None,
                             model_id: str | None = None) -> ModelVersion:
        from mlflow.models import Model as MlflowModel  # noqa: PLC0415

        tmp = tempfile.mkdtemp(prefix="torchyard-mlflow-register-")
        try:
            folder, logged = self._source_folder(str(source), model_id, local_model_path, tmp)
            if model_id is None and os.path.isfile(os.path.join(folder, "MLmodel")):
                model_id = MlflowModel.load(folder).model_id  # a runs:/ URI of a logged model's folder
                if model_id:
                    with contextlib.suppress(MlflowException):
                        logged = self._logged_model(model_id)
            run_id = run_id or (logged.source_run_id if logged is not None else None)
            experiment = None
            if run_id:
                with _errors():
                    experiment = self._ws.store.get_run(run_id)["experiment"]
            props = {"mlflow.source": str(source)}
            if model_id:
                props["mlflow.model_id"] = model_id
            if run_id:
                props["azureml.runId"] = run_id
            file_name = logged.name if logged is not None else os.path.basename(folder.rstrip("/")) or "model"
            with _errors():
                rec = self._reg.register(
                    name, folder,
                    tags={t.key: str(t.value) for t in tags or []},
                    properties=props,
                    description=description,
                    framework=FRAMEWORK,
                    run_id=run_id,
                    experiment=experiment,
                    file_name=file_name,
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._reserved.pop(name, None)
        return self._version(rec)

    def get_model_version(self, name: str, version: Any) -> ModelVersion:
        with _errors():
            return self._version(self._reg.get(name, _version_number(version)))

    def get_model_version_download_uri(self, name: str, version: Any) -> str:
        """The version's files, materialized once under ``<workspace>/mlflow/registry/<name>/<version>``."""
        with _errors():
            rec = self._reg.get(name, _version_number(version))
        dest = os.path.join(self._ws.path, "mlflow", "registry", rec.name, str(rec.version))
        if not os.path.isdir(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{rec.version}-", dir=os.path.dirname(dest))
            self._reg.materialize(rec, tmp)
            try:
                os.rename(tmp, dest)
            except OSError:  # another process materialized it first
                shutil.rmtree(tmp, ignore_errors=True)
        if rec.kind == "file":
            return os.path.join(dest, self._reg.snapshots.load(rec.manifest_id).files[0].path)
        return dest

    def search_model_versions(self, filter_string: Any = None, max_results: Any = None, order_by: Any = None,
                              page_token: Any = None) -> PagedList[ModelVersion]:
        with _errors():
            versions = [self._version(r) for r in self._reg.list()]
        found = SearchModelVersionUtils.filter(versions, filter_string)
        found = SearchModelVersionUtils.sort(found, order_by or ["last_updated_timestamp DESC", "name ASC",
                                                                 "version_number DESC"])
        return self._page(found, max_results, page_token)

    def update_model_version(self, name: str, version: Any, description: Any) -> Any:
        raise _unsupported("changing a version's description (it is immutable; register a new version)")

    def transition_model_version_stage(self, name: str, version: Any, stage: Any, archive_existing_versions: Any) -> Any:
        raise _unsupported("model stages (deprecated in MLflow; use aliases)")

    def delete_model_version(self, name: str, version: Any) -> None:
        from torchyard.models.model import Model  # noqa: PLC0415

        with _errors():
            Model(self._ws, name, version=_version_number(version)).delete()  # refused while a service uses it

    def set_model_version_tag(self, name: str, version: Any, tag: Any) -> None:
        with _errors():
            self._reg.set_tags(name, _version_number(version), {str(tag.key): str(tag.value)})

    def delete_model_version_tag(self, name: str, version: Any, key: str) -> None:
        with _errors():
            self._reg.set_tags(name, _version_number(version), {}, remove=[str(key)])

    def set_registered_model_alias(self, name: str, alias: str, version: Any) -> None:
        with _errors():
            self._reg.set_alias(name, _version_number(version), alias)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        with _errors():
            self._reg.remove_alias(name, alias)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        with _errors():
            return self._version(self._reg.get(name, alias=alias))

    def copy_model_version(self, src_mv: Any, dst_name: str) -> ModelVersion:
        return self.create_model_version(dst_name, f"models:/{src_mv.name}/{src_mv.version}", src_mv.run_id,
                                         description=src_mv.description, model_id=src_mv.model_id)

    # ---- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _page(items: list[Any], max_results: Any, page_token: Any) -> PagedList[Any]:
        start = SearchUtils.parse_start_offset_from_page_token(page_token)
        end = start + (max_results or SEARCH_MAX_RESULTS_DEFAULT)
        token = SearchUtils.create_page_token(end) if end < len(items) else None
        return PagedList(items[start:end], token)


def registry_store(store_uri: str, tracking_uri: str | None = None) -> RegistryStore:
    """MLflow's registry-store builder for the ``torchyard`` scheme (called by MLflow)."""
    return RegistryStore(store_uri, tracking_uri)
