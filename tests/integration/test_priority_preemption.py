"""Priority preemption on local compute with real supervisors: a preemptible run holds the target's
only GPU; a higher-priority run arrives and cannot start; the preemptible one gets its grace, commits
a checkpoint, yields the GPU and waits Queued; the high-priority run runs; then the preempted one
resumes from its checkpoint and ends with the same result as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import wait_until, write_script

from torchyard import Experiment, ScriptRunConfig, Workspace
from torchyard.compute.base import ComputeTarget
from torchyard.compute.local import LocalCompute

TRAIN = """
import json, os, signal, sys, time
from torchyard import Run
run = Run.get_context()
attempt = int(os.environ["TORCHYARD_ATTEMPT"])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
latest = run.latest_checkpoint()
state = json.load(open(latest / "state.json")) if latest else {"epoch": -1, "total": 0}
print("attempt", attempt, "gpu", os.environ.get("CUDA_VISIBLE_DEVICES"), "from", state["epoch"] + 1, flush=True)
for epoch in range(state["epoch"] + 1, 10):
    state = {"epoch": epoch, "total": state["total"] + epoch}
    run.log("total", state["total"], step=epoch)
    if epoch == 2 and attempt == 0:
        open(os.path.join("outputs", "ready"), "w").close()
    time.sleep(0.3)
    if stop:
        with run.checkpoint(step=epoch) as folder:
            json.dump(state, open(folder / "state.json", "w"))
        sys.exit(0)
print("final", state["total"], time.time(), flush=True)
"""
URGENT = """
import os, time
print("urgent", os.environ.get("CUDA_VISIBLE_DEVICES"), time.time(), flush=True)
time.sleep(0.5)
print("urgent done", time.time(), flush=True)
"""


def _stamp(run, word: str) -> float:
    text = Path(run.workdir, "logs", "rank_0.txt").read_text()
    return float(next(line for line in text.splitlines() if line.startswith(word)).split()[-1])


def test_a_higher_priority_run_preempts_a_preemptible_one_which_resumes(ws: Workspace, tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ComputeTarget.attach(ws, "box", LocalCompute(gpus=1))
    write_script(tmp_path / "src", "train.py", TRAIN)
    write_script(tmp_path / "src", "urgent.py", URGENT)
    exp = Experiment(ws, "prio")
    low = exp.submit(ScriptRunConfig(str(tmp_path / "src"), script="train.py", compute_target="box", use_gpu=True,
                                     preemptible=True, preempt_grace_seconds=30))
    wait_until(lambda: Path(low.workdir, "outputs", "ready").exists(), timeout=60)
    high = exp.submit(ScriptRunConfig(str(tmp_path / "src"), script="urgent.py", compute_target="box",
                                      use_gpu=True, priority=5))
    assert high.wait_for_completion(timeout=90)["status"] == "Completed"
    details = low.wait_for_completion(timeout=90, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    first = details["attempts"][0]
    assert first["cause"] == "preempted" and high.id in first["message"]
    assert Path(details["attempts"][1]["resumed_from"]).name.startswith("step_")
    # the urgent run ran between the two attempts, on the GPU the preemptible one gave up
    assert first["ended"] <= _stamp(high, "urgent ") and _stamp(high, "urgent done") <= _stamp(low, "final")
    assert "urgent 0 " in Path(high.workdir, "logs", "rank_0.txt").read_text()
    assert "final 45 " in Path(low.workdir, "logs", "rank_0.txt").read_text()
    assert low.get_metrics()["total"] == [float(sum(range(e + 1))) for e in range(10)]
    history = [h["status"] for h in details["statusHistory"]]
    assert "Retrying" in history and history[-1] == "Completed"


def test_a_run_that_is_not_preemptible_is_never_preempted(ws: Workspace, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ComputeTarget.attach(ws, "box", LocalCompute(gpus=1))
    write_script(tmp_path / "src", "train.py", TRAIN)
    write_script(tmp_path / "src", "urgent.py", URGENT)
    exp = Experiment(ws, "prio")
    low = exp.submit(ScriptRunConfig(str(tmp_path / "src"), script="train.py", compute_target="box", use_gpu=True))
    wait_until(lambda: Path(low.workdir, "outputs", "ready").exists(), timeout=60)
    high = exp.submit(ScriptRunConfig(str(tmp_path / "src"), script="urgent.py", compute_target="box",
                                      use_gpu=True, priority=5))
    wait_until(lambda: high.get_status() == "Queued", timeout=30)
    details = low.wait_for_completion(timeout=90)
    assert "attempts" not in details
    assert high.wait_for_completion(timeout=60)["status"] == "Completed"
    assert _stamp(low, "final") <= _stamp(high, "urgent ")
