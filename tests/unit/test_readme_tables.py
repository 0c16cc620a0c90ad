"""The README's option tables are the kinds' declared options (compute.base.option_table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchyard.compute.base import option_table
from torchyard.compute.ray import RayCompute
from torchyard.compute.slurm import SlurmCompute

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("cls", [RayCompute, SlurmCompute])
def test_option_table_is_in_the_readme(cls) -> None:
    assert option_table(cls) in README, f"regenerate the README table with option_table({cls.__name__})"
