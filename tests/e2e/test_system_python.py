"""The documented flows (docs/guides/environments.md) from the system interpreter too (the suite itself runs from a venv): a job with
``pip_packages`` gets a layered environment that still sees torch and torchyard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEM = os.environ.get("TORCHYARD_SYSTEM_PYTHON", "")

SCRIPT = """
import json, os, sys
import tomli_w, torch
import torchyard
from torchyard import Run
Run.get_context().log("ok", 1)
os.makedirs("outputs", exist_ok=True)
with open("outputs/where.json", "w") as fh:
    json.dump({"python": sys.executable, "torch": torch.__file__, "torchyard": torchyard.__file__}, fh)
"""


def _has_torchyard(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import torchyard, torch"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not SYSTEM or not _has_torchyard(SYSTEM),
                    reason="TORCHYARD_SYSTEM_PYTHON (set by scripts/test.sh) with torchyard and torch installed")
def test_pip_packages_job_from_the_system_interpreter(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "use.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "TORCHYARD_WORKSPACE")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    env["TORCHYARD_AGENT"] = "0"
    cli = [SYSTEM, "-m", "torchyard", "--workspace", str(tmp_path / ".torchyard")]
    job = tmp_path / "job.yml"
    job.write_text(f"code: {src}\ncommand: python use.py\nenvironment: {{pip: [tomli-w==1.2.0]}}\n")
    done = subprocess.run([*cli, "submit", str(job), "--stream"], env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads(subprocess.run([*cli, "runs", "list", "--json"], env=env, capture_output=True, text=True,
                                     check=True).stdout)
    assert runs[0]["status"] == "Completed"
    out = tmp_path / "where.json"
    subprocess.run([*cli, "download", runs[0]["run_id"], "outputs/where.json", "--to", str(tmp_path)], env=env, check=True)
    where = json.loads(out.read_text())
    assert "/envs/" in where["python"]  # the layered environment, not the system interpreter itself
    assert sys.prefix not in where["torch"] or sys.prefix == sys.base_prefix
