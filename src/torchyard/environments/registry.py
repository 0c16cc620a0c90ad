"""Named, versioned environments registered in a workspace (``ws.environments``)."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator
from typing import Any

from torchyard.errors import NotFoundError, SpecError
from torchyard.records import JsonRecords, valid_name
from torchyard.spec.estimators import Environment


def _content(env: Environment) -> dict[str, Any]:
    data = env.to_spec_dict()
    data.pop("version", None)
    if getattr(env, "environment_variables", None):
        data["environment_variables"] = dict(env.environment_variables)
    return data


class EnvironmentRegistry:
    """``ws.environments``: ``register(env)``, ``get(name, version=None)`` (latest by default),
    ``list()``, and dict-style access by name (latest version)."""

    def __init__(self, workspace: str) -> None:
        self.records = JsonRecords(os.path.join(workspace, "environments"), "environment")
        self.root = self.records.root

    def _versions(self, name: str) -> list[str]:
        return self.records.versions(name) if valid_name(name) else []

    def register(self, env: Environment) -> Environment:
        """Store ``env``; without a version it gets the next number, unless its content equals the
        latest version's, which is returned instead. A version, once registered, never changes."""
        self.records.check_name(env.name)
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
        data = {**_content(env), "version": version, "registered": time.time()}
        if not self.records.put(env.name, data, version, exclusive=True):  # registered meanwhile by another process
            return self.register(env)
        return self.get(env.name, version)

    def get(self, name: str, version: str | None = None) -> Environment:
        versions = self._versions(name)
        if not versions:
            from torchyard.environments.curated import curated  # noqa: PLC0415

            found = curated(name) if version in (None, "latest", "curated") else None
            if found is not None:
                return found
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no environment {name!r} is registered in this workspace (registered: {known}; "
                                "curated: torchyard-pytorch-2.13 and others, see Environment.list(ws))")
        version = versions[-1] if version in (None, "latest") else str(version)
        if version not in versions:
            raise NotFoundError(f"environment {name!r} has no version {version!r} (versions: {', '.join(versions)})")
        data = self.records.get(name, version)
        env = Environment(
            data["name"],
            data["version"],
            pip=data.get("pip_packages", []),
            conda=data.get("conda_packages", []),
            pip_requirements_file=data.get("pip_requirements_file"),
            conda_dependencies_file=data.get("conda_dependencies_file"),
            python=data.get("python"),
            user_managed=data.get("user_managed", False),
        )
        env.environment_variables = dict(data.get("environment_variables") or {})
        return env

    def names(self) -> list[str]:
        return [n for n in self.records.names() if self._versions(n)]

    def list(self) -> list[Environment]:
        return [self.get(n, v) for n in self.names() for v in self._versions(n)]

    def items(self) -> builtins.list[tuple[str, Environment]]:
        """Azure's ``ws.environments`` dict: every registered name's latest version, then the curated
        catalogue's entries (registered names win)."""
        from torchyard.environments.curated import curated, names  # noqa: PLC0415

        out = [(n, self.get(n)) for n in self.names()]
        taken = {n for n, _ in out}
        for name in names():
            env = curated(name, announce=False)
            if name not in taken and env is not None:
                out.append((name, env))
        return out

    def keys(self) -> builtins.list[str]:
        return [n for n, _ in self.items()]

    def values(self) -> builtins.list[Environment]:
        return [e for _, e in self.items()]

    def __getitem__(self, name: str) -> Environment:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._versions(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
