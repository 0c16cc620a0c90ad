"""Content-addressed snapshots of a run's ``source_directory``.

A snapshot is the exact set of files a run executes. Each file's content is stored once, named by
its SHA-256, and a manifest lists which content sits at which path. A file unchanged since any
earlier snapshot costs nothing new to store, and a run's working folder is built from hard links
to the stored content, so snapshotting and materializing an unchanged tree is cheap.

Layout of a store folder::

    objects/<sha[:2]>/<sha>          file contents, read-only (0o444), written atomically
    manifests/<manifest_id>.json     {"version", "file_count", "total_bytes", "files": [...]}
                                     files: sorted [{"path", "sha256", "size", "mode"}]; the id is
                                     the SHA-256 of the manifest's canonical JSON
    statcache.json                   (path, size, mtime_ns, ctime_ns, inode) -> sha256, so an
                                     unchanged tree is re-snapshotted without reading its files
    statcache.lock                   flock'ed around writes of the stat cache
    tmp/                             partial writes, renamed into place when complete

What goes in: every regular file under ``source_dir`` except

* the default excludes, directory (or file) names skipped anywhere: ``.git``, ``.torchyard``,
  ``outputs``, ``__pycache__``, ``.ipynb_checkpoints``, ``.torchyard-run``, plus ``*.pyc`` files;
* what the root-level ignore file says, gitignore syntax: ``.torchyardignore`` if present, else
  ``.amlignore``, else ``.gitignore`` (only one of them is read, and only the one at the root);
* symlinks that dangle or point outside the tree (skipped without error, listed in
  :attr:`Snapshot.skipped`). A symlink to a file or folder inside the tree is stored as what it
  points to; other special files (FIFOs, sockets, devices) are skipped.

Empty folders are not recorded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from torchyard.errors import NotFoundError, SpecError, WorkspaceError
from torchyard.paths import INTERNAL

if TYPE_CHECKING:
    import pathspec

__all__ = [
    "DEFAULT_EXCLUDES",
    "IGNORE_FILES",
    "Snapshot",
    "SnapshotFile",
    "SnapshotStore",
    "git_info",
]

#: Names skipped anywhere in the tree, whatever the ignore file says.
DEFAULT_EXCLUDES = frozenset(
    {".git", ".torchyard", "outputs", "__pycache__", ".ipynb_checkpoints", INTERNAL}
)
#: Ignore files, by precedence: the first one present at the root of the source folder is used.
IGNORE_FILES = (".torchyardignore", ".amlignore", ".gitignore")

_MANIFEST_VERSION = 1
_CACHE_VERSION = 1
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
# A file whose mtime/ctime is this close to the moment we look at it could still change within the
# same timestamp tick without its stat changing; such files are hashed but not cached ("racy clean").
_RACY_NS = 100_000_000
_CACHE_MAX_TREES = 64  # source folders remembered in the stat cache, most recently written first
_TMP_MAX_AGE_S = 3600  # leftovers of crashed writers in tmp/ older than this are removed
_OVERSHOOT_FILES = 100_000  # after a limit is exceeded, how much more to walk to report a total
_OVERSHOOT_S = 2.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SnapshotFile:
    """One file of a snapshot: its path (relative, ``/``-separated), content hash, size, exec bit."""

    path: str
    sha256: str
    size: int
    executable: bool

    @property
    def mode(self) -> int:
        """The permission bits recorded in the manifest: ``0o755`` if executable, else ``0o644``."""
        return 0o755 if self.executable else 0o644


@dataclass(frozen=True)
class Snapshot:
    """The result of :meth:`SnapshotStore.take`.

    ``manifest_id`` names the snapshot (same files and contents → same id). ``new_bytes`` is what this
    call added to the store (0 when every content was already there). ``skipped`` lists the paths of
    symlinks left out because they dangle or point outside the tree.
    """

    manifest_id: str
    file_count: int
    total_bytes: int
    new_bytes: int
    files: tuple[SnapshotFile, ...]
    skipped: tuple[str, ...] = ()


@dataclass
class _Entry:
    rel: str
    abs: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    executable: bool
    sha256: str | None = None

    def key(self) -> list[int]:
        return [self.size, self.mtime_ns, self.ctime_ns, self.ino]


class _LimitExceeded(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class SnapshotStore:
    """A content-addressed store of source snapshots in the folder ``root`` (created if missing).

    Safe to share between processes: objects and manifests are written to a temporary file and
    renamed into place, and the stat cache is rewritten under an exclusive ``flock``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.objects_dir = os.path.join(self.root, "objects")
        self.manifests_dir = os.path.join(self.root, "manifests")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.cache_path = os.path.join(self.root, "statcache.json")
        self.lock_path = os.path.join(self.root, "statcache.lock")
        try:
            for folder in (self.objects_dir, self.manifests_dir, self.tmp_dir):
                os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise WorkspaceError(f"cannot create the snapshot store {self.root}: {err.strerror}") from None

    def __repr__(self) -> str:
        return f"SnapshotStore({self.root!r})"

    # ---- paths ----------------------------------------------------------------------------------

    def object_path(self, sha256: str) -> str:
        """Where the content with this SHA-256 is (or would be) stored."""
        return os.path.join(self.objects_dir, sha256[:2], sha256)

    def manifest_path(self, manifest_id: str) -> str:
        """Where the manifest ``manifest_id`` is (or would be) stored."""
        if not _ID_RE.match(manifest_id):
            raise NotFoundError(f"snapshot {manifest_id!r} is not a snapshot id (64 lowercase hex digits)")
        return os.path.join(self.manifests_dir, f"{manifest_id}.json")

    # ---- take -----------------------------------------------------------------------------------

    def take(
        self,
        source_dir: str | os.PathLike[str],
        *,
        max_bytes: int = 300 * 1024 * 1024,
        max_files: int = 2000,
        progress: Callable[[str, int], None] | None = None,
    ) -> Snapshot:
        """Snapshot ``source_dir`` into the store and return what was recorded.

        ``progress`` (a transfer bar's callback: ``("files", N)`` once, then ``("bytes", size)`` per
        file) is told of the files read when they come to at least :data:`PROGRESS_BYTES`.

        Files whose (path, size, mtime, ctime, inode) match the stat cache are not read again.
        Raises :class:`~torchyard.errors.SpecError` (field ``source_directory``) when the tree holds
        more than ``max_files`` files or ``max_bytes`` bytes after the ignore rules; the limits are
        checked while walking, before any content is read. Raises
        :class:`~torchyard.errors.NotFoundError` when ``source_dir`` is not a folder.
        """
        source = os.path.abspath(os.fspath(source_dir))
        if not os.path.isdir(source):
            raise NotFoundError(
                f"source_directory {os.fspath(source_dir)!r} does not exist or is not a folder"
            )
        started_ns = time.time_ns()
        ignore_name, spec = _load_ignore(source)
        walker = _Walker(source, spec, max_files=max_files, max_bytes=max_bytes)
        try:
            walker.walk()
        except _LimitExceeded as exceeded:
            walker.finish_counting()
            raise SpecError(
                "source_directory",
                _limit_message(
                    exceeded.what, source, walker, ignore_name, max_files=max_files, max_bytes=max_bytes
                ),
            ) from None
        except OSError as err:
            raise WorkspaceError(f"cannot read the source directory {source}: {err}") from None
        entries = walker.entries

        tree = self._read_cache().get("trees", {}).get(source)
        tree_cache: dict[str, Any] = tree.get("files", {}) if isinstance(tree, dict) else {}
        if not isinstance(tree_cache, dict):
            tree_cache = {}
        todo: list[_Entry] = []
        for entry in entries:
            hit = tree_cache.get(entry.rel)
            if (
                isinstance(hit, list)
                and len(hit) == 5
                and hit[:4] == entry.key()
                and isinstance(hit[4], str)
                and _ID_RE.match(hit[4])
                and self._has_object(hit[4], entry.size)
            ):
                entry.sha256 = hit[4]
            else:
                todo.append(entry)

        writer = _ObjectWriter(self)
        if todo:
            self._clean_tmp()
            if progress is not None and sum(e.size for e in todo) >= PROGRESS_BYTES:
                progress("files", len(todo))
                writer.progress = progress
            writer.store_all(todo)
        entries = [e for e in entries if e.sha256 is not None]  # files that vanished meanwhile are dropped

        files = tuple(SnapshotFile(e.rel, e.sha256 or "", e.size, e.executable) for e in entries)
        total = sum(f.size for f in files)
        manifest_id = self._write_manifest(files, total)

        # Refresh the stat cache only when something changed, so the fast path writes nothing.
        fresh = {
            e.rel: [*e.key(), e.sha256]
            for e in entries
            if max(e.mtime_ns, e.ctime_ns) < started_ns - _RACY_NS
        }
        if fresh != tree_cache:
            self._write_cache(source, fresh)
        return Snapshot(
            manifest_id=manifest_id,
            file_count=len(files),
            total_bytes=total,
            new_bytes=writer.new_bytes,
            files=files,
            skipped=tuple(walker.skipped),
        )

    def put(self, path: str | os.PathLike[str]) -> Snapshot:
        """Store one file, or every regular file under a folder, and return its manifest.

        Unlike :meth:`take` there are no ignore rules and no default excludes (a model folder is
        stored whole); symlinks are followed. A single file is recorded under its base name.
        Content already in the store is not written again (``new_bytes`` says what was).
        Raises :class:`~torchyard.errors.NotFoundError` when ``path`` does not exist.
        """
        src = os.path.abspath(os.fspath(path))
        pairs: list[tuple[str, str]] = []
        if os.path.isfile(src):
            pairs.append((os.path.basename(src), src))
        elif os.path.isdir(src):
            for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
                dirnames.sort()
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    if os.path.isfile(full):
                        pairs.append((os.path.relpath(full, src).replace(os.sep, "/"), full))
        else:
            raise NotFoundError(f"{os.fspath(path)!r} does not exist")
        entries = []
        for rel, full in pairs:
            st = os.stat(full)
            entries.append(
                _Entry(rel, full, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, bool(st.st_mode & 0o111))
            )
        writer = _ObjectWriter(self)
        if entries:
            self._clean_tmp()
            writer.store_all(entries)
        entries = sorted((e for e in entries if e.sha256 is not None), key=lambda e: e.rel)
        files = tuple(SnapshotFile(e.rel, e.sha256 or "", e.size, e.executable) for e in entries)
        total = sum(f.size for f in files)
        manifest_id = self._write_manifest(files, total)
        return Snapshot(manifest_id, len(files), total, writer.new_bytes, files)

    def _has_object(self, sha256: str, size: int) -> bool:
        try:
            return os.stat(self.object_path(sha256)).st_size == size
        except OSError:
            return False

    def _write_manifest(self, files: tuple[SnapshotFile, ...], total: int) -> str:
        doc = {
            "version": _MANIFEST_VERSION,
            "file_count": len(files),
            "total_bytes": total,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size, "mode": f.mode} for f in files],
        }
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        manifest_id = hashlib.sha256(data).hexdigest()
        path = self.manifest_path(manifest_id)
        if not os.path.exists(path):
            _atomic_write(path, data, self.tmp_dir, mode=0o444)
        return manifest_id

    # ---- stat cache -----------------------------------------------------------------------------

    def _read_cache(self) -> dict[str, Any]:
        try:
            with open(self.cache_path, "rb") as fh:
                doc = json.loads(fh.read())
        except (OSError, ValueError):
            return {}
        if (
            not isinstance(doc, dict)
            or doc.get("version") != _CACHE_VERSION
            or not isinstance(doc.get("trees"), dict)
        ):
            return {}
        return doc

    def _write_cache(self, source: str, files: dict[str, list[Any]]) -> None:
        """Merge this tree's entries into the cache: re-read, replace this tree, rename, under a lock."""
        try:
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    trees = self._read_cache().get("trees", {})
                    trees[source] = {"written": time.time(), "files": files}
                    if len(trees) > _CACHE_MAX_TREES:
                        newest = sorted(trees, key=lambda k: trees[k].get("written", 0), reverse=True)
                        trees = {k: trees[k] for k in newest[:_CACHE_MAX_TREES]}
                    data = json.dumps(
                        {"version": _CACHE_VERSION, "trees": trees}, separators=(",", ":")
                    ).encode()
                    _atomic_write(self.cache_path, data, self.root, mode=0o644)
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError:
            pass  # the cache only saves time; a snapshot never fails for it

    def _clean_tmp(self) -> None:
        cutoff = time.time() - _TMP_MAX_AGE_S
        try:
            with os.scandir(self.tmp_dir) as it:
                for entry in it:
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
        except OSError:
            pass

    # ---- reading back ---------------------------------------------------------------------------

    def load(self, manifest_id: str) -> Snapshot:
        """The snapshot ``manifest_id`` as recorded (``new_bytes`` is 0). Raises NotFoundError if unknown."""
        path = self.manifest_path(manifest_id)
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read())
        except FileNotFoundError:
            raise NotFoundError(f"snapshot {manifest_id} is not in the store {self.root}") from None
        except (OSError, ValueError) as err:
            raise WorkspaceError(f"the manifest {path} is unreadable ({err})") from None
        files = []
        for item in doc["files"]:
            rel = item["path"]
            parts = rel.split("/")
            if (
                rel.startswith("/")
                or any(p in ("", ".", "..") for p in parts)
                or not _ID_RE.match(item["sha256"])
            ):
                raise WorkspaceError(f"the manifest {path} holds an invalid entry {item!r}")
            files.append(SnapshotFile(rel, item["sha256"], int(item["size"]), bool(item["mode"] & 0o111)))
        return Snapshot(manifest_id, len(files), sum(f.size for f in files), 0, tuple(files))

    def materialize(self, manifest_id: str, dest: str | os.PathLike[str]) -> None:
        """Recreate the snapshot's files in ``dest`` (created if missing; other content is kept).

        Files are hard links to the stored objects where the filesystem allows it, else copies;
        executable files are always copied (a hard link would share the object's mode). Existing
        files at the same paths are replaced, never written through. Linked files are read-only and
        share their inode with the store: a process that ignores permissions (root) and writes into
        one in place would change the stored content, so treat a materialized tree as read-only.
        Editing the source folder afterwards changes nothing in ``dest``.
        """
        self._recreate(manifest_id, dest, link=True)

    def restore(self, manifest_id: str, dest: str | os.PathLike[str]) -> None:
        """Like :meth:`materialize`, but with independent, writable copies (mode 0o644 / 0o755)."""
        self._recreate(manifest_id, dest, link=False)

    def _recreate(self, manifest_id: str, dest: str | os.PathLike[str], *, link: bool) -> None:
        snap = self.load(manifest_id)
        dest_dir = os.path.abspath(os.fspath(dest))
        made: set[str] = set()
        can_link = link
        for f in snap.files:
            src = self.object_path(f.sha256)
            target = os.path.join(dest_dir, *f.path.split("/"))
            parent = os.path.dirname(target)
            try:
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                if can_link and not f.executable:
                    try:
                        _link(src, target)
                        continue
                    except FileNotFoundError:
                        raise
                    except OSError as err:
                        # EXDEV (another filesystem) or EPERM: stop trying; EMLINK: just this file.
                        if err.errno != errno.EMLINK:
                            can_link = False
                _clear(target)
                shutil.copyfile(src, target)
                os.chmod(target, f.mode)
            except FileNotFoundError as err:
                if not os.path.exists(src):
                    raise WorkspaceError(
                        f"snapshot {manifest_id}: the stored content of {f.path} ({f.sha256}) is missing"
                    ) from None
                raise WorkspaceError(f"cannot materialize {f.path} into {dest_dir}: {err}") from None
            except OSError as err:
                raise WorkspaceError(f"cannot materialize {f.path} into {dest_dir}: {err}") from None


