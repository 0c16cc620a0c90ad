"""The one channel that brings a run's files back from nodes that do not share its folder.

Two halves, owned here and not by each target:

* :func:`scan` runs where a node's copy of the run folder is (inside a Ray actor, on a Slurm
  ``shared_dir``, in a test target's node folder): given what the submitter already has, it returns a
  :data:`Changes` frame — new bytes of the append-only folders :meth:`RunPaths.mirrored` names (logs,
  metric journals, mpi exit files) and, whole, any node report whose checksum changed.
* :class:`Mirror` runs in the supervisor: it keeps per-node offsets, asks for frames and applies
  them to the run's own folder, and at the end brings ``outputs/`` (node 0's; every node's under
  ``outputs/node_K/`` with ``collect_all_outputs``).

A target only moves frames (a Ray actor call; a file system; the team server over HTTP, see
:mod:`torchyard.compute.mirror_push` and :func:`apply_at`): a frame is ``{relative path: [offset,
bytes]}``, msgpack-encodable as it is, offset -1 for a whole file.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from typing import Any

from torchyard.paths import INTERNAL, RunPaths

#: at most this many bytes in one frame (the rest comes with the next)
CHUNK = 4 * 1024 * 1024

Changes = dict[str, list[Any]]  # relative path -> [offset (-1: whole file), bytes]


def scan(node_dir: str, offsets: dict[str, int], budget: int = CHUNK) -> Changes:
    """What of ``node_dir`` the submitter lacks, given ``offsets`` (relative path → bytes it has for
    append-only files; CRC-32 of what it has for whole files)."""
    out: Changes = {}
    for sub in RunPaths.mirrored():
        for rel, path in _files_under(node_dir, sub):
            have = offsets.get(rel, 0)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            if rel not in offsets and size == 0:
                out[rel] = [0, b""]  # an empty log still exists
                continue
            if size <= have or budget <= 0:
                continue
            with open(path, "rb") as fh:
                fh.seek(have)
                data = fh.read(min(size - have, budget))
            budget -= len(data)
            out[rel] = [have, data]
    prefix = os.path.basename(RunPaths.reports_prefix())
    try:
        reports = [e for e in os.scandir(os.path.join(node_dir, INTERNAL)) if e.name.startswith(prefix)
                   and e.name.endswith(".json")]
    except OSError:
        reports = []
    for entry in reports:
        rel = os.path.join(INTERNAL, entry.name)
        try:
            with open(entry.path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if zlib.crc32(data) != offsets.get(rel, -1):  # rewritten in place, maybe at the same length
            out[rel] = [-1, data]
    return out


def _files_under(root: str, sub: str) -> list[tuple[str, str]]:
    """(relative path, absolute path) of every file under ``root/sub``, subfolders included
    (``logs/tensorboard/rank_0/...``), in a stable order."""
    found = []
    for dirpath, dirnames, files in os.walk(os.path.join(root, sub)):
        dirnames.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            found.append((os.path.relpath(path, root), path))
    return found


class Mirror:
    """The submitter's side: offsets per node, frames applied to the run's own folder."""

    def __init__(self, workdir: str, node_count: int) -> None:
        self.workdir = workdir
        self.offsets: list[dict[str, int]] = [{} for _ in range(node_count)]

    def apply(self, node: int, changes: Changes) -> bool:
        """Write one node's frame into the run folder; whether it carried anything."""
        for rel, (offset, data) in changes.items():
            path = os.path.join(self.workdir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if offset < 0:
                tmp = f"{path}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
                self.offsets[node][rel] = zlib.crc32(data)
                continue
            with open(path, "ab") as fh:
                if fh.tell() != offset:
                    fh.truncate(offset)
                    fh.seek(offset)
                fh.write(data)
            self.offsets[node][rel] = offset + len(data)
        return bool(changes)

    def pull_folder(self, node: int, node_dir: str) -> None:
        """Everything new from a node whose folder this process can read (a shared file system)."""
        while self.apply(node, scan(node_dir, self.offsets[node])):
            pass

    def drain(self, node: int, fetch: Callable[[dict[str, int]], Changes]) -> None:
        """Frames from ``fetch(offsets)`` until one comes back empty (the node has finished writing)."""
        while self.apply(node, fetch(self.offsets[node])):
            pass

    def outputs_destination(self, node: int) -> str:
        """Where node ``node``'s ``outputs/`` land: the run's own for node 0, ``outputs/node_K`` else."""
        return self.workdir if node == 0 else os.path.join(RunPaths(self.workdir).outputs, f"node_{node}")

    def collect_folder(self, node: int, node_dir: str) -> None:
        """Copy a readable node folder's results (``RunPaths.collected()``) into the run folder."""
        rel = RunPaths.relative()
        wanted = RunPaths.collected() if node == 0 else (rel.outputs,)  # another node: its outputs only
        for sub in wanted:
            src = os.path.join(node_dir, sub)
            if os.path.isdir(src):
                target = os.path.join(self.workdir, sub) if node == 0 else self.outputs_destination(node)
                shutil.copytree(src, target, dirs_exist_ok=True)


# ---- the same frames over HTTP (torchyard.compute.mirror_push → the team server) -------------------


def frame_path(node: int, rel: str) -> str | None:
    """``rel`` if node ``node`` may write it into the run folder through the server: a path under
    one of :meth:`RunPaths.mirrored`'s folders, or that node's own report; None for anything else
    (absolute, ``..``, another node's report, torchyard's internal files)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or os.path.isabs(rel):
        return None
    if os.path.normpath(rel) != rel or rel.startswith("..") or "/../" in f"/{rel}/":
        return None
    if rel == os.path.relpath(RunPaths("/").node_report(node), "/"):
        return rel
    return rel if any(rel.startswith(f"{sub}/") for sub in RunPaths.mirrored()) else None


def held(workdir: str, node: int) -> dict[str, int]:
    """What the run folder has, in :func:`scan`'s terms (bytes of append-only files, CRC-32 of the
    node's report): a pusher that starts (or restarts) sends only the rest."""
    out: dict[str, int] = {}
    for sub in RunPaths.mirrored():
        for rel, path in _files_under(workdir, sub):
            try:
                out[rel] = os.path.getsize(path)
            except OSError:
                continue
    report = RunPaths(workdir).node_report(node)
    try:
        with open(report, "rb") as fh:
            out[os.path.relpath(report, workdir)] = zlib.crc32(fh.read())
    except OSError:
        pass
    return out


def apply_at(workdir: str, node: int, changes: Changes) -> dict[str, int]:
    """Apply a frame from node ``node`` with no state kept between frames: bytes land at their
    offset (re-sending a range is harmless), a gap is not filled, a whole file is replaced
    atomically. Returns, per path of the frame, what the run folder now has (a pusher resumes from
    there). ValueError names a path the node may not write."""
    out: dict[str, int] = {}
    for rel, entry in changes.items():
        if frame_path(node, rel) is None:
            raise ValueError(f"node {node} may not write {rel!r}")
        offset, data = int(entry[0]), bytes(entry[1])
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if offset < 0:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            out[rel] = zlib.crc32(data)
            continue
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if offset <= size and data:
                os.pwrite(fd, data, offset)
                size = max(size, offset + len(data))
            out[rel] = size
        finally:
            os.close(fd)
    return out
