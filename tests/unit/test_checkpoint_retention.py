"""Best-by-metric retention (``run.checkpoint(step, keep_best=(metric, "min"|"max"))``) in one process:
ranks are simulated by their RANK variable, as in test_checkpoint_contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.conftest import save_part as save

from torchyard.errors import SpecError
from torchyard.tracking.checkpoint import CheckpointMixin, best_step, committed, list_checkpoints, retained


def steps(folder) -> list[int]:
    return [s for s, _ in committed(folder)]


def test_the_best_is_kept_beside_the_last_ones(ckdir, monkeypatch):
    losses = [0.9, 0.3, 0.5, 0.2, 0.6, 0.7, 0.8]
    seen = []
    for step, loss in enumerate(losses):
        for rank in (0, 1):
            save(monkeypatch, rank, step, keep_last=2, keep_best=("val_loss", "min"), metrics={"val_loss": loss})
        seen.append(steps(ckdir))
    assert seen == [[0], [0, 1], [1, 2], [2, 3], [3, 4], [3, 4, 5], [3, 5, 6]]
    assert [c["metrics"]["val_loss"] for c in list_checkpoints(ckdir)] == [0.2, 0.7, 0.8]
    manifest = json.loads((ckdir / "step_6" / "torchyard_checkpoint.json").read_text())
    assert manifest["keep_best"] == ["val_loss", "min"] and manifest["keep_last"] == 2


def test_max_mode_ties_and_checkpoints_without_the_metric(ckdir, monkeypatch):
    plan = [{"acc": 0.5}, {"acc": 0.8}, {}, {"acc": 0.8}, {"loss": 1.0}, {"acc": 0.1}]
    for step, metrics in enumerate(plan):
        for rank in (0, 1):
            save(monkeypatch, rank, step, keep_last=1, keep_best=["acc", "max"], metrics=metrics)
    assert steps(ckdir) == [1, 5]  # the tie between 1 and 3 goes to the earliest; 2 and 4 never rank


def test_rank_0_decides_whichever_rank_commits(ckdir, monkeypatch):
    """Rank 1 leaves last (it commits) with other metrics and no keep_best: rank 0's are recorded and
    rank 0's retention applies."""
    rank0 = [0.5, 0.1, 0.4, 0.6]
    for step, loss in enumerate(rank0):
        save(monkeypatch, 0, step, keep_last=1, keep_best=("val_loss", "min"), metrics={"val_loss": loss})
        save(monkeypatch, 1, step, metrics={"val_loss": 1.0 - loss})
    assert steps(ckdir) == [1, 3]
    assert [c["metrics"] for c in list_checkpoints(ckdir)] == [{"val_loss": 0.1}, {"val_loss": 0.6}]
    # rank 0 gives no metrics: the lowest rank that gave any is recorded
    save(monkeypatch, 0, 4, keep_last=1, keep_best=("val_loss", "min"))
    save(monkeypatch, 1, 4, metrics={"val_loss": 0.05})
    assert steps(ckdir) == [4]


def test_keep_last_zero_keeps_all_and_a_tensor_metric_is_a_number(ckdir, monkeypatch):
    torch = pytest.importorskip("torch")
    for step in range(4):
        for rank in (0, 1):
            save(monkeypatch, rank, step, keep_last=0, keep_best=("loss", "min"),
                 metrics={"loss": torch.tensor(1.0 / (step + 1))})
    assert steps(ckdir) == [0, 1, 2, 3]
    assert list_checkpoints(ckdir)[-1]["metrics"] == {"loss": 0.25}


@pytest.mark.parametrize("bad", ["val_loss", ("val_loss", "lowest"), ("", "min"), ("a", "min", "x"), (1, "max")])
def test_a_wrong_keep_best_is_a_clear_error_before_the_block(ckdir, monkeypatch, bad):
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SpecError, match=r"keep_best.*\('val_loss', 'min'\)"), CheckpointMixin().checkpoint(1, keep_best=bad):
        pass
    assert not list(ckdir.iterdir())


def test_metrics_that_are_not_json_are_a_clear_error(ckdir, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SpecError, match="metrics must be numbers or strings"), \
            CheckpointMixin().checkpoint(1, metrics={"x": object()}):
        pass


def test_a_checkpoint_without_the_metric_says_so(ckdir, monkeypatch, capfd):
    save(monkeypatch, 0, 0, keep_best=("val_loss", "min"), metrics={"val_los": 0.3})
    save(monkeypatch, 1, 0, keep_best=("val_loss", "min"), metrics={"val_los": 0.3})
    assert "no numeric metric 'val_loss' (its metrics: val_los)" in capfd.readouterr().err