def _clear(target: str) -> None:
    """Remove a file (or link) at ``target`` so it is replaced, never written through."""
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise WorkspaceError(f"cannot materialize into {target}: a folder is in the way") from None
    except OSError:
        if os.path.isdir(target) and not os.path.islink(target):
            raise WorkspaceError(f"cannot materialize into {target}: a folder is in the way") from None
        raise


def _link(src: str, target: str) -> None:
    try:
        os.link(src, target)
    except FileExistsError:
        _clear(target)
        os.link(src, target)


# ---- walking ------------------------------------------------------------------------------------


def _load_ignore(source: str) -> tuple[str | None, pathspec.PathSpec | None]:
    for name in IGNORE_FILES:
        path = os.path.join(source, name)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    lines = fh.read().splitlines()
            except OSError as err:
                raise WorkspaceError(f"cannot read the ignore file {path}: {err.strerror}") from None
            import pathspec  # noqa: PLC0415 - only needed when an ignore file exists

            return name, pathspec.GitIgnoreSpec.from_lines(lines)
    return None, None


class _Walker:
    """Lists the files to snapshot, applying excludes and limits, without reading any content."""

    def __init__(
        self, source: str, spec: pathspec.PathSpec | None, *, max_files: int, max_bytes: int
    ) -> None:
        self.source = source
        self.real_source = os.path.realpath(source)
        self.spec = spec
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.entries: list[_Entry] = []
        self.skipped: list[str] = []
        self.count = 0
        self.total = 0
        self.top: dict[str, list[int]] = {}  # top-level entry -> [files, bytes]
        self.counting_only = False
        self.truncated = False
        self._deadline = 0.0
        self._budget = 0

    def walk(self) -> None:
        self._walk_dir(self.source, "", self.real_source, {self.real_source})
        self.entries.sort(key=lambda e: e.rel)

    def finish_counting(self) -> None:
        """After a limit was exceeded: keep walking (stat only, bounded) to report totals."""
        self.counting_only = True
        self._deadline = time.monotonic() + _OVERSHOOT_S
        self._budget = _OVERSHOOT_FILES
        self.count = 0
        self.total = 0
        self.top = {}
        with contextlib.suppress(_LimitExceeded, OSError):
            self._walk_dir(self.source, "", self.real_source, {self.real_source})

    def _ignored(self, rel: str, is_dir: bool) -> bool:
        return self.spec is not None and self.spec.match_file(rel + "/" if is_dir else rel)

    def _walk_dir(self, folder: str, prefix: str, real: str, chain: set[str]) -> None:
        """Walk ``folder`` (real path ``real``); ``chain`` holds the real paths of its ancestors."""
        with os.scandir(folder) as it:
            items = list(it)
        for item in items:
            name = item.name
            if name in DEFAULT_EXCLUDES:
                continue
            rel = prefix + name
            if item.is_symlink():
                self._symlink(item, rel, chain)
            elif item.is_dir(follow_symlinks=False):
                if not self._ignored(rel, True):
                    self._descend(item.path, rel, os.path.join(real, name), chain)
            elif (
                item.is_file(follow_symlinks=False)
                and not name.endswith(".pyc")
                and not self._ignored(rel, False)
            ):
                self._add(rel, item.path, item.stat(follow_symlinks=False))

    def _descend(self, path: str, rel: str, real: str, chain: set[str]) -> None:
        if real in chain:
            return  # a symlink cycle
        chain.add(real)
        try:
            self._walk_dir(path, rel + "/", real, chain)
        finally:
            chain.discard(real)

    def _symlink(self, item: os.DirEntry[str], rel: str, chain: set[str]) -> None:
        target = os.path.realpath(item.path)
        try:
            st = os.stat(target)
        except OSError:
            self.skipped.append(rel)  # dangling
            return
        if target != self.real_source and not target.startswith(self.real_source + os.sep):
            self.skipped.append(rel)  # points outside the tree
            return
        if stat.S_ISDIR(st.st_mode):
            if not self._ignored(rel, True):
                self._descend(item.path, rel, target, chain)
        elif stat.S_ISREG(st.st_mode) and not item.name.endswith(".pyc") and not self._ignored(rel, False):
            self._add(rel, item.path, st)

    def _add(self, rel: str, path: str, st: os.stat_result) -> None:
        self.count += 1
        self.total += st.st_size
        top = rel.split("/", 1)
        key = top[0] + "/" if len(top) > 1 else top[0]
        slot = self.top.setdefault(key, [0, 0])
        slot[0] += 1
        slot[1] += st.st_size
        if self.counting_only:
            self._budget -= 1
            if self._budget <= 0 or (self._budget % 1000 == 0 and time.monotonic() > self._deadline):
                self.truncated = True
                raise _LimitExceeded("budget")
            return
        if self.count > self.max_files:
            raise _LimitExceeded("files")
        if self.total > self.max_bytes:
            raise _LimitExceeded("bytes")
        self.entries.append(
            _Entry(
                rel=rel,
                abs=path,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns,
                ino=st.st_ino,
                executable=bool(st.st_mode & 0o111),
            )
        )


