"""Azure's ``Dataset`` (azureml.core.Dataset) over torchyard's versioned data assets
(torchyard.data.datasets): ``Dataset.File.from_files``, ``Dataset.File.upload_directory``,
``register(..., create_new_version=True)``, ``Dataset.get_by_name``, ``as_named_input(...).as_mount()``
/ ``.as_download()``; a registered version shows the contents it was registered with, and runs record
the versions they read (``dataset.get_runs()``)."""

from __future__ import annotations

import os
from typing import Any

from torchyard.errors import SpecError


def _source(path: Any) -> dict[str, Any]:
    """Azure's ``path`` argument: a local path, ``(datastore, "relative/path")``, ``datastore.path(...)``
    (a DataReference), or a list of exactly one of those."""
    if isinstance(path, list | tuple) and path and not (len(path) == 2 and hasattr(path[0], "__torchyard_datastore__")):
        if len(path) != 1:
            raise SpecError("path", "one source per dataset here: give one folder, file or datastore path")
        path = path[0]
    if isinstance(path, tuple) and len(path) == 2 and hasattr(path[0], "__torchyard_datastore__"):
        store, rel = path
        return {"datastore": store.name, "path": str(rel).rstrip("*").rstrip("/")}
    if hasattr(path, "__torchyard_datastore__"):
        return {"datastore": path.name, "path": ""}
    if hasattr(path, "__torchyard_input__"):
        if path.url is not None:
            return {"path": path.url}
        return {"datastore": path.datastore, "path": path.path}
    if isinstance(path, str | os.PathLike):
        return {"path": os.path.abspath(os.fspath(path))}
    raise SpecError("path", f"expected a local path, (datastore, path) or datastore.path(...), got {type(path).__name__}")


class DatasetConsumptionConfig:
    """``dataset.as_named_input(name)``: how a run reads the dataset, named ``name`` among its inputs."""

    def __init__(self, dataset: FileDataset, name: str) -> None:
        self.dataset = dataset
        self.name = name

    def _reference(self, mode: str, path_on_compute: str | None) -> Any:
        from torchyard.data.references import DataReference  # noqa: PLC0415

        ds = self.dataset
        if ds.version is None:  # not registered: the source itself, as it is now
            src = ds._source
            if src.get("datastore"):
                ref = DataReference(src["datastore"], src.get("path") or "", mode, path_on_compute)
            else:
                ref = DataReference.from_url(src["path"], mode, path_on_compute)
        else:  # a registered version: its pinned files
            folder = ds._registry().files_of(ds._workspace, ds._record)
            ref = DataReference.from_url(folder, mode, path_on_compute)
        object.__setattr__(ref, "input_name", self.name)  # the job names the input so (spec.estimators)
        return ref

    def as_mount(self, path_on_compute: str | None = None) -> Any:
        """The dataset as an input the run reads in place (a data reference)."""
        return self._reference("mount", path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> Any:
        """The dataset as an input copied into the run's folder before it starts."""
        return self._reference("download", path_on_compute)


class FileDataset:
    """Files in a folder, a file, or a datastore path; once registered, a numbered version."""

    def __init__(self, source: dict[str, Any], workspace: Any = None, record: dict[str, Any] | None = None) -> None:
        self._source = source
        self._workspace = workspace
        self._record = record

    def _registry(self) -> Any:
        from torchyard.data.datasets import DatasetRegistry  # noqa: PLC0415

        return DatasetRegistry(self._workspace)

    @property
    def name(self) -> str | None:
        """The registered name (None before :meth:`register`)."""
        return self._record["name"] if self._record else None

    @property
    def version(self) -> int | None:
        """The registered version (None before :meth:`register`)."""
        return self._record["version"] if self._record else None

    @property
    def id(self) -> str | None:
        """``name:version`` of a registered dataset."""
        return f"{self.name}:{self.version}" if self._record else None

    @property
    def description(self) -> str | None:
        """What the registration said of it."""
        return self._record.get("description") if self._record else None

    @property
    def tags(self) -> dict[str, str]:
        """The registration's tags."""
        return dict(self._record.get("tags") or {}) if self._record else {}

    @property
    def digest(self) -> str | None:
        """The content digest of what the version holds."""
        return self._record.get("digest") if self._record else None

    def register(self, workspace: Any, name: str, description: str | None = None, tags: dict[str, str] | None = None,
                 create_new_version: bool = False) -> FileDataset:
        """Register these files as the next version of ``name`` (their contents are pinned); the
        registered dataset. The same contents again return the latest version."""
        from torchyard.data.datasets import DatasetRegistry  # noqa: PLC0415

        record = DatasetRegistry(workspace).register(workspace, self._source, name, description=description,
                                                     tags=tags, create_new_version=create_new_version)
        return FileDataset(record["source"], workspace, record)

    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """The dataset as the run's input ``name`` (then ``.as_mount()`` or ``.as_download()``)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError("name", f"an input name is letters, digits and '_', got {name!r}")
        return DatasetConsumptionConfig(self, name)

    def as_mount(self, path_on_compute: str | None = None) -> Any:
        """Shorthand for ``as_named_input(<its name>).as_mount()``."""
        return self.as_named_input(self.name or "dataset").as_mount(path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> Any:
        """Shorthand for ``as_named_input(<its name>).as_download()``."""
        return self.as_named_input(self.name or "dataset").as_download(path_on_compute)

    def to_path(self) -> list[str]:
        """The paths of the dataset's files, relative to its root."""
        if self._record is None:
            raise SpecError("dataset", "register the dataset first (to_path lists a version's files)")
        root = self._registry().files_of(self._workspace, self._record)
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)

    def get_runs(self) -> list[str]:
        """The ids of the runs that read this version (lineage), newest first."""
        if self._record is None:
            return []
        return list(self._registry().runs_of(self._workspace.store, self.name, self.version))

    def __repr__(self) -> str:
        return f"FileDataset(id={self.id!r}, source={self._source!r})"


