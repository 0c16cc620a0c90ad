"""Compute targets by name.

A name resolves, in order, to the built-in ``local``, a target attached to the workspace
(``<workspace>/computes/<name>.json``: its kind and its settings), or a third-party target from the
``torchyard.compute`` entry-point group. Kinds (``ray``, ``slurm``, plus entry points) load lazily:
the core never imports ray. Unknown names list the known ones.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from torchyard.compute.base import BUILTIN_TARGETS, ComputeTarget, attached_records
from torchyard.errors import NotFoundError, SpecError, WorkspaceError

#: the default target of every run is resolved without reading package metadata (about 90 ms of a
#: run's start); every other kind, built-in ones included, comes from the entry-point group
LOCAL = "torchyard.compute.local:LocalCompute"
ENTRY_POINT_GROUP = "torchyard.compute"


def _load(ref: str) -> type[ComputeTarget]:
    module, _, attr = ref.partition(":")
    target: type[ComputeTarget] = getattr(importlib.import_module(module), attr)
    return target


def kinds() -> list[str]:
    """Every installed compute-target kind (the ``torchyard.compute`` entry points)."""
    return sorted({"local"} | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def target_class(kind: str) -> type[ComputeTarget]:
    """The class of a compute-target kind; SpecError listing the known kinds otherwise."""
    if kind == "local":
        return _load(LOCAL)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == kind:
            cls: type[ComputeTarget] = ep.load()
            return cls
    raise SpecError("kind", f"unknown compute target kind {kind!r}; installed kinds: {', '.join(kinds())} "
                            "(a kind comes from a package's `torchyard.compute` entry point)")


class ComputeRegistry:
    """The compute targets attached to a workspace (``ws.compute_targets``)."""

    def __init__(self, workspace_path: str) -> None:
        self.workspace_path = workspace_path
        self.records = attached_records(workspace_path)
        self.root = self.records.root

    def attach(self, name: str, target: ComputeTarget) -> ComputeTarget:
        return ComputeTarget.attach(self.workspace_path, name, target)

    def names(self) -> list[str]:
        return self.records.names()

    def __contains__(self, name: object) -> bool:
        return self.records.exists(name)

    def record(self, name: str) -> dict[str, Any]:
        if name not in self:
            known = ", ".join([*BUILTIN_TARGETS, *self.names()])
            raise NotFoundError(
                f"no compute target {name!r} in this workspace (known: {known}); "
                "attach one with `torchyard compute add KIND NAME ...`"
            )
        return self.records.get(name)

    def get(self, name: str) -> ComputeTarget:
        record = self.record(name)
        cls = target_class(record["kind"])
        try:
            return cls(name=name, **record.get("config", {}))
        except TypeError as err:
            raise WorkspaceError(f"compute target {name!r}: stored settings do not fit {cls.__name__} ({err}); attach it again") from None

    def remove(self, name: str) -> None:
        self.record(name)
        self.records.remove(name)

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
        return target_class(name)(name)
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