def _limit_message(
    what: str,
    source: str,
    walker: _Walker,
    ignore_name: str | None,
    *,
    max_files: int,
    max_bytes: int,
) -> str:
    at_least = "at least " if walker.truncated else ""
    if what == "files":
        head = (
            f"{source} holds {at_least}{walker.count:,} files to snapshot, more than the limit of "
            f"{max_files:,} files ({_human(walker.total)} in all)"
        )
        largest = sorted(walker.top.items(), key=lambda kv: (kv[1][0], kv[1][1]), reverse=True)[:10]
        limit_name = "max_files"
    else:
        head = (
            f"{source} holds {at_least}{_human(walker.total)} to snapshot ({walker.total:,} bytes in "
            f"{walker.count:,} files), more than the limit of {_human(max_bytes)} ({max_bytes:,} bytes)"
        )
        largest = sorted(walker.top.items(), key=lambda kv: (kv[1][1], kv[1][0]), reverse=True)[:10]
        limit_name = "max_bytes"
    if ignore_name:
        fix = f"exclude what the run does not need with patterns in {ignore_name} (the ignore file in use)"
    else:
        fix = "exclude what the run does not need in a .torchyardignore file (gitignore syntax) at its root"
    entries = ", ".join(
        f"{name} ({_human(size)}, {files:,} file{'s' if files != 1 else ''})"
        if name.endswith("/")
        else f"{name} ({_human(size)})"
        for name, (files, size) in largest
    )
    return f"{head}; {fix}, or raise the limit ({limit_name}). Largest entries: {entries}"


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# ---- storing content ----------------------------------------------------------------------------


