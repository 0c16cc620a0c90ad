"""The source distribution carries the examples the README and the docs run, and the license."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_sdist_ships_the_examples_and_the_license(tmp_path: Path) -> None:
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                           timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    name = built.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "LICENSE" in names
    assert "examples/digits/train.py" in names and "examples/digits/job.yml" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    with tarfile.open(tmp_path / name) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/LICENSE"))
        text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    assert "Apache License" in text and "Version 2.0" in text
