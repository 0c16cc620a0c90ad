"""The checkpoint contract on local compute, with real ranks: every rank gets TORCHYARD_CHECKPOINT_DIR,
TORCHYARD_ATTEMPT and (fresh start) no TORCHYARD_RESUME_FROM; `with run.checkpoint(step)` commits only
when every rank left the block, keeps the last 3, and the run's checkpoints reach its artifacts, the SDK
(`get_checkpoints`, `latest_checkpoint`) and the CLI (`torchyard checkpoints RUN`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import run_processes, wait_until, write_script

from torchyard import Experiment, PyTorch

TRAIN = """
import os, sys, time
from pathlib import Path
from torchyard import Run

run = Run.get_context()
rank = int(os.environ["RANK"])
crash_at = int(sys.argv[sys.argv.index("--crash-at") + 1])
assert os.environ["TORCHYARD_ATTEMPT"] == "0"
assert "TORCHYARD_RESUME_FROM" not in os.environ
assert os.environ["TORCHYARD_CHECKPOINT_DIR"] == os.path.join(os.getcwd(), "checkpoints")
assert run.latest_checkpoint() is None
for epoch in range(5):
    with run.checkpoint(step=epoch, metrics={"loss": 1.0 / (epoch + 1)}) as folder:
        (folder / f"part_{rank}.txt").write_text(str(epoch))
        if epoch == crash_at and rank == 1:
            os._exit(3)  # killed mid-save: the previous checkpoint stays the latest
    if rank == 0:  # what the script sees next: the newest committed one (rank 1 may still be saving)
        latest = run.latest_checkpoint()
        print("epoch", epoch, "latest", latest.name if latest else None, flush=True)
    time.sleep(0.2)
"""


def submit(ws, tmp_path, crash_at: int):
    folder = tmp_path / f"ck{crash_at}"
    write_script(folder, "train.py", TRAIN)
    return Experiment(ws, "ck").submit(
        PyTorch(str(folder), entry_script="train.py", script_params={"--crash-at": crash_at}, process_count_per_node=2,
                distributed_backend="pytorch"))


def cli(ws, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torchyard.cli.main", *argv], capture_output=True, text=True,
                          env={**os.environ, "TORCHYARD_WORKSPACE": ws.path}, timeout=60, check=False)


def test_two_ranks_checkpoint_every_epoch_keep_the_last_three(ws, tmp_path):
    run = submit(ws, tmp_path, crash_at=-1)
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Completed", details.get("error")
    found = run.get_checkpoints()
    assert [c["step"] for c in found] == [2, 3, 4]
    assert all(c["where"] == "artifacts" and c["artifact"] == f"checkpoints/step_{c['step']}" for c in found)
    assert found[-1]["metrics"] == {"loss": 0.2} and found[-1]["size"] > 0 and found[-1]["time"]
    latest = run.latest_checkpoint()
    assert latest.name == "step_4"
    assert {p.name: p.read_text() for p in latest.glob("part_*.txt")} == {"part_0.txt": "4", "part_1.txt": "4"}
    names = run.get_file_names()
    assert "checkpoints/step_4/part_1.txt" in names and not any(n.startswith("checkpoints/step_1/") for n in names)
    shown = cli(ws, "checkpoints", run.id)
    assert shown.returncode == 0, shown.stderr
    for step in ("2", "3", "4"):
        assert f"\n {step} " in "\n" + shown.stdout or f"\n{step} " in "\n" + shown.stdout, shown.stdout
    assert "loss=0.2" in shown.stdout and "artifacts" in shown.stdout
    as_json = json.loads(cli(ws, "checkpoints", run.id, "--json").stdout)
    assert [c["step"] for c in as_json] == [2, 3, 4]


def test_a_rank_crashing_mid_save_leaves_the_previous_checkpoint_latest(ws, tmp_path):
    run = submit(ws, tmp_path, crash_at=2)
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Failed"
    assert details["error"]["rank"] == 1 and details["error"]["cause"] == "user"
    assert [c["step"] for c in run.get_checkpoints()] == [0, 1]
    assert run.latest_checkpoint().name == "step_1"
    folder = os.path.join(run.workdir, "checkpoints")
    assert not os.path.exists(os.path.join(folder, "step_2"))
    assert os.path.isdir(os.path.join(folder, "step_2.tmp.0"))  # the unfinished one, never committed
    shown = cli(ws, "checkpoints", run.id)
    assert shown.returncode == 0 and "step_2" not in shown.stdout and "checkpoints/step_1" in shown.stdout
    wait_until(lambda: not run_processes(run.workdir), timeout=10)


DCP = """
import os
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torchyard import Run

dist.init_process_group("gloo")
run = Run.get_context()
rank = dist.get_rank()
for step in range(2):
    state = {f"w{rank}": torch.full((4,), float(rank * 10 + step))}  # each rank's own tensor: its own shard
    with run.checkpoint(step=step) as folder:  # every rank writes its shard into the same folder
        dcp.save(state, checkpoint_id=folder)
dist.barrier()
latest = run.latest_checkpoint()
got = {f"w{rank}": torch.zeros(4)}
dcp.load(got, checkpoint_id=latest)
assert latest.name == "step_1" and got[f"w{rank}"].tolist() == [float(rank * 10 + 1)] * 4, (latest, got)
print("loaded", rank, got, flush=True)
"""


def test_a_sharded_torch_distributed_checkpoint_save_inside_the_block(ws, tmp_path):
    """torch.distributed.checkpoint: every rank writes its own files (and rank 0 the metadata) into
    the block's folder; the commit sees every rank's part and DCP reads the committed folder back."""
    import pytest

    pytest.importorskip("torch")
    folder = tmp_path / "dcp"
    write_script(folder, "dcp_train.py", DCP)
    run = Experiment(ws, "ck").submit(
        PyTorch(str(folder), entry_script="dcp_train.py", process_count_per_node=2, distributed_backend="pytorch"))
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Completed", details.get("error")
    assert [c["step"] for c in run.get_checkpoints()] == [0, 1]
    names = {p.name for p in run.latest_checkpoint().iterdir()}
    assert ".metadata" in names and len([n for n in names if n.endswith(".distcp")]) == 2, names
