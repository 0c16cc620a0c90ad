"""Moving data for runs: :func:`resolve_input` makes an input a local path (in place, hard links, or a
download through the content cache), :func:`upload_output` copies a named output to its datastore."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

from torchyard.data.datastore import (
    PRESIGN_SECONDS,
    Datastore,
    _as_data_error,
    _atomic_copy,
    _fmt_bytes,
    _parallel,
    _place,
    _protocol,
    _ref,
    _relative,
    _store_for,
    _tmp_name,
    _unlink,
    _walk,
    _workspace_path,
)
from torchyard.data.references import DataReference
from torchyard.errors import DataError, SpecError


def resolve_input(
    workspace_path: Any, ref: DataReference | dict[str, Any], dest: str, log: TextIO, *, store: Datastore | None = None,
    presigned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make the input ``ref`` a local path for a run.

    ``dest`` is the folder a download goes to (the caller picks it, e.g. from ``path_on_compute``);
    a single file lands as ``dest/<its name>``. Returns ``{"path", "mode", "files",
    "bytes_downloaded", "bytes_total"}`` where ``mode`` is the one used (a remote ``mount`` becomes
    ``download``) and ``bytes_downloaded`` counts what was fetched or copied (0 for cache hits and
    hard links).

    ``store``: the datastore itself, where the workspace's registry is not at hand (on a node of a
    cluster, ``workspace_path`` is then only the folder of the download cache). ``presigned``: what
    :func:`presign_input` made for this input on the submitter; the objects are then fetched through
    those URLs, with no credentials."""
    workspace_path = _workspace_path(workspace_path)
    try:
        reference = _ref(ref)
    except SpecError as err:
        raise DataError(f"invalid input {ref!r}: {err}") from None
    if store is None:
        store = _store_for(workspace_path, reference)
    started = time.monotonic()
    if store.kind == "local":
        result = _resolve_local(store, reference, dest)
    else:
        if reference.mode == "mount":
            fuse = "a FUSE filesystem (s3fs-fuse)" if store.url.startswith("s3") else "a FUSE filesystem"
            _say(log, f"mount of {store.url_of(reference.path)} needs {fuse}; downloading instead")
        result = (_resolve_presigned(workspace_path, store, reference, dest, presigned) if presigned
                  else _resolve_remote(workspace_path, store, reference, dest))
    if result["mode"] == "download":
        cached = result.pop("cached", 0)
        _say(
            log,
            f"input {_location(reference)}: {result['files']} file(s), {_fmt_bytes(result['bytes_total'])} -> {result['path']}; "
            f"{_fmt_bytes(result['bytes_downloaded'])} transferred, {cached} file(s) from the cache or hard-linked, "
            f"{time.monotonic() - started:.2f} s" + (" (through presigned URLs: no credentials)" if presigned else ""),
        )
    else:
        _say(log, f"input {_location(reference)}: using {result['path']} in place ({result['files']} file(s), "
                  f"{_fmt_bytes(result['bytes_total'])})")  # fmt: skip
    return result


def _resolve_local(store: Datastore, ref: DataReference, dest: str) -> dict[str, Any]:
    source = store.url_of(ref.path)
    if not os.path.exists(source):
        where = f" (path {ref.path!r})" if ref.path else ""
        raise DataError(f"{store.describe()}{where}: {source} does not exist", datastore=store.name or None)
    files = [(source, os.path.basename(source))] if os.path.isfile(source) else list(_walk(source))
    total = sum(os.path.getsize(p) for p, _ in files)
    if ref.mode == "mount":
        return {
            "path": source,
            "mode": "mount",
            "files": len(files),
            "bytes_downloaded": 0,
            "bytes_total": total,
        }
    dest = os.path.abspath(dest)

    def place(job: tuple[str, str]) -> tuple[int, bool]:
        src, rel = job
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _unlink(target)
        try:
            os.link(src, target)
            return 0, True
        except OSError:
            _atomic_copy(src, target)
            return os.path.getsize(target), False

    placed = _parallel(place, files, lambda err, job: _as_data_error(err, store, ref.path))
    path = os.path.join(dest, os.path.basename(source)) if os.path.isfile(source) else dest
    os.makedirs(dest, exist_ok=True)
    return {
        "path": path, "mode": "download", "files": len(files), "bytes_downloaded": sum(b for b, _ in placed),
        "bytes_total": total, "cached": sum(1 for _, linked in placed if linked),
    }  # fmt: skip


