"""Clone and re-run a run (issue #24, item 5): the same code snapshot, environment and inputs, with
changed settings or script arguments, recorded as lineage on the new run.

A change ``KEY=VALUE`` names a job setting (``node_count``, ``process_count_per_node``,
``compute_target``, ``max_run_duration_seconds``, ``hang_timeout_seconds``, ``max_queue_seconds``,
``priority``, ``max_retries``, ``use_gpu``, ``distributed_backend``) or else a script argument: ``lr=0.1`` sets the value of
``--lr`` (``--lr 0.01`` or ``--lr=0.01`` in the original's arguments), appending ``--lr 0.1`` when the
original had none.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from torchyard.errors import SpecError, WorkspaceError

SETTINGS: dict[str, Any] = {"compute_target": str, "max_run_duration_seconds": float, "hang_timeout_seconds": float,
                            "max_queue_seconds": float, "priority": int, "max_retries": int, "use_gpu": bool,
                            "preemptible": bool}
DISTRIBUTION: dict[str, Any] = {"node_count": int, "process_count_per_node": int}


def _typed(key: str, value: str, kind: Any) -> Any:
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SpecError(key, f"must be true or false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    if kind is float and value.lower() in ("none", "null", ""):
        return None
    try:
        return kind(value)
    except ValueError:
        raise SpecError(key, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def with_arguments(arguments: list[str], key: str, value: str) -> list[str]:
    """``arguments`` with ``--key``'s value set to ``value`` (appended when absent)."""
    flag = "--" + key.lstrip("-")
    out = list(arguments)
    for i, arg in enumerate(out):
        if arg == flag and i + 1 < len(out):
            out[i + 1] = value
            return out
        if arg.startswith(flag + "="):
            out[i] = f"{flag}={value}"
            return out
    return [*out, flag, value]


def changed_spec(spec_doc: Mapping[str, Any], changes: Mapping[str, str]) -> dict[str, Any]:
    """The original run's spec (as stored) with ``changes`` applied; raises SpecError naming a bad one."""
    doc = json.loads(json.dumps(spec_doc))
    for raw_key, value in changes.items():
        key = raw_key.strip()
        if not key:
            raise SpecError("set", f"expected KEY=VALUE, got {raw_key!r}={value!r}")
        if key in SETTINGS:
            doc[key] = _typed(key, value, SETTINGS[key])
        elif key in DISTRIBUTION:
            doc.setdefault("distribution", {})[key] = _typed(key, value, DISTRIBUTION[key])
        elif key == "distributed_backend":
            from torchyard.spec.estimators import parse_backend  # noqa: PLC0415

            backend, comm = parse_backend(value)
            if comm is None and backend == "pytorch":
                comm = "nccl" if doc.get("use_gpu") else "gloo"
            doc.setdefault("distribution", {}).update(backend=backend, communication_backend=comm)
        else:
            doc["arguments"] = with_arguments(list(doc.get("arguments") or []), key, value)
    return doc


def rerun(ws: Any, run_id: str, changes: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
          *, created_by: str | None = None) -> str:
    """Submit a new run of ``run_id``'s experiment from its snapshot, environment and inputs with
    ``changes``; the new run's id. Its properties ``torchyard.rerun_of`` and ``torchyard.rerun_changes``
    and its tag ``rerun_of`` record where it came from. ``created_by``: the team server's user who
    asked (the dashboard's Re-run button), as for a submit."""
    from torchyard.runtime.submit import submit_run  # noqa: PLC0415
    from torchyard.spec.job import build_job_spec  # noqa: PLC0415

    row = ws.store.get_run(run_id)
    if str(row.get("kind")) == "sweep":
        raise SpecError("run", f"{run_id} is a sweep; re-run one of its trials, or submit the sweep again")
    manifest = ws.store.get_properties(run_id).get("torchyard.snapshot")
    if not manifest:
        raise WorkspaceError(f"run {run_id} has no code snapshot recorded; it cannot be re-run as it was")
    changes = dict(changes or {})
    doc = changed_spec(json.loads(row["spec"]), changes)
    code = tempfile.mkdtemp(prefix="torchyard-rerun-")
    try:
        ws.snapshots.restore(manifest, code)
        doc["source_directory"] = code
        spec = build_job_spec(**doc)
        new_tags = {**ws.store.get_tags(run_id), **dict(tags or {}), "rerun_of": run_id}
        new_id = submit_run(ws, row["experiment"], spec, tags=new_tags, created_by=created_by)
    finally:
        shutil.rmtree(code, ignore_errors=True)
    ws.store.add_properties(new_id, {"torchyard.rerun_of": run_id, "torchyard.rerun_changes": json.dumps(changes)})
    return new_id
