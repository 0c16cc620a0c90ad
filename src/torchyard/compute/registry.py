"""The one registry of compute targets: built-ins load lazily, third parties come from the
``torchyard.compute`` entry-point group. Unknown names list the known ones."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from torchyard.errors import SpecError

if TYPE_CHECKING:
    from torchyard.compute.base import ComputeTarget

BUILTIN = {"local": "torchyard.compute.local:LocalCompute"}
ENTRY_POINT_GROUP = "torchyard.compute"


def _load(ref: str) -> type[ComputeTarget]:
    module, _, attr = ref.partition(":")
    target: type[ComputeTarget] = getattr(importlib.import_module(module), attr)
    return target


def known_targets() -> list[str]:
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def get_target(name: str) -> ComputeTarget:
    """The compute target called ``name``; SpecError listing the known ones otherwise."""
    if name in BUILTIN:
        return _load(BUILTIN[name])(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            target: ComputeTarget = ep.load()(name)
            return target
    raise SpecError(
        "compute_target", f"unknown compute target {name!r}; known targets: {', '.join(known_targets())}"
    )