def _identity(store: Datastore, fs: Any, rpath: str, info: dict[str, Any]) -> list[Any] | None:
    """What makes a remote object's content unique: its URL, ETag or checksum, size, modification
    time. None when the filesystem tells neither a checksum nor a time (then it is not cached)."""
    tag = None
    for key in ("ETag", "etag", "checksum", "md5", "md5Hash", "sha256", "crc32c", "content_md5"):
        if info.get(key):
            tag = str(info[key]).strip('"')
            break
    mtime = None
    for key in ("LastModified", "last_modified", "mtime", "updated", "modified", "created"):
        if info.get(key):
            value = info[key]
            mtime = value.isoformat() if hasattr(value, "isoformat") else str(value)
            break
    if tag is None and mtime is None:
        return None
    protocol = _protocol(fs)
    endpoint = store.options.get("endpoint_url")
    if endpoint is None and protocol in ("s3", "s3a"):  # the same key on another S3 service is another object
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return [f"{protocol}://{rpath}", endpoint, tag, int(info.get("size") or 0), mtime]


class _Cache:
    """``<workspace>/datacache/objects/<k[:2]>/<k>``: read-only files named by the hash of their identity."""

    def __init__(self, workspace_path: str) -> None:
        self.root = os.path.join(workspace_path, "datacache", "objects")

    def path(self, identity: list[Any]) -> str:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return os.path.join(self.root, key[:2], key)


def _cached_get(cache: _Cache, identity: list[Any] | None, size: int, target: str,
                get: Callable[[str], Any]) -> tuple[int, int, bool]:
    """Put one remote object at ``target`` through the content cache: ``get(path)`` downloads it.
    Returns (bytes fetched, bytes placed, whether it came from the cache)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if identity is None:  # nothing to key a cache entry on: fetch every time
        tmp = _tmp_name(target)
        try:
            get(tmp)
            os.replace(tmp, target)
        finally:
            _unlink(tmp)
        got = os.path.getsize(target)
        return got, got, False
    cached = cache.path(identity)
    try:
        if os.path.getsize(cached) == size:
            _place(cached, target)
            return 0, size, True
    except OSError:
        pass
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    tmp = _tmp_name(cached)
    try:
        get(tmp)
        got = os.path.getsize(tmp)
        if got != size:  # changed since it was listed: use it, but do not cache it under the old identity
            _unlink(target)
            os.replace(tmp, target)
            return got, got, False
        os.chmod(tmp, 0o444)
        os.replace(tmp, cached)
    finally:
        _unlink(tmp)
    _place(cached, target)
    return size, size, False


def presign_seconds() -> int:
    raw = os.environ.get("TORCHYARD_PRESIGN_SECONDS")
    try:
        return max(60, int(raw)) if raw else PRESIGN_SECONDS
    except ValueError:
        raise SpecError("TORCHYARD_PRESIGN_SECONDS", f"must be a number of seconds, got {raw!r}") from None


def presign_input(store: Datastore, ref: DataReference | dict[str, Any], seconds: int | None = None) -> dict[str, Any]:
    """On the submitter, with its credentials: every object of the input ``ref`` with a presigned
    GET URL valid for ``seconds`` (default :func:`presign_seconds`), its size and cache identity.
    The URLs carry a signature and the access key's id, never the secret key."""
    reference = _ref(ref)
    seconds = seconds or presign_seconds()
    fs = store.filesystem()
    root, files = store._find(fs, reference.path)
    if not files:
        raise DataError(f"{store.describe()}: {store.url_of(reference.path)} does not exist (no objects there)",
                        datastore=store.name or None)
    single = list(files) == [root]
    out = []
    try:
        for rpath, info in sorted(files.items()):
            out.append({"rel": os.path.basename(rpath) if single else _relative(root, rpath),
                        "url": fs.url(rpath, expires=seconds), "size": int(info.get("size") or 0),
                        "identity": _identity(store, fs, rpath, info)})
    except Exception as err:  # noqa: BLE001 - named by _as_data_error
        raise _as_data_error(err, store, reference.path) from None
    return {"single": single, "files": out, "expires_at": time.time() + seconds}


def _http_get(url: str, target: str) -> int:
    import shutil  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(url, timeout=60) as resp, open(target, "wb") as fh:  # noqa: S310 - an http(s) URL we signed
        shutil.copyfileobj(resp, fh, 1 << 20)
    return os.path.getsize(target)


def _presigned_error(err: BaseException, store: Datastore, ref: DataReference, rel: str,
                     presigned: dict[str, Any]) -> DataError:
    import urllib.error  # noqa: PLC0415

    where = f"{store.describe()}, {store.url_of(ref.path)}: object {rel!r} through its presigned URL"
    if isinstance(err, urllib.error.HTTPError):
        expired = time.time() > float(presigned.get("expires_at") or 0)
        why = ("the URL expired: the run started its nodes after TORCHYARD_PRESIGN_SECONDS"
               if expired else "refused: the object changed or the signing credentials lost access")
        return DataError(f"{where}: HTTP {err.code} ({why})", datastore=store.name or None)
    if isinstance(err, urllib.error.URLError | OSError):
        return DataError(f"{where}: cannot reach the endpoint ({err}); check that the nodes reach the S3 server",
                         datastore=store.name or None)
    return _as_data_error(err, store, ref.path)