#: a snapshot whose new files come to this many bytes tells its ``progress`` callback (a bar)
PROGRESS_BYTES = 16 * 1024 * 1024


class _ObjectWriter:
    """Hashes files and stores new contents, in a few threads (hashlib releases the GIL)."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.new_bytes = 0
        self.progress: Callable[[str, int], None] | None = None
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._made_dirs: set[str] = set()

    def store_all(self, todo: list[_Entry]) -> None:
        big = sum(e.size for e in todo)
        workers = min(8, os.cpu_count() or 1, len(todo))
        if workers <= 1 or (len(todo) < 16 and big < 8 * _CHUNK):
            for entry in todo:
                self._store_one(entry)
                if self.progress is not None:
                    self.progress("bytes", entry.size)
            return
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="torchyard-snapshot") as pool:
            futures = {pool.submit(self._store_one, e): e for e in todo}
            for fut in concurrent.futures.as_completed(futures):
                fut.result()
                if self.progress is not None:  # in this thread: a bar is not told from several at once
                    self.progress("bytes", futures[fut].size)

    def _store_one(self, entry: _Entry) -> None:
        try:
            fh = open(entry.abs, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return  # removed since the walk: leave it out (entry.sha256 stays None)
        except OSError as err:
            raise WorkspaceError(f"cannot read {entry.abs}: {err.strerror}") from None
        with fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return
            # Small files: hash first, and copy only if the content is new.
            if st.st_size <= _CHUNK:
                data = fh.read()
                sha = hashlib.sha256(data).hexdigest()
                self._update(entry, st, sha, len(data))
                if not self.store._has_object(sha, len(data)):
                    self._install(sha, len(data), lambda out: out.write(data))
                return
            # Large files: hash in chunks; if the content is new, copy it while hashing it again, so
            # the object is exactly what its name says even if the file changes meanwhile.
            sha, size = _hash_stream(fh, None)
            self._update(entry, st, sha, size)
            if self.store._has_object(sha, size):
                return
            fh.seek(0)
            tmp = self._tmp_name()
            try:
                with open(tmp, "wb") as out:
                    copied_sha, copied_size = _hash_stream(fh, out)
                if copied_sha != sha:
                    self._update(entry, st, copied_sha, copied_size)
                    entry.mtime_ns = -1  # changed while read: never trust its stat for the cache
                self._place(tmp, copied_sha, copied_size)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _update(self, entry: _Entry, st: os.stat_result, sha: str, size: int) -> None:
        entry.sha256 = sha
        entry.size = size
        entry.mtime_ns = st.st_mtime_ns
        entry.ctime_ns = st.st_ctime_ns
        entry.ino = st.st_ino
        if size != st.st_size:  # changed while read: never trust its stat for the cache
            entry.mtime_ns = -1

    def _tmp_name(self) -> str:
        return os.path.join(
            self.store.tmp_dir, f"obj.{os.getpid()}.{threading.get_ident()}.{os.urandom(6).hex()}"
        )

    def _install(self, sha: str, size: int, write: Any) -> None:
        tmp = self._tmp_name()
        try:
            with open(tmp, "wb") as out:
                write(out)
            self._place(tmp, sha, size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _place(self, tmp: str, sha: str, size: int) -> None:
        final = self.store.object_path(sha)
        if self.store._has_object(sha, size):
            return  # stored already (by us, another file, or another process): keep that inode
        folder = os.path.dirname(final)
        if folder not in self._made_dirs:
            os.makedirs(folder, exist_ok=True)
            self._made_dirs.add(folder)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        with self._lock:
            if sha not in self._written:
                self._written.add(sha)
                self.new_bytes += size


def _hash_stream(fh: BinaryIO, out: BinaryIO | None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), size


def _atomic_write(path: str, data: bytes, tmp_dir: str, *, mode: int) -> None:
    tmp = os.path.join(tmp_dir, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# ---- git ----------------------------------------------------------------------------------------


def _in_git_checkout(folder: str) -> bool:
    """Whether ``folder`` or a parent holds ``.git`` (so no git process starts for plain folders)."""
    here = os.path.abspath(folder)
    if not os.path.isdir(here):
        return False
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return True
        parent = os.path.dirname(here)
        if parent == here:
            return False
        here = parent


def git_info(source_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Git facts about ``source_dir``, as run properties.

    Inside a git checkout: ``{"git.commit": <HEAD sha>, "git.dirty": "true"|"false", "git.branch":
    <branch, or "HEAD" when detached>}`` (``git.dirty`` counts untracked files too; a key whose
    answer git could not give in time is left out). Outside a checkout, or without ``git``: ``{}``.
    """
    folder = os.fspath(source_dir)
    if not _in_git_checkout(folder) or shutil.which("git") is None:
        return {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take index.lock under the user's feet

    def git(*args: str, timeout: float = 5.0) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", folder, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    inside = git("rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        return {}
    info: dict[str, str] = {}
    commit = git("rev-parse", "--verify", "-q", "HEAD")
    if commit and commit.strip():
        info["git.commit"] = commit.strip()
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch is None:  # no commit yet: the branch HEAD points at
        branch = git("symbolic-ref", "--short", "-q", "HEAD")
    if branch and branch.strip():
        info["git.branch"] = branch.strip()
    status = git("status", "--porcelain", timeout=10.0)
    if status is not None:
        info["git.dirty"] = "true" if status.strip() else "false"
    return info
