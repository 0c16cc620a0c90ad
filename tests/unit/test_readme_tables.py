"""The option tables the guides show are the kinds' declared options (compute.base.option_table).

The tables moved from the README into the site: each guide holds ``<!-- torchyard:options KIND -->``,
which the build (docs/hooks/reference.py) replaces with the kind's table, so they cannot drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from torchyard.compute.base import option_table
from torchyard.compute.kubernetes import KubernetesCompute
from torchyard.compute.ray import RayCompute
from torchyard.compute.slurm import SlurmCompute

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _expand(markdown: str) -> str:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    text: str = hook.expand_markers(markdown)
    return text


@pytest.mark.parametrize(("cls", "guide"), [(RayCompute, "ray"), (SlurmCompute, "slurm"),
                                            (KubernetesCompute, "kubernetes")])
def test_option_table_is_in_the_guide(cls, guide) -> None:
    page = _expand((DOCS / "guides" / f"{guide}.md").read_text())
    assert option_table(cls) in page, f"docs/guides/{guide}.md must hold <!-- torchyard:options {guide} -->"
