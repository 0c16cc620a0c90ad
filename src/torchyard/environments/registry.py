"""Named, versioned environments registered in a workspace (``ws.environments``)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from torchyard.errors import NotFoundError, SpecError
from torchyard.spec.estimators import Environment

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _content(env: Environment) -> dict[str, Any]:
    data = env.to_spec_dict()
    data.pop("version", None)
    return data


class EnvironmentRegistry:
    """``ws.environments``: ``register(env)``, ``get(name, version=None)`` (latest by default),
    ``list()``, and dict-style access by name (latest version)."""

    def __init__(self, workspace: str) -> None:
        self.root = os.path.join(workspace, "environments")

    def _versions(self, name: str) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, name))
        except OSError:
            return []
        versions = [n[:-5] for n in names if n.endswith(".json")]
        return sorted(versions, key=lambda v: (0, int(v)) if v.isdigit() else (1, v))

    def register(self, env: Environment) -> Environment:
        """Store ``env``; without a version it gets the next number, unless its content equals the
        latest version's, which is returned instead. A version, once registered, never changes."""
        if not _NAME.match(env.name or ""):
            raise SpecError("name", f"invalid environment name {env.name!r}")
        folder = os.path.join(self.root, env.name)
        os.makedirs(folder, exist_ok=True)
        versions = self._versions(env.name)
        if env.version is None:
            if versions and _content(self.get(env.name, versions[-1])) == _content(env):
                return self.get(env.name, versions[-1])
            numbers = [int(v) for v in versions if v.isdigit()]
            version = str(max(numbers, default=0) + 1)
        else:
            version = str(env.version)
            if version in versions:
                if _content(self.get(env.name, version)) != _content(env):
                    raise SpecError("version", f"environment {env.name}:{version} is already registered with other "
                                               "content; versions are immutable, register a new one")
                return self.get(env.name, version)
        data = {**env.to_spec_dict(), "version": version, "registered": time.time()}
        path = os.path.join(folder, f"{version}.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2)
        try:
            os.link(tmp, path)  # fails if another process registered this version meanwhile
        except FileExistsError:
            os.unlink(tmp)
            return self.register(env)
        os.unlink(tmp)
        return self.get(env.name, version)

    def get(self, name: str, version: str | None = None) -> Environment:
        versions = self._versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no environment {name!r} is registered in this workspace (registered: {known})")
        version = versions[-1] if version in (None, "latest") else str(version)
        if version not in versions:
            raise NotFoundError(f"environment {name!r} has no version {version!r} (versions: {', '.join(versions)})")
        with open(os.path.join(self.root, name, f"{version}.json")) as fh:
            data = json.load(fh)
        return Environment(
            data["name"],
            data["version"],
            pip=data.get("pip_packages", []),
            conda=data.get("conda_packages", []),
            pip_requirements_file=data.get("pip_requirements_file"),
            conda_dependencies_file=data.get("conda_dependencies_file"),
            python=data.get("python"),
            user_managed=data.get("user_managed", False),
        )

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if self._versions(n))
        except OSError:
            return []

    def list(self) -> list[Environment]:
        return [self.get(n, v) for n in self.names() for v in self._versions(n)]

    def __getitem__(self, name: str) -> Environment:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._versions(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
