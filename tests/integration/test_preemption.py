"""Preemption with a grace period on local compute (``torchyard cancel --requeue``): every rank gets
SIGTERM with ``run.preempted`` set, commits a checkpoint in its grace and exits; the run resumes from
that checkpoint as a new attempt and completes with the same result as an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import wait_until, write_script

from torchyard import ComputeError, Experiment, PyTorch, ScriptRunConfig, Workspace

TRAIN = """
import json, os, signal, sys, time
from torchyard import Run
run = Run.get_context()
rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHYARD_ATTEMPT"])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
latest = run.latest_checkpoint()
state = json.load(open(latest / f"rank_{rank}.json")) if latest else {"epoch": -1, "total": 0}
print("attempt", attempt, "from", state["epoch"] + 1, flush=True)
for epoch in range(state["epoch"] + 1, 12):
    state = {"epoch": epoch, "total": state["total"] + epoch * (rank + 1)}
    run.log("total", state["total"], step=epoch)
    if epoch == 3 and attempt == 0:
        open(os.path.join("outputs", f"ready_{rank}"), "w").close()
    time.sleep(0.3)
    if stop:  # preempted: commit what there is and leave; the run resumes from it
        print("preempted at", epoch, "flag", run.preempted, os.path.exists(os.environ["TORCHYARD_PREEMPT_FLAG"]), flush=True)
        with run.checkpoint(step=epoch) as folder:
            json.dump(state, open(folder / f"rank_{rank}.json", "w"))
        sys.exit(0)
print("final", state["total"], flush=True)
"""


def test_requeue_checkpoints_in_the_grace_and_resumes_to_the_same_result(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "train.py", TRAIN)
    run = Experiment(ws, "preempt").submit(PyTorch(str(tmp_path / "src"), entry_script="train.py",
                                                   process_count_per_node=2, distributed_backend="pytorch",
                                                   preempt_grace_seconds=30))
    out = Path(run.workdir, "outputs")
    wait_until(lambda: all((out / f"ready_{r}").exists() for r in range(2)), timeout=60)
    before = time.time()
    run.cancel(requeue=True)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    attempts = details["attempts"]
    assert [a["cause"] for a in attempts] == ["preempted", None]  # max_retries is 0: a preemption spends none
    assert attempts[0]["ended"] - before < 15  # the ranks left in their grace; nobody waited 30 s
    step = int(Path(attempts[1]["resumed_from"]).name.split("_")[1])
    history = [h["status"] for h in details["statusHistory"]]
    assert "CancelRequested" in history and "Retrying" in history and history[-1] == "Completed"
    logs = Path(run.workdir, "logs")
    first = (logs / "attempt_0" / "rank_1.txt").read_text()
    assert f"preempted at {step} flag True True" in first
    assert f"attempt 1 from {step + 1}" in (logs / "rank_1.txt").read_text()
    assert "final 66" in (logs / "rank_0.txt").read_text() and "final 132" in (logs / "rank_1.txt").read_text()
    assert run.get_metrics(rank=1)["total"] == [float(2 * sum(range(e + 1))) for e in range(12)]


def test_a_rank_that_ignores_the_preemption_is_killed_after_the_grace(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "stubborn.py", """
        import os, signal, time
        attempt = int(os.environ["TORCHYARD_ATTEMPT"])
        print("attempt", attempt, flush=True)
        if attempt == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(os.path.join("outputs", "ready"), "w").close()
            time.sleep(600)
    """)
    run = Experiment(ws, "preempt").submit(ScriptRunConfig(str(tmp_path / "src"), script="stubborn.py",
                                                           preempt_grace_seconds=1.5))
    wait_until(lambda: Path(run.workdir, "outputs", "ready").exists(), timeout=60)
    before = time.time()
    run.cancel(requeue=True)
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Completed"
    first = details["attempts"][0]
    assert first["cause"] == "preempted" and first["ended"] - before < 10
    assert details["attempts"][1]["resumed_from"] is None  # no checkpoint: from the beginning


def test_requeue_of_a_run_that_is_not_running_is_refused(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "ok.py", "print('ok')\n")
    run = Experiment(ws, "preempt").submit(ScriptRunConfig(str(tmp_path / "src"), script="ok.py"))
    run.wait_for_completion(timeout=60)
    with pytest.raises(ComputeError, match="only a Starting or Running run can be preempted"):
        run.cancel(requeue=True)
    cli = subprocess.run([sys.executable, "-m", "torchyard", "--workspace", ws.path, "cancel", run.id, "--requeue"],
                         capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert "only a Starting or Running run can be preempted" in cli.stderr


def test_a_requeue_after_a_cancel_leaves_it_a_cancel(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "slow.py", "import time\nopen('outputs/ready', 'w').close()\ntime.sleep(60)\n")
    run = Experiment(ws, "preempt").submit(ScriptRunConfig(str(tmp_path / "src"), script="slow.py"))
    wait_until(lambda: Path(run.workdir, "outputs", "ready").exists() and run.get_status() == "Running", timeout=60)
    from torchyard.runtime.cancel import cancel_run

    stale = ws.store.get_run(run.id)  # what a requeue racing the cancel read: Running
    run.cancel()
    cancel_run(ws.store, stale, requeue=True)  # lands after the cancel: it must not turn it into a requeue
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Canceled" and "attempts" not in details and "requeue" not in details
