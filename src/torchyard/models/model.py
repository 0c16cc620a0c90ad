"""``Model``: a registered model version (Azure ML v1's ``azureml.core.Model`` shape)."""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from torchyard.errors import NotFoundError, SpecError, WorkspaceError

if TYPE_CHECKING:
    from torchyard.models.webservice import InferenceConfig, Webservice
    from torchyard.workspace.models import ModelRecord, ModelRegistry
    from torchyard.workspace.workspace import WorkspaceFolder as Workspace


def registry(ws: Workspace) -> ModelRegistry:
    """The workspace's model registry (store + snapshot objects); a team server's workspace: its
    registry over HTTP (``RemoteWorkspace.model_registry()``, the same methods)."""
    if getattr(ws, "is_remote", False):
        return ws.model_registry()  # type: ignore[attr-defined]
    from torchyard.workspace.models import ModelRegistry  # noqa: PLC0415

    return ModelRegistry(ws.store, ws.snapshots)


def _parse_id(model_id: str) -> tuple[str, int | None]:
    name, sep, version = str(model_id).partition(":")
    if not sep:
        return name, None
    try:
        return name, int(version)
    except ValueError:
        raise SpecError("id", f"expected NAME or NAME:VERSION, got {model_id!r}") from None


class Model:
    """One registered model version.

    ``Model(ws, "digits")`` is the latest version, ``Model(ws, "digits", version=2)`` a given one,
    ``Model(ws, "digits", alias="champion")`` the one an alias points at, ``Model(ws, id="digits:2")``
    the same by id. Raises :class:`~torchyard.errors.NotFoundError` for an unknown name, version or
    alias.
    """

    def __init__(
        self,
        workspace: Workspace,
        name: str | None = None,
        version: int | None = None,
        alias: str | None = None,
        *,
        id: str | None = None,  # noqa: A002 - Azure's parameter name
        tags: Any = None,
        _record: ModelRecord | None = None,
    ) -> None:
        self.workspace = workspace
        if _record is None:
            if id is not None:
                name, version = _parse_id(id)
            if name is None:
                raise SpecError("name", "give a model name (or id='NAME:VERSION')")
            if tags is not None and version is None and alias is None:
                found = registry(workspace).list(name=name, tags=tags, latest=False)
                if not found:
                    raise NotFoundError(f"no version of model {name!r} has the tags {tags!r}")
                _record = found[0]
            else:
                _record = registry(workspace).get(name, version, alias)
        self._rec = _record

    # ---- identity ---------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """``NAME:VERSION``, e.g. ``digits:2``."""
        return self._rec.id

    @property
    def name(self) -> str:
        """The model's name."""
        return self._rec.name

    @property
    def version(self) -> int:
        """This version's number (1, 2, ... per name; never reused)."""
        return self._rec.version

    @property
    def run_id(self) -> str | None:
        """The run this version was registered from (None when registered from a path)."""
        return self._rec.run_id

    @property
    def experiment_name(self) -> str | None:
        """The experiment of the run it was registered from, or None."""
        return self._rec.experiment

    @property
    def description(self) -> str | None:
        """The description given at registration, or None."""
        return self._rec.description

    @property
    def model_framework(self) -> str | None:
        """The framework given at registration (e.g. ``PyTorch``), or None."""
        return self._rec.framework

    @property
    def sha256(self) -> str:
        """The file's SHA-256 (single-file model) or the manifest's (folder)."""
        return self._rec.sha256

    @property
    def tags(self) -> dict[str, str]:
        """This version's tags (mutable)."""
        return dict(self._rec.tags)

    @property
    def properties(self) -> dict[str, str]:
        """This version's properties (add-only)."""
        return dict(self._rec.properties)

    @property
    def aliases(self) -> list[str]:
        """The aliases that point at this version."""
        return list(self._rec.aliases)

    @property
    def created_time(self) -> float:
        """When this version was registered (seconds since the epoch)."""
        return self._rec.created_at

    @property
    def file_name(self) -> str:
        """The registered file's or folder's base name (what ``download`` writes)."""
        return self._rec.file_name

    def serialize(self) -> dict[str, Any]:
        """The version's record as a JSON-able dict."""
        return self._rec.to_dict()

    def __repr__(self) -> str:
        return f"Model(id={self.id!r}, run_id={self.run_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and other.id == self.id and other.workspace.path == self.workspace.path

    def __hash__(self) -> int:
        return hash((self.workspace.path, self.id))

    def _reload(self) -> None:
        self._rec = registry(self.workspace).get(self.name, self.version)

    # ---- register, list ---------------------------------------------------------------------------

    @staticmethod
    def register(
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        **_azure_only: Any,
    ) -> Model:
        """Register the file or folder at ``model_path`` as the next version of ``model_name``.

        Its content is stored by SHA-256 in the workspace's object store (bytes stored before —
        by a run's snapshot or an earlier version — cost nothing new)."""
        rec = registry(workspace).register(
            model_name,
            model_path,
            tags=dict(tags) if tags is not None else None,
            properties=dict(properties) if properties is not None else None,
            description=description,
            framework=model_framework,
        )
        return Model(workspace, _record=rec)

    @staticmethod
    def list(
        workspace: Workspace,
        name: str | None = None,
        tags: Any = None,
        properties: Any = None,
        latest: bool = False,
        run_id: str | None = None,
    ) -> list[Model]:
        """Registered versions (by name, newest first). ``tags``: keys or ``[key, value]`` pairs (or
        a dict) that must match; ``latest``: only each name's newest matching version."""
        recs = registry(workspace).list(name=name, tags=tags, latest=False)
        if properties is not None:
            want = properties.items() if isinstance(properties, dict) else [tuple(p) for p in properties]
            recs = [r for r in recs if all(r.properties.get(str(k)) == str(v) for k, v in want)]
        if run_id is not None:
            recs = [r for r in recs if r.run_id == run_id]
        if latest:
            seen: set[str] = set()
            recs = [r for r in recs if not (r.name in seen or seen.add(r.name))]  # type: ignore[func-returns-value]
        return [Model(workspace, _record=r) for r in recs]

    # ---- files ------------------------------------------------------------------------------------

    def download(self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False) -> str:
        """Write the version's file (or folder, under its registered name) into ``target_dir``;
        returns its path. Raises WorkspaceError if it is there already unless ``exist_ok``."""
        target = os.path.abspath(os.fspath(target_dir))
        dest = os.path.join(target, self.file_name)
        if os.path.exists(dest) and not exist_ok:
            raise WorkspaceError(f"{dest} exists; pass exist_ok=True to overwrite it")
        reg = registry(self.workspace)
        if self._rec.kind == "file":
            with tempfile.TemporaryDirectory(dir=target if os.path.isdir(target) else None) as tmp:
                got = reg.materialize(self._rec, tmp, link=False)
                os.makedirs(target, exist_ok=True)
                os.replace(got, dest)
            return dest
        os.makedirs(dest, exist_ok=True)
        return reg.materialize(self._rec, dest, link=False)

    # ---- change -----------------------------------------------------------------------------------

    def update(self, tags: Mapping[str, Any] | None = None, description: str | None = None) -> None:
        """Set (add or overwrite) tags. Versions are immutable otherwise; ``description`` is refused."""
        if description is not None:
            raise SpecError("description", "a version's description is immutable; register a new version")
        registry(self.workspace).set_tags(self.name, self.version, {str(k): str(v) for k, v in (tags or {}).items()})
        self._reload()

    def add_tags(self, tags: Mapping[str, Any]) -> None:
        """Add or change tags of this version."""
        self.update(tags=tags)

    def remove_tags(self, keys: builtins.list[str]) -> None:
        """Remove these tag keys from this version."""
        registry(self.workspace).set_tags(self.name, self.version, {}, remove=[str(k) for k in keys])
        self._reload()

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add properties (a key already set to another value raises WorkspaceError)."""
        registry(self.workspace).add_properties(
            self.name, self.version, {str(k): str(v) for k, v in properties.items()}
        )
        self._reload()

    def set_alias(self, alias: str) -> None:
        """Point ``alias`` (e.g. ``"champion"``) at this version; it moves atomically from wherever it
        pointed, and every move is kept (``alias_history``)."""
        registry(self.workspace).set_alias(self.name, self.version, alias)
        self._reload()

    def remove_alias(self, alias: str) -> None:
        """Remove an alias of this model's name (the move is kept in its alias history)."""
        registry(self.workspace).remove_alias(self.name, alias)
        self._reload()

    def alias_history(self, alias: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every (re-)point of this model name's aliases, oldest first."""
        return registry(self.workspace).alias_history(self.name, alias)

    def delete(self) -> None:
        """Remove this version from the registry. Refused while a service uses it."""
        if getattr(self.workspace, "is_remote", False):  # the server refuses it while a service uses it
            registry(self.workspace).delete(self.name, self.version)
            return
        from torchyard.workspace.services import services_using  # noqa: PLC0415

        users = services_using(self.workspace.path, self.id)
        if users:
            raise WorkspaceError(
                f"model {self.id} is used by the service(s) {', '.join(users)}; delete or update them first"
            )
        registry(self.workspace).delete(self.name, self.version)

    # ---- deploy -----------------------------------------------------------------------------------

    @staticmethod
    def deploy(
        workspace: Workspace,
        name: str,
        models: builtins.list[Model],
        inference_config: InferenceConfig | None = None,
        deployment_config: Any = None,
        deployment_target: str | None = None,
        overwrite: bool = False,
    ) -> Webservice:
        """Start a scoring service ``name`` serving ``models`` (Azure v1's ``Model.deploy``). On a
        team server's workspace the entry script's folder is uploaded and the service runs on the
        server (a :class:`torchyard.remote.models.RemoteWebservice`)."""
        if getattr(workspace, "is_remote", False):
            return workspace.deploy_service(name, models, inference_config,  # type: ignore[attr-defined]
                                            deployment_config, deployment_target, overwrite)
        from torchyard.models.webservice import deploy  # noqa: PLC0415

        return deploy(workspace, name, models, inference_config, deployment_config, deployment_target, overwrite)


class _RunLike(Protocol):
    """What registering needs of a run (``torchyard.Run`` is one)."""

    id: str
    experiment: Any

    def get_file_names(self) -> list[str]: ...

    def download_file(self, name: str, output_file_path: str | None = None) -> str: ...

    def _remote(self) -> Any: ...


def register_from_run(
    run: _RunLike,
    model_name: str,
    model_path: str = "outputs/model.pt",
    tags: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    description: str | None = None,
    model_framework: str | None = None,
) -> Model:
    """``run.register_model``: register the run's artifact ``model_path`` (a file, or a folder
    prefix such as ``outputs/model``) with lineage to the run and its experiment."""
    rel = os.path.normpath(str(model_path)).lstrip("/")
    names = run.get_file_names()
    matched = [n for n in names if n == rel or n.startswith(rel + "/")]
    if not matched:
        hint = f"; it has {', '.join(names[:10])}" if names else "; it has no artifacts (yet: outputs are collected at Finalizing)"
        raise SpecError("model_path", f"run {run.id} has no file or folder {rel!r}{hint}")
    ws = run.experiment.workspace
    local_root = ws.artifacts_dir(run.id)
    props = {"azureml.runId": run.id, **{str(k): str(v) for k, v in (properties or {}).items()}}
    common: dict[str, Any] = {
        "tags": {str(k): str(v) for k, v in (tags or {}).items()},
        "properties": props,
        "description": description,
        "framework": model_framework,
        "run_id": run.id,
        "experiment": run.experiment.name,
        "file_name": os.path.basename(rel),
    }
    reg = registry(ws)
    if run._remote() is None and os.path.exists(os.path.join(local_root, rel)):
        rec = reg.register(model_name, os.path.join(local_root, rel), **common)
        return Model(ws, _record=rec)
    tmp = tempfile.mkdtemp(prefix="torchyard-model-")
    try:
        for name in matched:
            run.download_file(name, os.path.join(tmp, name))
        rec = reg.register(model_name, os.path.join(tmp, rel), **common)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Model(ws, _record=rec)


def register_checkpoint(
    run: Any,
    model_name: str,
    step: int,
    tags: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    description: str | None = None,
    model_framework: str | None = None,
) -> Model:
    """``run.register_model(name, checkpoint=STEP)``: register the committed checkpoint ``step_STEP``
    (the folder as it is in the run's artifacts, its manifest included; a checkpoint committed on the
    node and not copied yet is taken from there) as a new version of ``model_name``, with lineage
    properties ``torchyard.checkpoint_step`` / ``_metrics`` / ``_attempt`` beside ``azureml.runId``."""
    import json  # noqa: PLC0415

    if isinstance(step, bool) or not isinstance(step, int):
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise SpecError("checkpoint", f"expected a checkpoint's step (an integer), got {step!r}") from None
    found = run.get_checkpoints()
    ck = next((c for c in found if c["step"] == step), None)
    if ck is None:
        have = f"its steps are {', '.join(str(c['step']) for c in found)}" if found else "it has no committed checkpoint"
        raise NotFoundError(f"run {run.id} has no committed checkpoint step_{step}; {have} "
                            f"(`torchyard checkpoints {run.id}` lists them)", run_id=run.id)
    props = {
        "torchyard.checkpoint_step": str(step),
        "torchyard.checkpoint_attempt": str(ck.get("attempt", 0)),
        "torchyard.checkpoint_metrics": json.dumps(ck.get("metrics") or {}, sort_keys=True),
        **{str(k): str(v) for k, v in (properties or {}).items()},
    }
    try:
        if ck["where"] == "artifacts":
            return register_from_run(run, model_name, ck["artifact"], tags, props, description, model_framework)
        ws = run.experiment.workspace  # committed on the node, not copied into the artifacts yet
        rec = registry(ws).register(
            model_name, ck["path"], tags={str(k): str(v) for k, v in (tags or {}).items()},
            properties={"azureml.runId": run.id, **props}, description=description, framework=model_framework,
            run_id=run.id, experiment=run.experiment.name, file_name=os.path.basename(ck["path"]))
    except OSError:
        if any(c["step"] == step for c in run.get_checkpoints()):
            raise
        raise NotFoundError(f"run {run.id}: checkpoint step_{step} was deleted (keep_last/keep_best) while it was "
                            f"being registered", run_id=run.id) from None
    return Model(ws, _record=rec)