def _resolve_presigned(workspace_path: str, store: Datastore, ref: DataReference, dest: str,
                       presigned: dict[str, Any]) -> dict[str, Any]:
    dest = os.path.abspath(dest)
    cache = _Cache(workspace_path)
    entries = list(presigned.get("files") or [])
    if not entries:
        raise DataError(f"{store.describe()}: no objects were signed for {store.url_of(ref.path)}",
                        datastore=store.name or None)
    jobs = [(e, os.path.join(dest, *str(e["rel"]).split("/"))) for e in entries]
    for entry, target in jobs:
        if os.path.relpath(target, dest).startswith(".."):
            raise DataError(f"{store.describe()}: object name {entry['rel']!r} leaves the input folder")

    def fetch(job: tuple[dict[str, Any], str]) -> tuple[int, int, bool]:
        entry, target = job
        return _cached_get(cache, entry.get("identity"), int(entry.get("size") or 0), target,
                           lambda tmp: _http_get(entry["url"], tmp))

    results = _parallel(fetch, jobs, lambda err, job: _presigned_error(err, store, ref, job[0]["rel"], presigned))
    return {
        "path": jobs[0][1] if presigned.get("single") else dest,
        "mode": "download",
        "files": len(jobs),
        "bytes_downloaded": sum(r[0] for r in results),
        "bytes_total": sum(r[1] for r in results),
        "cached": sum(1 for r in results if r[2]),
    }


def _resolve_remote(workspace_path: str, store: Datastore, ref: DataReference, dest: str) -> dict[str, Any]:
    fs = store.filesystem()
    root, files = store._find(fs, ref.path)
    if not files:
        raise DataError(
            f"{store.describe()}: {store.url_of(ref.path)} does not exist (no objects there)",
            datastore=store.name or None,
        )
    dest = os.path.abspath(dest)
    single = list(files) == [root]
    cache = _Cache(workspace_path)
    jobs = []
    for rpath, info in files.items():
        rel = os.path.basename(rpath) if single else _relative(root, rpath)
        jobs.append((rpath, info, os.path.join(dest, *rel.split("/"))))

    def fetch(job: tuple[str, dict[str, Any], str]) -> tuple[int, int, bool]:
        rpath, info, target = job
        return _cached_get(cache, _identity(store, fs, rpath, info), int(info.get("size") or 0), target,
                           lambda tmp: fs.get_file(rpath, tmp))

    results = _parallel(fetch, jobs, lambda err, job: _as_data_error(err, store, ref.path))
    return {
        "path": jobs[0][2] if single else dest,
        "mode": "download",
        "files": len(jobs),
        "bytes_downloaded": sum(r[0] for r in results),
        "bytes_total": sum(r[1] for r in results),
        "cached": sum(1 for r in results if r[2]),
    }


def upload_output(
    workspace_path: Any, ref: DataReference | dict[str, Any], src_dir: str, run_id: str, log: TextIO
) -> dict[str, Any]:
    """Upload the folder ``src_dir`` to the datastore path (or URL) of ``ref``, with ``{run_id}``
    (or ``{run-id}``) replaced by ``run_id``. Returns ``{"url", "files", "bytes"}``."""
    workspace_path = _workspace_path(workspace_path)
    raw = ref.to_dict() if isinstance(ref, DataReference) else dict(ref)
    for key in ("path", "url"):
        if isinstance(raw.get(key), str):
            raw[key] = raw[key].replace("{run_id}", run_id).replace("{run-id}", run_id)
    try:
        reference = DataReference.from_dict(raw)
    except SpecError as err:
        raise DataError(f"invalid output {ref!r}: {err}") from None
    store = _store_for(workspace_path, reference)
    src = os.path.abspath(src_dir)
    if not os.path.isdir(src):
        raise DataError(f"cannot upload outputs to {store.describe()}: {src} is not a folder")
    started = time.monotonic()
    files, size = store._upload_pairs(list(_walk(src)), reference.path, overwrite=True)
    url = store.url_of(reference.path)
    _say(
        log, f"output {src} -> {url}: {files} file(s), {_fmt_bytes(size)}, {time.monotonic() - started:.2f} s"
    )
    return {"url": url, "files": files, "bytes": size}


# ---- helpers ------------------------------------------------------------------------------------


def _location(ref: DataReference) -> str:
    return ref.url if ref.url is not None else f"{ref.datastore}:{ref.path or '/'}"


def _say(log: TextIO | None, line: str) -> None:
    if log is not None:
        log.write(f"torchyard: {line}\n")
        log.flush()