class FileDatasetFactory:
    """``Dataset.File``: makes file datasets."""

    @staticmethod
    def from_files(path: Any, validate: bool = True, partition_format: str | None = None,
                   is_file: bool = False) -> FileDataset:
        """Files of a local folder or file, or of a datastore path (``(datastore, "data/**")``)."""
        if partition_format is not None:
            raise SpecError("partition_format", "partitioned file datasets are not supported here")
        source = _source(path)
        if validate and not source.get("datastore") and not os.path.exists(source["path"]):
            raise SpecError("path", f"{source['path']} does not exist")
        return FileDataset(source)

    @staticmethod
    def upload_directory(src_dir: str | os.PathLike[str], target: Any, pattern: str | None = None,
                         overwrite: bool = False, show_progress: bool = True) -> FileDataset:
        """Upload ``src_dir`` to ``target`` (``(datastore, "path")`` or ``datastore.path(...)``); a
        dataset of the uploaded files."""
        if pattern is not None:
            raise SpecError("pattern", "upload the whole folder here (pattern is not supported)")
        if not (isinstance(target, tuple) and len(target) == 2 and hasattr(target[0], "__torchyard_datastore__")):
            raise SpecError("target", "expected (datastore, path), e.g. (ws.get_default_datastore(), 'data/digits')")
        source = _source(target)
        target[0].upload(src_dir, target_path=source.get("path") or None, overwrite=overwrite)
        return FileDataset(source)


class Dataset:
    """Azure's ``Dataset``: ``Dataset.File`` makes file datasets; ``get_by_name`` finds a registered one."""

    File = FileDatasetFactory

    @staticmethod
    def get_by_name(workspace: Any, name: str, version: int | str = "latest") -> FileDataset:
        """Registered dataset ``name`` at ``version`` (default: the newest)."""
        from torchyard.data.datasets import DatasetRegistry  # noqa: PLC0415

        record = DatasetRegistry(workspace).get(name, version)
        return FileDataset(record["source"], workspace, record)

    @staticmethod
    def get_all(workspace: Any) -> dict[str, FileDataset]:
        """The newest version of every registered dataset, by name."""
        from torchyard.data.datasets import DatasetRegistry  # noqa: PLC0415

        registry = DatasetRegistry(workspace)
        return {n: Dataset.get_by_name(workspace, n) for n in registry.names()}
