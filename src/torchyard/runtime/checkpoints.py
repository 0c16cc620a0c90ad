"""Committed checkpoints leave the node: the supervisor links each ``checkpoints/step_N/`` of the run
folder into the run's artifacts (``checkpoints/step_N/``) while the run goes and at Finalizing, where
the artifacts' own path (the workspace folder, or its remote artifact store at Finalizing) takes them.
Retention follows the run folder: a checkpoint the script's ``keep_last``/``keep_best`` deleted there is
deleted from the artifacts too."""

from __future__ import annotations

import os
import shutil
from typing import Any

from torchyard.paths import RunPaths
from torchyard.tracking.checkpoint import committed, list_checkpoints

ARTIFACT_PREFIX = "checkpoints"


def persist_checkpoints(ws: Any, run_id: str, paths: RunPaths) -> list[int]:
    """Link every committed checkpoint of the run folder into the run's artifacts, and drop those the
    run folder no longer has. Returns the steps now among the artifacts."""
    local = committed(paths.checkpoints)
    dest_root = os.path.join(ws.artifacts_dir(run_id), ARTIFACT_PREFIX)
    if not local:
        return [step for step, _f in committed(dest_root)]
    os.makedirs(dest_root, exist_ok=True)
    keep = {folder.name for _step, folder in local}
    for _step, folder in local:
        dest = os.path.join(dest_root, folder.name)
        if os.path.isdir(dest):
            continue  # committed folders never change
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _link_tree(str(folder), tmp)
            os.rename(tmp, dest)
        except OSError:  # retention removed it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    for entry in os.scandir(dest_root):
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry.path, ignore_errors=True)
    return [step for step, _f in committed(dest_root)]


def run_checkpoints(ws: Any, run_id: str, run_dir: str | None) -> list[dict[str, Any]]:
    """A run's checkpoints, newest last: those among its artifacts (``where``: ``artifacts``) and,
    for a run still going, those committed in its folder not copied yet (``where``: ``node``). While
    the run folder holds committed checkpoints it is the truth, as for ``persist_checkpoints``: one
    retention deleted there is not listed even before the supervisor drops its copy."""
    dest_root = os.path.join(ws.artifacts_dir(run_id), ARTIFACT_PREFIX)
    found = {c["step"]: dict(c, where="artifacts", artifact=f"{ARTIFACT_PREFIX}/step_{c['step']}")
             for c in list_checkpoints(dest_root)}
    if run_dir:
        on_node = list_checkpoints(RunPaths(run_dir).checkpoints)
        if on_node:
            kept = {c["step"] for c in on_node}
            found = {s: c for s, c in found.items() if s in kept}
        for c in on_node:
            found.setdefault(c["step"], dict(c, where="node"))
    return [found[s] for s in sorted(found)]


def _link_tree(src: str, dest: str) -> None:
    for root, _dirs, files in os.walk(src):
        out = os.path.join(dest, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for name in files:
            try:
                os.link(os.path.join(root, name), os.path.join(out, name))
            except OSError:
                shutil.copy2(os.path.join(root, name), os.path.join(out, name))