def test_the_rule_alone():
    found = [(1, {"metrics": {"m": 3}}), (2, {"metrics": {"m": float("nan")}}), (3, {"metrics": {"m": True}}),
             (4, {"metrics": {"m": 1}}), (5, {"metrics": {}})]
    assert best_step(found, ("m", "min")) == 4 and best_step(found, ("m", "max")) == 1
    assert best_step(found, ("other", "min")) is None
    assert retained(found, 2, ("m", "max")) == {1, 4, 5} and retained(found, 0, None) == {1, 2, 3, 4, 5}


RANK_LOOP = """
import os, sys
from torchyard.tracking.checkpoint import CheckpointMixin
run = CheckpointMixin()
losses = [float(x) for x in sys.argv[1].split(",")]
for step, loss in enumerate(losses):
    with run.checkpoint(step, keep_last=2, keep_best=("val_loss", "min"), metrics={"val_loss": loss}) as folder:
        (folder / f"part_{os.environ['RANK']}.txt").write_text(str(step))
"""


def test_ranks_racing_through_many_checkpoints_keep_the_best(ckdir, monkeypatch):
    """4 processes, no barrier: whichever rank commits a step, and whatever order retention runs in,
    what is left is the best and the last two, each whole."""
    world = 4
    losses = [round(1.0 / (1 + (i * 7) % 13), 4) for i in range(30)]  # the minimum at steps 11 and 24: 11 is kept
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(world))
    procs = [subprocess.Popen([sys.executable, "-c", RANK_LOOP, ",".join(map(str, losses))],
                              env={**os.environ, "RANK": str(r)}) for r in range(world)]
    assert [p.wait(timeout=60) for p in procs] == [0] * world
    best = min(range(len(losses)), key=lambda i: (losses[i], i))
    assert steps(ckdir) == sorted({best, len(losses) - 2, len(losses) - 1})
    for _step, folder in committed(ckdir):
        assert sorted(p.name for p in folder.glob("part_*")) == [f"part_{r}.txt" for r in range(world)]
    assert sorted(p.name for p in ckdir.iterdir()) == [f"step_{s}" for s in steps(ckdir)]


class _Exp:
    def __init__(self, ws):
        self.workspace, self.name = ws, "exp"


class _NodeRun:
    """What register_checkpoint needs of a run whose checkpoint is committed on the node only."""

    def __init__(self, ws, folder):
        self.id, self.experiment, self.folder = "run_1", _Exp(ws), folder

    def get_checkpoints(self):
        return list_checkpoints(self.folder, where="node") if self.folder.exists() else []


def test_register_a_checkpoint_not_copied_into_the_artifacts_yet(ckdir, monkeypatch, ws, tmp_path):
    from torchyard.errors import NotFoundError
    from torchyard.models.model import register_checkpoint

    for rank in (0, 1):
        save(monkeypatch, rank, 5, metrics={"val_loss": 0.25})
    model = register_checkpoint(_NodeRun(ws, ckdir), "from-node", 5, tags={"k": "v"})
    assert model.version == 1 and model.run_id == "run_1" and model.tags == {"k": "v"}
    assert model.properties["azureml.runId"] == "run_1" and model.properties["torchyard.checkpoint_step"] == "5"
    assert json.loads(model.properties["torchyard.checkpoint_metrics"]) == {"val_loss": 0.25}
    got = model.download(tmp_path / "dl")
    assert sorted(n for n in os.listdir(got) if not n.startswith(".")) == [
        "part_0.txt", "part_1.txt", "torchyard_checkpoint.json"]
    with pytest.raises(NotFoundError, match="no committed checkpoint step_6; its steps are 5"):
        register_checkpoint(_NodeRun(ws, ckdir), "from-node", 6)
    with pytest.raises(SpecError, match="expected a checkpoint's step"):
        register_checkpoint(_NodeRun(ws, ckdir), "from-node", "five")


def test_the_listing_hides_what_retention_deleted_before_the_supervisor_drops_its_copy(ckdir, monkeypatch, tmp_path):
    import shutil

    from torchyard.runtime.checkpoints import run_checkpoints

    run_dir = ckdir.parent
    artifacts = tmp_path / "artifacts"

    class _Ws:
        def artifacts_dir(self, _run_id):
            return str(artifacts)

    for step in (1, 2):
        for rank in (0, 1):
            save(monkeypatch, rank, step, keep_last=2)
        shutil.copytree(ckdir / f"step_{step}", artifacts / "checkpoints" / f"step_{step}")  # the supervisor's copy
    for rank in (0, 1):
        save(monkeypatch, rank, 3, keep_last=2)  # deletes step_1 on the node; its copy is still there
    listed = run_checkpoints(_Ws(), "r", str(run_dir))
    assert [(c["step"], c["where"]) for c in listed] == [(2, "artifacts"), (3, "node")]
    shutil.rmtree(ckdir)  # a run folder without checkpoints: the artifacts are what there is
    assert [c["step"] for c in run_checkpoints(_Ws(), "r", str(run_dir))] == [1, 2]
