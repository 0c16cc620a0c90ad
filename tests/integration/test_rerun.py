"""Clone and re-run: the same snapshot, environment and inputs, with changed settings and arguments,
recorded as lineage (SDK and CLI), even after the source folder changed or is gone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import write_script

from torchyard import Experiment, PyTorch, Workspace
from torchyard.errors import SpecError

SCRIPT = """
import argparse, os
from torchyard import Run
p = argparse.ArgumentParser(); p.add_argument("--lr", type=float); p.add_argument("--epochs", type=int, default=1)
a, _unknown = p.parse_known_args()
run = Run.get_context()
run.log("lr", a.lr); run.log("epochs", a.epochs); run.log("world", int(os.environ["WORLD_SIZE"]))
print("VERSION", open("version.txt").read().strip(), flush=True)
"""


def test_a_rerun_uses_the_same_code_with_changes_recorded(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_script(src, "train.py", SCRIPT)
    (src / "version.txt").write_text("first")
    est = PyTorch(str(src), entry_script="train.py", script_params={"--lr": 0.01, "--epochs": 2})
    first = Experiment(ws, "again").submit(est, tags={"owner": "ana"})
    assert first.wait_for_completion(timeout=60, raise_on_error=False)["status"] == "Completed"
    (src / "version.txt").write_text("edited after the run")  # the rerun must not see this
    second = first.rerun({"lr": 0.1, "process_count_per_node": 2, "distributed_backend": "pytorch",
                          "distributed_backend_is_not_a_setting": "x"})
    details = second.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    assert second.get_metrics() == {"lr": 0.1, "epochs": 2.0, "world": 2.0}
    assert "VERSION first" in Path(second.workdir, "logs", "rank_0.txt").read_text()
    assert second.get_tags() == {"owner": "ana", "rerun_of": first.id}
    props = second.get_properties()
    assert props["torchyard.rerun_of"] == first.id
    assert props["torchyard.snapshot"] == first.get_properties()["torchyard.snapshot"]  # the same snapshot
    assert json.loads(props["torchyard.rerun_changes"])["lr"] == "0.1"
    assert second.get_details()["runDefinition"]["arguments"][-2:] == ["--distributed_backend_is_not_a_setting", "x"]
    with pytest.raises(SpecError, match="node_count"):
        first.rerun({"node_count": "two"})

    shutil.rmtree(src)  # the CLI, with the source folder gone
    out = subprocess.run([sys.executable, "-m", "torchyard", "--workspace", str(ws.path), "rerun", first.id,
                          "--set", "epochs=5", "--wait"], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "VERSION first" in out.stdout and f"re-runs {first.id}" in out.stdout
    third = Experiment(ws, "again").get_runs()[0]
    assert third.get_metrics()["epochs"] == 5.0 and third.get_metrics()["lr"] == 0.01
