"""Where model services live in a workspace: ``services/NAME/`` (L2: files only).

::

    services/NAME/service.json     what to serve: generation, models, entry script, deploy config
    services/NAME/state.json       written by the service's supervisor: state, pid, port, workers
    services/NAME/keys.json        auth keys (mode 0600), when auth is enabled
    services/NAME/gen_K/           generation K: src/ (the entry script's folder), models/
    services/NAME/logs/            service.txt (the supervisor), worker_K_I.txt (each worker)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

SERVICES_DIRNAME = "services"


def services_root(workspace_path: str) -> str:
    return os.path.join(workspace_path, SERVICES_DIRNAME)


def service_dir(workspace_path: str, name: str) -> str:
    return os.path.join(services_root(workspace_path), name)


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable (being replaced)."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(path: str, doc: dict[str, Any], mode: int = 0o644) -> None:
    """Write atomically (temporary file, then rename)."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def list_services(workspace_path: str) -> list[str]:
    root = services_root(workspace_path)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(root, n, "service.json"))]


def services_using(workspace_path: str, model_id: str) -> list[str]:
    """Names of the services whose current generation serves the model ``NAME:VERSION``."""
    users = []
    for name in list_services(workspace_path):
        doc = read_json(os.path.join(service_dir(workspace_path, name), "service.json")) or {}
        if model_id in [m.get("id") for m in doc.get("models", [])]:
            users.append(name)
    return users


ENDPOINTS_DIRNAME = "endpoints"


def endpoint_dir(workspace_path: str, name: str) -> str:
    return os.path.join(workspace_path, ENDPOINTS_DIRNAME, name)


def list_endpoints(workspace_path: str) -> list[str]:
    root = os.path.join(workspace_path, ENDPOINTS_DIRNAME)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(root, n, "endpoint.json"))]
