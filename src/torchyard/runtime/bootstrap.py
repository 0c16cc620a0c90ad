"""The node-side bootstrap: ``python -m torchyard.runtime.bootstrap REQUEST.json RESULT.json``.

On a target whose nodes do not see the submitter's files (no ``Feature.SHARED_FS``), the job's
environment is built and its inputs are placed on each node, here, before the node's launcher
starts its ranks; on a shared filesystem the supervisor does the same once, on the submitting
machine. One owner of placement, whichever side it runs on.

The request (written by the launcher, or by a target's node agent, from ``NodePlan.bootstrap``)::

    {"environment": {...EnvironmentSpec...} | null,
     "inputs": {NAME: {"ref": {...DataReference...}, "datastore": {...Datastore...}}},
     "outputs": [NAME, ...],
     "cache_root": "/path" | null}

The result: ``{"python": ..., "bin": ..., "paths": {"inputs.NAME": path, "outputs.NAME": path},
"environment": {...}, "inputs": {NAME: {...}}}``. Nothing secret is in either: a datastore names
where its credentials come from, and the node reads them from its own environment; an input on a
``credentials="presigned"`` datastore lists its objects with expiring read-only URLs instead.

The cache (environments and downloaded objects) is ``cache_root``, else ``TORCHYARD_NODE_CACHE``,
else ``~/.cache/torchyard``: one per node (or per shared folder), reused by every run there.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from torchyard.paths import RunPaths


def cache_root(requested: str | None) -> str:
    return requested or os.environ.get("TORCHYARD_NODE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "torchyard")


def place(request: dict[str, Any], workdir: str, log_path: str) -> dict[str, Any]:
    """Build the environment and place the inputs of ``request`` for the run folder ``workdir``."""
    import msgspec  # noqa: PLC0415

    from torchyard.data.datastore import Datastore  # noqa: PLC0415
    from torchyard.data.transfer import resolve_input  # noqa: PLC0415
    from torchyard.environments import resolve  # noqa: PLC0415
    from torchyard.spec.job import EnvironmentSpec  # noqa: PLC0415

    root = cache_root(request.get("cache_root"))
    paths = RunPaths(workdir)
    python = sys.executable
    result: dict[str, Any] = {"paths": {}, "inputs": {}, "environment": {"key": None, "cached": True}}
    env = request.get("environment")
    if env:
        resolved = resolve(root, msgspec.convert(env, EnvironmentSpec), log_path)
        python = resolved.python
        result["environment"] = {"key": resolved.key, "cached": resolved.cached, "python": python}
    os.makedirs(paths.logs, exist_ok=True)
    with open(log_path, "a") as log:
        for name, entry in (request.get("inputs") or {}).items():
            ref = entry["ref"]
            store = Datastore.from_dict(entry["datastore"]) if entry.get("datastore") else None
            dest = paths.input(ref.get("path_on_compute") or name)
            signed = entry.get("presigned")
            found = resolve_input(root, {k: v for k, v in ref.items() if k not in ("type", "description")},
                                  dest, log, store=store, presigned=signed if isinstance(signed, dict) else None)
            result["inputs"][name] = found
            result["paths"][f"inputs.{name}"] = found["path"]
    for name in request.get("outputs") or []:
        folder = paths.named_output(name)
        os.makedirs(folder, exist_ok=True)
        result["paths"][f"outputs.{name}"] = folder
    result["python"] = python
    result["bin"] = os.path.dirname(python)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m torchyard.runtime.bootstrap REQUEST.json RESULT.json [NODE_RANK]", file=sys.stderr)
        return 2
    from torchyard.errors import TorchyardError  # noqa: PLC0415

    with open(args[0]) as fh:
        request = json.load(fh)
    workdir = os.getcwd()
    try:
        node = args[2] if len(args) == 3 else "0"
        result = place(request, workdir, RunPaths(workdir).log(f"inputs_node_{node}.txt"))
    except TorchyardError as err:  # a build or an input that failed: one line says why
        print(f"torchyard bootstrap: {err}", file=sys.stderr, flush=True)
        return 1
    tmp = f"{args[1]}.tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
