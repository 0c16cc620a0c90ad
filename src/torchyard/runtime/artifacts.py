"""A run's artifacts: outputs/, logs/ and uploads, collected at the end (hard links where possible),
and moved to the workspace's remote artifact store when it has one."""

from __future__ import annotations

import os
import shutil
from typing import Any

from torchyard.paths import RunPaths


def collect_artifacts(ws: Any, store: Any, run_id: str, paths: RunPaths) -> None:
    """outputs/, logs/ and uploaded files become the run's artifacts (hard links where possible)."""
    dest = ws.artifacts_dir(run_id)
    os.makedirs(dest, exist_ok=True)
    for sub, target in (
        ("outputs", "outputs"),
        ("logs", "logs"),
        (RunPaths.relative().uploads, ""),
    ):
        src = os.path.join(paths.root, sub)
        if os.path.isdir(src):
            _link_tree(src, os.path.join(dest, target) if target else dest)
    sup_log = paths.supervisor_log
    if os.path.isfile(sup_log) and os.path.getsize(sup_log):
        os.makedirs(os.path.join(dest, "logs"), exist_ok=True)
        shutil.copyfile(sup_log, os.path.join(dest, "logs", "supervisor.txt"))
    _move_artifacts(ws, store, run_id, dest)


def _move_artifacts(ws: Any, store: Any, run_id: str, dest: str) -> None:
    """With a remote artifact store, the artifacts go there (and leave the workspace folder)."""
    remote = ws.artifact_store()
    if remote is None:
        return
    prefix = f"artifacts/{run_id}"
    try:
        remote.upload(dest, prefix)
    except Exception as err:  # keep them here: nothing is lost
        print(f"torchyard supervisor: artifacts stay local: {err}", flush=True)
        store.update_details(run_id, artifact_store_error=str(err))
        return
    store.update_details(run_id, artifact_store={"datastore": remote.name, "prefix": prefix})
    shutil.rmtree(dest, ignore_errors=True)


def _link_tree(src: str, dest: str) -> None:
    for root, _dirs, files in os.walk(src):
        out = os.path.join(dest, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for name in files:
            target = os.path.join(out, name)
            if os.path.lexists(target):
                os.unlink(target)
            try:
                os.link(os.path.join(root, name), target)
            except OSError:
                shutil.copy2(os.path.join(root, name), target)
