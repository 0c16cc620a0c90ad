"""Best-by-metric retention and registering a checkpoint as a model, with real ranks on local compute:
`run.checkpoint(step, keep_last=2, keep_best=("val_loss", "min"))` keeps the best and the last two on the
node and in the run's artifacts (the SDK and the CLI no longer list the others), and
`run.register_model(name, checkpoint=STEP)` / `torchyard checkpoints RUN --register NAME --step N`
register a committed checkpoint of a running or a completed run, with lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import wait_until, write_script

from torchyard import Experiment, PyTorch
from torchyard.errors import NotFoundError

TRAIN = """
import os, sys, time
from pathlib import Path
from torchyard import Run

run = Run.get_context()
rank = int(os.environ["RANK"])
go = Path(sys.argv[sys.argv.index("--go") + 1])
val_loss = [0.9, 0.3, 0.5, 0.6, 0.7]
for epoch in range(5):
    # rank 1 reports other values: rank 0's decide, whichever rank commits
    mine = val_loss[epoch] if rank == 0 else 1.0 - val_loss[epoch]
    with run.checkpoint(step=epoch, keep_last=2, keep_best=("val_loss", "min"),
                        metrics={"val_loss": mine, "epoch": epoch}) as folder:
        (folder / f"part_{rank}.txt").write_text(str(epoch))
    if epoch == 2 and rank == 0:  # the test registers a checkpoint of the running run meanwhile
        Path("waiting").write_text("1")
        while not go.exists():
            time.sleep(0.05)
"""


def cli(ws, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torchyard.cli.main", *argv], capture_output=True, text=True,
                          env={**os.environ, "TORCHYARD_WORKSPACE": ws.path}, timeout=60, check=False)


def steps(run) -> list[int]:
    return [c["step"] for c in run.get_checkpoints()]


def test_keep_best_and_register_a_checkpoint_while_running_and_after(ws, tmp_path):
    folder = tmp_path / "src"
    write_script(folder, "train.py", TRAIN)
    go = tmp_path / "go"
    run = Experiment(ws, "ckreg").submit(
        PyTorch(str(folder), entry_script="train.py", script_params={"--go": str(go)}, process_count_per_node=2,
                distributed_backend="pytorch"))
    try:
        wait_until(lambda: os.path.exists(os.path.join(run.workdir, "waiting")), timeout=90)
        # steps 0..2 committed: the best (1, val_loss 0.3) and the last two (1, 2); 0 is gone everywhere
        assert steps(run) == [1, 2]
        wait_until(lambda: {c["where"] for c in run.get_checkpoints()} == {"artifacts"}, timeout=20)
        wait_until(lambda: not any(n.startswith("checkpoints/step_0/") for n in run.get_file_names()), timeout=20)
        assert run.get_status() == "Running"
        model = run.register_model("ck-model", checkpoint=1)
        assert model.version == 1 and model.run_id == run.id
        assert model.properties["azureml.runId"] == run.id
        assert model.properties["torchyard.checkpoint_step"] == "1"
        assert json.loads(model.properties["torchyard.checkpoint_metrics"]) == {"val_loss": 0.3, "epoch": 1}
        got = model.download(tmp_path / "dl")
        files = sorted(os.listdir(got))  # as in the artifacts: the ranks' markers too
        assert [n for n in files if not n.startswith(".")] == ["part_0.txt", "part_1.txt", "torchyard_checkpoint.json"]
        assert Path(got, "part_1.txt").read_text() == "1"
    finally:
        go.write_text("go")
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Completed", details.get("error")

    found = run.get_checkpoints()
    assert [c["step"] for c in found] == [1, 3, 4]  # best, then the last two
    assert [c["metrics"]["val_loss"] for c in found] == [0.3, 0.6, 0.7]  # rank 0's values
    assert all(c["where"] == "artifacts" for c in found)
    names = run.get_file_names()
    assert not any(n.startswith(("checkpoints/step_0/", "checkpoints/step_2/")) for n in names)
    assert "checkpoints/step_1/part_0.txt" in names
    assert sorted(os.listdir(os.path.join(run.workdir, "checkpoints"))) == [
        ".node_0", "step_1", "step_3", "step_4"]

    with pytest.raises(NotFoundError, match=r"no committed checkpoint step_2; its steps are 1, 3, 4"):
        run.register_model("ck-model", checkpoint=2)

    shown = cli(ws, "checkpoints", run.id)
    assert shown.returncode == 0, shown.stderr
    assert "checkpoints/step_1" in shown.stdout and "checkpoints/step_2" not in shown.stdout
    assert "val_loss=0.3" in shown.stdout
    reg = cli(ws, "checkpoints", run.id, "--register", "ck-model", "--step", "4", "--tag", "stage=dev")
    assert reg.returncode == 0, reg.stderr
    assert reg.stdout.startswith(f"registered ck-model:2 from {run.id} checkpoint step_4"), reg.stdout
    as_json = json.loads(cli(ws, "checkpoints", run.id, "--register", "ck-model", "--step", "3", "-o", "json").stdout)
    assert as_json["version"] == 3 and as_json["properties"]["torchyard.checkpoint_step"] == "3"
    shown = json.loads(cli(ws, "model", "show", "ck-model:2", "-o", "json").stdout)
    assert shown["tags"] == {"stage": "dev"} and shown["run_id"] == run.id
    assert json.loads(shown["properties"]["torchyard.checkpoint_metrics"])["val_loss"] == 0.7

    for argv, expect in [(["--register", "ck-model", "--step", "0"], "no committed checkpoint step_0; its steps are 1, 3, 4"),
                         (["--register", "ck-model"], "give --register NAME and --step N together"),
                         (["--step", "3"], "give --register NAME and --step N together")]:
        bad = cli(ws, "checkpoints", run.id, *argv)
        assert bad.returncode != 0 and expect in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_register_a_checkpoint_of_a_run_that_has_none(ws, tmp_path):
    folder = tmp_path / "none"
    write_script(folder, "noop.py", "print('no checkpoints')\n")
    run = Experiment(ws, "ckreg").submit(PyTorch(str(folder), entry_script="noop.py"))
    run.wait_for_completion(timeout=120)
    start = time.time()
    with pytest.raises(NotFoundError, match="it has no committed checkpoint"):
        run.register_model("x", checkpoint=0)
    assert time.time() - start < 5
