"""Lightning, Accelerate and the Hugging Face Trainer under torchyard, 1×2 and 2×1 on local compute.

torchyard starts every rank; each framework only joins them (none spawns processes of its own). Every
rank starts from different weights (seeded by rank) and logs a sha256 of its final parameters: equal
checksums mean DDP kept the ranks in sync. Lightning's MLFlowLogger and the Trainer's MLflow callback
log into the torchyard run. Heavy imports: select with ``-m frameworks`` (or deselect with
``-m "not frameworks"``).
"""

from __future__ import annotations

import os

import pytest
from tests.conftest import EXAMPLES

from torchyard import Experiment, PyTorch

pytestmark = pytest.mark.frameworks
FRAMEWORKS = EXAMPLES / "frameworks"
SHAPES = [(1, 2), (2, 1)]  # (node_count, process_count_per_node)


def _run_both(ws, script: str) -> list:
    # one after the other: two DDP jobs at once on this 2-core machine sometimes lose a rank to a
    # SIGABRT inside gloo ("terminate called without an active exception"), with this session's code
    # and with the code before it alike (3 of 14 concurrent pairs); a known issue, noted for a fix
    exp = Experiment(ws, "frameworks")
    runs = []
    for nodes, ppn in SHAPES:
        run = exp.submit(PyTorch(str(FRAMEWORKS), entry_script=script, node_count=nodes, process_count_per_node=ppn,
                                 distributed_backend="pytorch", environment_variables={"HF_HUB_OFFLINE": "1"}))
        details = run.wait_for_completion(timeout=240, raise_on_error=False)
        assert details["status"] == "Completed", (run.id, details.get("error"))
        runs.append(run)
    return runs


def _in_sync(run) -> dict:
    every = run.get_metrics(rank="all")
    assert sorted(every) == [0, 1]
    assert every[0]["init_checksum"] != every[1]["init_checksum"]  # they did start apart
    assert every[0]["param_checksum"] == every[1]["param_checksum"]  # and DDP brought them together
    assert every[0]["param_checksum"] != every[0]["init_checksum"]  # training moved the weights
    assert {m["world_size"] for m in every.values()} == {2}
    return every


def test_lightning_ddp_and_its_mlflow_logger(ws):
    pytest.importorskip("lightning")
    pytest.importorskip("mlflow")
    for run in _run_both(ws, "lightning_ddp.py"):
        _in_sync(run)
        losses = run.get_metrics()["train_loss"]  # MLFlowLogger, rank 0
        assert isinstance(losses, list) and len(losses) == 4
        steps = ws.store.get_series(run.id, rank=0, name="train_loss")[(0, "train_loss")][1]
        assert steps == [0, 1, 2, 3]
        assert "lightning_logs" not in os.listdir(run.workdir)


def test_accelerate_ddp(ws):
    pytest.importorskip("accelerate")
    for run in _run_both(ws, "accelerate_ddp.py"):
        every = _in_sync(run)
        assert every[0]["distributed_type"] == "MULTI_CPU"
        assert len(every[0]["loss"]) == 4


def test_hf_trainer_ddp_and_its_mlflow_callback(ws):
    pytest.importorskip("transformers")
    pytest.importorskip("mlflow")
    for run in _run_both(ws, "hf_trainer.py"):
        _in_sync(run)
        metrics = run.get_metrics()
        assert len(metrics["loss"]) == 4  # the Trainer's MLflow callback, rank 0, logging_steps=1
        assert "learning_rate" in metrics
        props = run.get_properties()
        assert props["max_steps"] == "4" and props["hidden_size"] == "16"  # TrainingArguments + model config
        assert "loss" not in run.get_metrics(rank=1)  # only the main process reports
