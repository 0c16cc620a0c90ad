"""Lightning's ModelCheckpoint with ``fit(ckpt_path="last")`` and Hugging Face Trainer's
``resume_from_checkpoint`` pointed at TORCHYARD_CHECKPOINT_DIR, unchanged, with the real packages: a
rank SIGKILLed at the start of epoch 2 on attempt 0, retried (``max_retries=1``), resumes from the
framework's own checkpoint of epoch 1 and finishes both epochs. Each framework writes its own layout
there (``last.ckpt``, ``checkpoint-N/``), not ``step_N/``: ``get_checkpoints()`` does not list those."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import write_script

from torchyard import Experiment, PyTorch

LIGHTNING = """
import os, signal
import torch
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
attempt = int(os.environ["TORCHYARD_ATTEMPT"])

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, _i):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

class Watch(L.Callback):
    def on_train_start(self, trainer, module):
        print("attempt", attempt, "starts at epoch", trainer.current_epoch, flush=True)
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1 and attempt == 0:  # epoch 0 is saved: the machine goes away
            os.kill(os.getpid(), signal.SIGKILL)

torch.manual_seed(0)
data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False,
                    callbacks=[ModelCheckpoint(dirpath=os.environ["TORCHYARD_CHECKPOINT_DIR"], save_last=True),
                               Watch()])
trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=16), ckpt_path="last")
print("done at epoch", trainer.current_epoch, "global step", trainer.global_step, flush=True)
"""

HF = """
import os, signal
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint
attempt = int(os.environ["TORCHYARD_ATTEMPT"])
out = os.environ["TORCHYARD_CHECKPOINT_DIR"]

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def forward(self, x, labels=None):
        pred = self.layer(x)
        return {"loss": torch.nn.functional.mse_loss(pred, labels), "logits": pred}

class Data(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}

class Watch(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        print("attempt", attempt, "starts at step", state.global_step, flush=True)
    def on_epoch_begin(self, args, state, control, **kw):
        if state.epoch >= 1 and attempt == 0:  # epoch 1 is saved (checkpoint-4): the machine goes away
            os.kill(os.getpid(), signal.SIGKILL)

args = TrainingArguments(output_dir=out, num_train_epochs=2, per_device_train_batch_size=16, save_strategy="epoch",
                         report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no",
                         dataloader_num_workers=0)
trainer = Trainer(model=Tiny(), args=args, train_dataset=Data(), callbacks=[Watch()])
trainer.train(resume_from_checkpoint=get_last_checkpoint(out))
print("done at step", trainer.state.global_step, flush=True)
"""


def _run(ws, tmp_path: Path, name: str, body: str):
    write_script(tmp_path / name, "train.py", body)
    run = Experiment(ws, "ckfw").submit(PyTorch(str(tmp_path / name), entry_script="train.py", max_retries=1))
    details = run.wait_for_completion(timeout=180, raise_on_error=False)
    log = Path(run.workdir, "logs", "rank_0.txt").read_text()
    assert details["status"] == "Completed", (details.get("error"), log[-3000:])
    attempts = details["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1] and attempts[0]["cause"] == "infrastructure", attempts
    return run, log


def test_lightning_model_checkpoint_and_ckpt_path_last_resume_after_a_kill(ws, tmp_path):
    pytest.importorskip("lightning")
    run, log = _run(ws, tmp_path, "lightning", LIGHTNING)
    assert "attempt 1 starts at epoch 1" in log, log[-3000:]
    assert "done at epoch 2 global step 8" in log, log[-3000:]
    assert "attempt 0 starts at epoch 0" in Path(run.workdir, "logs", "attempt_0", "rank_0.txt").read_text()
    names = {p.name for p in Path(run.workdir, "checkpoints").iterdir()}
    assert "last.ckpt" in names and run.get_checkpoints() == []


def test_hugging_face_trainer_resume_from_checkpoint_after_a_kill(ws, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    run, log = _run(ws, tmp_path, "hf", HF)
    assert "attempt 1 starts at step 4" in log, log[-3000:]
    assert "done at step 8" in log, log[-3000:]
    assert "attempt 0 starts at step 0" in Path(run.workdir, "logs", "attempt_0", "rank_0.txt").read_text()
    names = {p.name for p in Path(run.workdir, "checkpoints").iterdir()}
    assert {"checkpoint-4", "checkpoint-8"} <= names and run.get_checkpoints() == []
