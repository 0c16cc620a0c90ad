"""Compute targets by name.

A name resolves, in order, to the built-in ``local``, a target attached to the workspace
(``<workspace>/computes/<name>.json``: its kind and its settings), or a third-party target from the
``torchyard.compute`` entry-point group. Kinds (``ray``, ``slurm``, plus entry points) load lazily:
the core never imports ray. Unknown names list the known ones.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from torchyard.errors import NotFoundError, SpecError, WorkspaceError

if TYPE_CHECKING:
    from torchyard.compute.base import ComputeTarget

KINDS = {
    "local": "torchyard.compute.local:LocalCompute",
    "ray": "torchyard.compute.ray:RayCompute",
    "slurm": "torchyard.compute.slurm:SlurmCompute",
}
BUILTIN_TARGETS = ("local",)
ENTRY_POINT_GROUP = "torchyard.compute"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _load(ref: str) -> type[ComputeTarget]:
    module, _, attr = ref.partition(":")
    target: type[ComputeTarget] = getattr(importlib.import_module(module), attr)
    return target


def target_class(kind: str) -> type[ComputeTarget]:
    """The class of a compute-target kind; SpecError listing the known kinds otherwise."""
    if kind in KINDS:
        return _load(KINDS[kind])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == kind:
            cls: type[ComputeTarget] = ep.load()
            return cls
    known = sorted(set(KINDS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    raise SpecError("kind", f"unknown compute target kind {kind!r}; known kinds: {', '.join(known)}")


class ComputeRegistry:
    """The compute targets attached to a workspace (``ws.compute_targets``)."""

    def __init__(self, workspace_path: str) -> None:
        self.root = os.path.join(workspace_path, "computes")

    def _file(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.json")

    def attach(self, name: str, target: ComputeTarget) -> ComputeTarget:
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError("name", f"invalid compute target name {name!r}: use letters, digits, '_', '-' or '.'")
        if name in BUILTIN_TARGETS:
            raise SpecError("name", f"{name!r} is built in; attach the target under another name")
        from torchyard.compute.base import ComputeTarget  # noqa: PLC0415

        if not isinstance(target, ComputeTarget):
            raise SpecError("target", f"expected a compute target such as RayCompute(...), got {type(target).__name__}")
        record = {"name": name, "kind": target.kind, "config": target.to_config(), "attached": time.time()}
        os.makedirs(self.root, exist_ok=True)
        path = self._file(name)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=2)
        os.replace(tmp, path)
        return self.get(name)

    def names(self) -> list[str]:
        try:
            return sorted(f[:-5] for f in os.listdir(self.root) if f.endswith(".json"))
        except FileNotFoundError:
            return []

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(_NAME.match(name)) and os.path.isfile(self._file(name))

    def record(self, name: str) -> dict[str, Any]:
        if name not in self:
            known = ", ".join([*BUILTIN_TARGETS, *self.names()])
            raise NotFoundError(
                f"no compute target {name!r} in this workspace (known: {known}); "
                "attach one with `torchyard compute add ray|slurm NAME ...`"
            )
        try:
            with open(self._file(name)) as fh:
                record: dict[str, Any] = json.load(fh)
        except (OSError, ValueError) as err:
            raise WorkspaceError(f"compute target {name!r}: {self._file(name)} is unreadable ({err}); attach it again") from None
        return record

    def get(self, name: str) -> ComputeTarget:
        record = self.record(name)
        cls = target_class(record["kind"])
        try:
            return cls(name=name, **record.get("config", {}))
        except TypeError as err:
            raise WorkspaceError(f"compute target {name!r}: stored settings do not fit {cls.__name__} ({err}); attach it again") from None

    def remove(self, name: str) -> None:
        self.record(name)
        os.unlink(self._file(name))

    def list(self) -> list[dict[str, Any]]:
        out = [{"name": n, "kind": "local", "config": {}} for n in BUILTIN_TARGETS]
        for name in self.names():
            try:
                out.append(self.record(name))
            except WorkspaceError as err:
                out.append({"name": name, "kind": "?", "config": {}, "error": str(err)})
        return out


def known_targets(workspace_path: str | None = None) -> list[str]:
    names = set(BUILTIN_TARGETS)
    if workspace_path:
        names.update(ComputeRegistry(workspace_path).names())
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def get_target(name: str, workspace_path: str | None = None) -> ComputeTarget:
    """The compute target called ``name``; SpecError listing the known ones otherwise."""
    if name in BUILTIN_TARGETS:
        return _load(KINDS[name])(name)
    if workspace_path and name in ComputeRegistry(workspace_path):
        return ComputeRegistry(workspace_path).get(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            target: ComputeTarget = ep.load()(name)
            return target
    raise SpecError(
        "compute_target",
        f"unknown compute target {name!r}; known targets: {', '.join(known_targets(workspace_path))} "
        "(attach one with `torchyard compute add ray|slurm NAME ...`)",
    )
