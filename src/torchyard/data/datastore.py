"""Datastores: named places holding data, and the references a job uses to read and write them.

A datastore is a local folder, an S3-compatible bucket (with an optional key prefix) or any fsspec
URL, registered by name in the workspace (``<workspace>/datastores/<name>.json``). The registration
stores where the data is (URL, endpoint, profile name), never a secret: S3 credentials come from the
standard AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) or a named profile (``~/.aws/credentials``), read when the data is used.

A job names its inputs with :class:`DataReference` (``ds.path("images").as_download()``, or
``DataReference.from_url("s3://bucket/prefix", "download")``); before the job starts,
:func:`resolve_input` makes each one a local path:

- a local folder in ``mount`` mode is used where it is, no copy;
- ``download`` copies into the run's folder: hard links from a local datastore, and from a content
  cache shared by all runs of the workspace (``<workspace>/datacache/``) for remote data, keyed by
  the object's URL, ETag (or checksum), size and modification time, so unchanged data is fetched
  once; cached files are read-only, since they are hard links shared between runs;
- ``mount`` of remote data needs FUSE (s3fs-fuse), which torchyard does not use: it downloads
  instead and says so in the run's log.

:func:`upload_output` copies a run's output folder to a datastore path (``{run_id}`` in it becomes
the run id). Every failure is a :class:`DataError` that names the datastore or URL and the cause:
an unknown datastore, a missing path, refused credentials, an unreachable endpoint.

fsspec and s3fs are imported only when remote data is used; ``import torchyard`` does not load them.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torchyard.data.references import (
    _NAME,
    _SCHEME,
    DEFAULT_DATASTORE,
    KINDS,
    DataReference,
    _clean_path,
    _is_local_url,
    _local_path,
)
from torchyard.errors import DataError, NotFoundError, SpecError, TorchyardError, WorkspaceError
from torchyard.records import JsonRecords

#: parallel transfers per call (override with TORCHYARD_DATA_WORKERS)
DEFAULT_WORKERS = 16

CREDENTIAL_SOURCES = ("node", "forward", "presigned")
#: how long a presigned input URL stays valid (``credentials="presigned"``); TORCHYARD_PRESIGN_SECONDS overrides
PRESIGN_SECONDS = 12 * 3600
#: the submitting process's variables that ``credentials="forward"`` hands to a run's nodes; a
#: target whose nodes are other machines passes none of them otherwise
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SECRET_OPTION = re.compile(
    r"secret|passw|token|credential|(^|_)key($|_)|api_?key|access_?key", re.IGNORECASE
)
# botocore: fail fast when the endpoint cannot be reached (connect 3 s, 2 attempts in all)
_S3_CONFIG = {"connect_timeout": 3, "read_timeout": 60, "retries": {"max_attempts": 2, "mode": "standard"},
              "signature_version": "s3v4"}  # presigned URLs too (botocore still presigns SigV2 by default)
_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "adl", "memory")
_CREDENTIAL_CODES = (
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
    "InvalidClientTokenId", "AllAccessDisabled", "AccountProblem", "403",
)  # fmt: skip
_UNREACHABLE = (
    "EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError",
    "ServerDisconnectedError", "ConnectionRefusedError", "ProxyConnectionError",
)  # fmt: skip


def _workspace_path(workspace: Any) -> str:
    """A Workspace or its folder."""
    return os.fspath(getattr(workspace, "path", workspace))


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _workers() -> int:
    try:
        return max(1, int(os.environ.get("TORCHYARD_DATA_WORKERS", DEFAULT_WORKERS)))
    except ValueError:
        return DEFAULT_WORKERS


# ---- references ---------------------------------------------------------------------------------


@dataclass
class Datastore:
    """A named place holding data. ``kind`` is ``local``, ``s3`` or ``fsspec``; ``url`` an absolute
    folder (local), ``s3://bucket[/prefix]`` or any fsspec URL; ``options`` holds settings such as
    ``endpoint_url`` and ``profile`` — never secrets. Passed as a job parameter, a datastore means
    its root, mounted."""

    __torchyard_datastore__: ClassVar[bool] = True

    name: str
    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    #: where a cluster node's credentials come from: ``"node"`` (its own environment or profile, as
    #: with instance roles), ``"forward"`` (the submitting process's AWS variables, handed to the
    #: run's processes in memory only) or ``"presigned"`` (no credentials at all: the submitter signs
    #: one expiring read-only URL per input object when the run starts, and the nodes fetch those)
    credentials: str = "node"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError("kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.credentials not in CREDENTIAL_SOURCES:
            raise SpecError("credentials", f"must be one of {', '.join(CREDENTIAL_SOURCES)}, got {self.credentials!r}")
        if self.credentials != "node" and self.kind != "s3":
            raise SpecError("credentials", f"{self.credentials!r} is for S3 datastores, not {self.kind}")
        if self.name and not _NAME.match(self.name):
            raise SpecError(
                "name", f"invalid datastore name {self.name!r}: use letters, digits, '_', '-' or '.'"
            )
        _check_options(self.options)

    # ---- registration --------------------------------------------------------------------------

    @staticmethod
    def register_local(workspace: Any, name: str, path: str | os.PathLike[str]) -> Datastore:
        """Register the existing folder ``path`` as datastore ``name``."""
        folder = _local_path(os.fspath(path))
        if not os.path.isdir(folder):
            raise DataError(f"cannot register datastore {name!r}: {folder} is not an existing folder")
        return DatastoreRegistry(workspace).register(Datastore(name, "local", folder))

    @staticmethod
    def register_s3(
        workspace: Any,
        name: str,
        bucket: str,
        prefix: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        credentials: str = "node",
    ) -> Datastore:
        """Register an S3 (or S3-compatible, with ``endpoint_url``) bucket, optionally under ``prefix``.
        Credentials: the AWS environment variables, or ``profile`` from the AWS config files — on a
        cluster node, that node's own (``credentials="node"``), with ``credentials="forward"`` the
        submitting process's AWS variables, passed to the run's processes in memory only, or with
        ``credentials="presigned"`` none: the nodes read inputs through expiring URLs, one per object,
        signed by the submitter (the team server) when the run starts."""
        if not isinstance(bucket, str) or not _BUCKET.match(bucket):
            raise SpecError("bucket", f"invalid bucket name {bucket!r} (3-63 characters: a-z, 0-9, '.', '-')")
        if endpoint_url is not None and not re.match(r"^https?://[^/\s]+", endpoint_url):
            raise SpecError("endpoint_url", f"expected http(s)://host[:port], got {endpoint_url!r}")
        key = _clean_path(prefix, "prefix")
        url = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        options = {k: v for k, v in (("endpoint_url", endpoint_url), ("profile", profile)) if v}
        return DatastoreRegistry(workspace).register(Datastore(name, "s3", url, options, credentials))

    @staticmethod
    def register_fsspec(workspace: Any, name: str, url: str, **options: Any) -> Datastore:
        """Register any fsspec URL (``gs://``, ``memory://``, ``sftp://``...); ``options`` are the
        filesystem's storage options (no secrets: they belong in the environment or config files)."""
        match = _SCHEME.match(url or "")
        if not match:
            raise SpecError("url", f"expected PROTOCOL://..., got {url!r}; use register_local for a folder")
        import fsspec  # noqa: PLC0415 - only when used

        protocol = match.group(1)
        if protocol not in fsspec.available_protocols():
            raise SpecError("url", f"fsspec knows no protocol {protocol!r}")
        return DatastoreRegistry(workspace).register(
            Datastore(name, "fsspec", url.rstrip("/"), dict(options))
        )

    @staticmethod
    def get(workspace: Any, name: str) -> Datastore:
        """The datastore registered as ``name``; NotFoundError lists the registered ones."""
        return DatastoreRegistry(workspace).get(name)

    def to_dict(self) -> dict[str, Any]:
        """The datastore's record: name, kind, URL, options and where credentials come from (never keys)."""
        out = {"name": self.name, "kind": self.kind, "url": self.url, "options": dict(self.options)}
        if self.credentials != "node":
            out["credentials"] = self.credentials
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Datastore:
        """The datastore :meth:`to_dict` described."""
        return cls(data["name"], data["kind"], data["url"], dict(data.get("options") or {}),
                   data.get("credentials") or "node")

    # ---- references ----------------------------------------------------------------------------

    def path(self, path: str = "") -> DataReference:
        """A reference to ``path`` inside this datastore (mount mode; see ``as_download``)."""
        return DataReference(self.name, path)

    def as_mount(self) -> DataReference:
        """The whole datastore as an input, mounted on the nodes (see :meth:`DataReference.as_mount`)."""
        return DataReference(self.name, "", "mount")

    def as_download(self, path_on_compute: str | None = None) -> DataReference:
        """The whole datastore as an input, downloaded to the nodes (to ``path_on_compute`` when given)."""
        return DataReference(self.name, "", "download", path_on_compute)

    def url_of(self, path: str = "") -> str:
        """The URL (or, for a local datastore, the absolute path) of ``path`` inside this datastore."""
        path = _clean_path(path)
        if not path:
            return self.url
        if self.kind == "local":
            return os.path.join(self.url, *path.split("/"))
        return f"{self.url.rstrip('/')}/{path}"

    def describe(self) -> str:
        """A short human description, ``datastore 'NAME' (URL)``, for messages."""
        return f"datastore {self.name!r} ({self.url})" if self.name else self.url

    # ---- filesystem ----------------------------------------------------------------------------

    def filesystem(self) -> Any:
        """A fresh fsspec filesystem for this datastore (credentials are read now)."""
        try:
            if self.kind == "local":
                from fsspec.implementations.local import LocalFileSystem  # noqa: PLC0415

                return LocalFileSystem(auto_mkdir=True)
            if self.kind == "s3":
                import s3fs  # noqa: PLC0415

                endpoint = self.options.get("endpoint_url")
                return s3fs.S3FileSystem(
                    profile=self.options.get("profile"),
                    client_kwargs={"endpoint_url": endpoint} if endpoint else {},
                    config_kwargs=json.loads(json.dumps(_S3_CONFIG)),
                    skip_instance_cache=True,
                )
            import fsspec  # noqa: PLC0415

            protocol = (_SCHEME.match(self.url) or [None, "file"])[1]
            options = dict(self.options)
            if protocol in ("s3", "s3a"):
                options.setdefault("config_kwargs", json.loads(json.dumps(_S3_CONFIG)))
            options.setdefault("skip_instance_cache", True)
            return fsspec.filesystem(protocol, **options)
        except ImportError as err:
            package = "s3fs" if self.kind == "s3" else (err.name or "fsspec")
            raise DataError(
                f"{self.describe()}: needs the Python package {package!r} (pip install {package})"
            ) from None
        except Exception as err:
            raise _as_data_error(err, self) from None

    def _fs_path(self, fs: Any, path: str = "") -> str:
        url = self.url_of(path)
        return url if self.kind == "local" else str(fs._strip_protocol(url)).rstrip("/")

    def _find(self, fs: Any, path: str = "") -> tuple[str, dict[str, dict[str, Any]]]:
        root = self._fs_path(fs, path)
        try:
            found = fs.find(root, detail=True)
        except Exception as err:
            raise _as_data_error(err, self, path) from None
        files = {k: v for k, v in found.items() if v.get("type", "file") == "file" and not k.endswith("/")}
        return root, files

    # ---- transfers -----------------------------------------------------------------------------

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Paths (relative to the datastore's root) of the files at or under ``prefix``."""
        fs = self.filesystem()
        _root, files = self._find(fs, prefix)
        base = self._fs_path(fs, "")
        return sorted(_relative(base, p) for p in files)

    def upload(
        self, src_dir: str | os.PathLike[str], target_path: str | None = None, overwrite: bool = True,
        progress: Callable[[str, int], None] | None = None,
    ) -> int:
        """Copy the files under ``src_dir`` to ``target_path`` (default: the root), keeping their
        relative paths; returns how many were uploaded (existing ones are skipped without ``overwrite``)."""
        src = os.path.abspath(os.fspath(src_dir))
        if not os.path.isdir(src):
            raise DataError(f"cannot upload to {self.describe()}: {src} is not a folder")
        files = [(p, rel) for p, rel in _walk(src)]
        return self._upload_pairs(files, _clean_path(target_path, "target_path"), overwrite, progress)[0]

    def upload_files(
        self, files: Iterable[str | os.PathLike[str]], target_path: str | None = None, overwrite: bool = True
    ) -> int:
        """Copy each of ``files`` to ``target_path/<its name>``; returns how many were uploaded."""
        pairs = []
        for f in files:
            path = os.path.abspath(os.fspath(f))
            if not os.path.isfile(path):
                raise DataError(f"cannot upload to {self.describe()}: {path} is not a file")
            pairs.append((path, os.path.basename(path)))
        return self._upload_pairs(pairs, _clean_path(target_path, "target_path"), overwrite)[0]

    def _upload_pairs(
        self, pairs: builtins.list[tuple[str, str]], target: str, overwrite: bool,
        progress: Callable[[str, int], None] | None = None,
    ) -> tuple[int, int]:
        fs = self.filesystem()
        existing: set[str] = set()
        if not overwrite:
            root, files = self._find(fs, target)
            existing = {_relative(root, p) for p in files}
        todo = [
            (local, self._fs_path(fs, f"{target}/{rel}" if target else rel))
            for local, rel in pairs
            if rel not in existing
        ]
        # object stores have no folders; other filesystems (sftp, ftp...) need the parents made first
        needs_dirs = self.kind == "fsspec" and _protocol(fs) not in _OBJECT_STORES

        def put(job: tuple[str, str]) -> int:
            local, remote = job
            if self.kind == "local":
                _atomic_copy(local, remote)
            else:
                if needs_dirs:
                    parent = remote.rsplit("/", 1)[0] if "/" in remote else ""
                    if parent:
                        fs.makedirs(parent, exist_ok=True)
                fs.put_file(local, remote)
            return os.path.getsize(local)

        sizes = _parallel(_reporting(put, progress, len(todo)), todo,
                          lambda err, job: _as_data_error(err, self, target, writing=True))
        return len(todo), sum(sizes)

    def download(
        self, target_path: str | os.PathLike[str], prefix: str | None = None, overwrite: bool = True,
        progress: Callable[[str, int], None] | None = None,
    ) -> int:
        """Copy the files at or under ``prefix`` into ``target_path``, keeping their paths relative to
        the datastore's root; returns how many were downloaded (existing ones are kept without ``overwrite``)."""
        fs = self.filesystem()
        prefix = _clean_path(prefix, "prefix")
        _root, files = self._find(fs, prefix)
        if not files:
            raise DataError(
                f"{self.describe()}: nothing to download at {prefix or 'the root'!r} (no files there)"
            )
        base = self._fs_path(fs, "")
        dest = os.path.abspath(os.fspath(target_path))
        jobs = []
        for rpath in files:
            local = os.path.join(dest, *_relative(base, rpath).split("/"))
            if overwrite or not os.path.exists(local):
                jobs.append((rpath, local))

        def get(job: tuple[str, str]) -> int:
            rpath, local = job
            os.makedirs(os.path.dirname(local), exist_ok=True)
            tmp = _tmp_name(local)
            try:
                fs.get_file(rpath, tmp)
                os.replace(tmp, local)
            finally:
                _unlink(tmp)
            return os.path.getsize(local)

        _parallel(_reporting(get, progress, len(jobs)), jobs, lambda err, job: _as_data_error(err, self, prefix))
        return len(jobs)


def _check_options(options: dict[str, Any]) -> None:
    if not isinstance(options, dict):
        raise SpecError("options", f"expected a mapping, got {type(options).__name__}")
    for key, value in options.items():
        if _SECRET_OPTION.search(str(key)):
            raise SpecError(
                "options",
                f"{key!r} looks like a secret; datastores store no secrets: use the AWS environment variables "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), a named profile, or the filesystem's own config files",
            )
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise SpecError("options", f"{key!r}: value must be JSON-serializable") from None


# ---- registry -----------------------------------------------------------------------------------


class DatastoreRegistry:
    """Datastores registered in a workspace: ``<workspace>/datastores/<name>.json``.

    Datastores are configuration: registering a name again replaces its settings."""

    def __init__(self, workspace: Any) -> None:
        self.workspace = _workspace_path(workspace)
        self.records = JsonRecords(os.path.join(self.workspace, "datastores"), "datastore")
        self.root = self.records.root

    def register(self, store: Datastore) -> Datastore:
        self.records.put(self.records.check_name(store.name), {**store.to_dict(), "registered": time.time()})
        return self.get(store.name)

    def get(self, name: str) -> Datastore:
        if not self.records.exists(name):
            if name == DEFAULT_DATASTORE:
                return default_datastore(self.workspace)
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no datastore {name!r} is registered in this workspace (registered: {known})")
        try:
            return Datastore.from_dict(self.records.get(name))
        except (WorkspaceError, KeyError, TypeError) as err:
            raise DataError(f"datastore {name!r}: {self.records.path(name)} is unreadable ({err}); register it again") from None

    def remove(self, name: str) -> None:
        if not self.records.exists(name):
            raise NotFoundError(f"no datastore {name!r} is registered in this workspace")
        self.records.remove(name)

    def names(self) -> list[str]:
        return self.records.names()

    def list(self) -> builtins.list[Datastore]:
        return [self.get(n) for n in self.names()]

    def __getitem__(self, name: str) -> Datastore:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return self.records.exists(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def default_datastore(workspace: Any) -> Datastore:
    """The workspace's own datastore ``workspaceblobstore``: the folder ``<workspace>/datastore``,
    registered on first use."""
    registry = DatastoreRegistry(workspace)
    if DEFAULT_DATASTORE in registry:
        return registry.get(DEFAULT_DATASTORE)
    folder = os.path.join(registry.workspace, "datastore")
    os.makedirs(folder, exist_ok=True)
    return registry.register(Datastore(DEFAULT_DATASTORE, "local", folder))


# ---- resolving inputs and uploading outputs -------------------------------------------------------


def _ref(ref: DataReference | dict[str, Any]) -> DataReference:
    return ref if isinstance(ref, DataReference) else DataReference.from_dict(ref)


def _protocol(fs: Any) -> str:
    protocol = getattr(fs, "protocol", "")
    return str(protocol[0] if isinstance(protocol, tuple | list) else protocol)


def datastore_of(workspace_path: str, ref: DataReference | dict[str, Any]) -> Datastore:
    """The datastore a reference points into (a registered one, or one made from its URL)."""
    return _store_for(_workspace_path(workspace_path), _ref(ref))


def _store_for(workspace_path: str, ref: DataReference) -> Datastore:
    if ref.url is not None:
        if _is_local_url(ref.url):
            return Datastore("", "local", _local_path(ref.url))
        if ref.url.startswith("s3://"):
            return Datastore("", "s3", ref.url.rstrip("/"))
        return Datastore("", "fsspec", ref.url.rstrip("/"))
    assert ref.datastore is not None
    try:
        return DatastoreRegistry(workspace_path).get(ref.datastore)
    except NotFoundError as err:
        raise DataError(str(err), datastore=ref.datastore) from None


def _relative(root: str, path: str) -> str:
    root = root.rstrip("/")
    if path == root:
        return os.path.basename(path)
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.lstrip("/") if not root else path


def _walk(folder: str) -> Iterator[tuple[str, str]]:
    """(absolute path, '/'-separated relative path) of every file under ``folder``, links followed."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                yield path, os.path.relpath(path, folder).replace(os.sep, "/")


def _tmp_name(path: str) -> str:
    return f"{path}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.part"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _atomic_copy(src: str, target: str) -> None:
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = _tmp_name(target)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        _unlink(tmp)


def _place(cached: str, target: str) -> None:
    """Put a cached file at ``target``: a hard link, or a (writable) copy across filesystems."""
    _unlink(target)
    try:
        os.link(cached, target)
    except OSError:
        _atomic_copy(cached, target)


def _reporting(fn: Callable[[Any], int], progress: Callable[[str, int], None] | None,
               total: int) -> Callable[[Any], int]:
    """``fn`` (a transfer of one file, returning its size) telling ``progress`` ("files", N) once, then
    ("bytes", size) after each file: what the CLI's progress bar shows."""
    if progress is None:
        return fn
    progress("files", total)

    def wrapped(job: Any) -> int:
        size = fn(job)
        progress("bytes", size)
        return size

    return wrapped


def _parallel(
    fn: Callable[[Any], Any], jobs: builtins.list[Any], on_error: Callable[[BaseException, Any], DataError]
) -> builtins.list[Any]:
    """Run ``fn`` over ``jobs`` on a small thread pool; the first failure cancels the rest and is
    raised as ``on_error(err, job)``."""
    if not jobs:
        return []
    workers = min(_workers(), len(jobs))
    if workers == 1:
        out = []
        for job in jobs:
            try:
                out.append(fn(job))
            except Exception as err:
                raise on_error(err, job) from None
        return out
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="torchyard-data") as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in done:
            failure = fut.exception()
            if failure is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise on_error(failure, futures[fut]) from None
        return [fut.result() for fut in futures]


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _error_code(err: BaseException) -> str | None:
    for e in _chain(err):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    return None


def _as_data_error(err: BaseException, store: Datastore, path: str = "", writing: bool = False) -> DataError:
    """One DataError that names the datastore/URL and says what is wrong."""
    if isinstance(err, DataError):
        return err
    if isinstance(err, TorchyardError):
        return DataError(f"{store.describe()}: {err}", datastore=store.name or None)
    where = store.describe() + (f", path {path!r}" if path else "")
    chain = list(_chain(err))
    names = {type(e).__name__ for e in chain}
    code = _error_code(err)
    detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    endpoint = (
        store.options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
    )
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        message = (f"{where}: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or register "
                   "the datastore with a profile")  # fmt: skip
    elif "ProfileNotFound" in names:
        message = (
            f"{where}: AWS profile {store.options.get('profile')!r} is not in the AWS config files ({err})"
        )
    elif names & set(_UNREACHABLE) or any(
        isinstance(e, ConnectionRefusedError | TimeoutError) for e in chain
    ):
        message = f"{where}: cannot reach the endpoint {endpoint} ({detail}); check the URL and that the server is up"
    elif code in _CREDENTIAL_CODES or any(isinstance(e, PermissionError) for e in chain):
        message = (f"{where}: access denied{f' ({code})' if code else ''}: the credentials are wrong or lack permission "
                   f"to {'write' if writing else 'read'} here; torchyard uses AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                   f"or the datastore's profile [{detail}]")  # fmt: skip
    elif code in ("NoSuchBucket",) or "bucket does not exist" in str(err):
        message = f"{where}: the bucket does not exist ({detail})"
    elif any(isinstance(e, FileNotFoundError) for e in chain) or code in ("NoSuchKey", "404"):
        message = f"{where}: does not exist ({detail})"
    else:
        message = f"{where}: {detail}"
    return DataError(message, datastore=store.name or None, url=store.url_of(path))
