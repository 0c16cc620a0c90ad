"""Retries with a failure classification, on local compute with real ranks: a rank killed by a signal
torchyard did not send (infrastructure) is retried from the latest committed checkpoint and the run
completes with the same result as an uninterrupted one; a rank raising ZeroDivisionError (user) fails
at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import write_script

from torchyard import Experiment, PyTorch, ScriptRunConfig, Workspace

TRAIN = """
import json, os, signal, sys, time
from torchyard import Run
run = Run.get_context()
rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHYARD_ATTEMPT"])
print("attempt", attempt, "resume", os.environ.get("TORCHYARD_RESUME_FROM"), flush=True)
state, start = {"total": 0}, 0
latest = run.latest_checkpoint()
if latest is not None:
    state = json.load(open(latest / f"rank_{rank}.json"))
    start = state["epoch"] + 1
def committed(step):  # the ranks keep in step, as DDP's collectives would make them
    for _ in range(600):
        latest = run.latest_checkpoint()
        if latest is not None and int(latest.name.split("_")[1]) >= step:
            return
        time.sleep(0.05)
    raise SystemExit(f"checkpoint {step} was never committed")
for epoch in range(start, 5):
    state = {"total": state["total"] + (epoch + 1) * (rank + 1), "epoch": epoch}
    run.log("total", state["total"], step=epoch)
    with run.checkpoint(step=epoch) as folder:
        json.dump(state, open(folder / f"rank_{rank}.json", "w"))
    committed(epoch)
    time.sleep(float(os.environ.get("EPOCH_SLEEP", "0")))
    if epoch == 2 and rank == 1 and attempt == 0 and len(sys.argv) > 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the machine took it away: no exit code of its own
print("final", state["total"], flush=True)
"""


def test_a_killed_rank_is_retried_from_the_checkpoint_and_completes_the_same(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "train.py", TRAIN)
    est = PyTorch(str(tmp_path / "src"), entry_script="train.py", script_params={"--kill": ""},
                  process_count_per_node=2, distributed_backend="pytorch", max_retries=2)
    run = Experiment(ws, "retry").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    attempts = details["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert attempts[0]["cause"] == "infrastructure" and "SIGKILL" in attempts[0]["message"]
    assert attempts[1]["resumed_from"].endswith("step_2") and attempts[1]["cause"] is None
    assert "Retrying" in [h["status"] for h in details["statusHistory"]]
    logs = Path(run.workdir, "logs")
    assert "attempt 1 resume" in (logs / "rank_1.txt").read_text() and "final 30" in (logs / "rank_1.txt").read_text()
    assert "attempt 0" in (logs / "attempt_0" / "rank_1.txt").read_text()
    assert "final 15" in (logs / "rank_0.txt").read_text()  # the same result as an uninterrupted run
    # the resumed attempt logged epochs 3 and 4 only: with the first attempt's, one series of epochs 0..4
    assert run.get_metrics(rank=1)["total"] == [2.0, 6.0, 12.0, 20.0, 30.0]


def test_a_user_error_fails_at_once_and_is_not_retried(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "bad.py", "print('x', flush=True)\n1 / 0\n")
    run = Experiment(ws, "retry").submit(ScriptRunConfig(str(tmp_path / "src"), script="bad.py", max_retries=2))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["cause"] == "user" and "ZeroDivisionError" in json.dumps(details["error"])
    assert "attempts" not in details
    assert "Retrying" not in [h["status"] for h in details["statusHistory"]]


def test_retry_on_any_retries_a_user_error_and_gives_up_after_max_retries(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "bad.py", "import os\nprint('attempt', os.environ['TORCHYARD_ATTEMPT'])\n1 / 0\n")
    run = Experiment(ws, "retry").submit(ScriptRunConfig(str(tmp_path / "src"), script="bad.py", max_retries=1,
                                                         retry_on=["any"]))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed" and details["error"]["cause"] == "user"
    assert [(a["attempt"], a["cause"]) for a in details["attempts"]] == [(0, "user"), (1, None)]
    assert "attempt 1" in Path(run.workdir, "logs", "rank_0.txt").read_text()
    assert os.path.exists(Path(run.workdir, "logs", "attempt_0", "rank_0.txt"))


RELOG = """
import json, os, signal, time
from torchyard import Run
run = Run.get_context()
attempt = int(os.environ["TORCHYARD_ATTEMPT"])
latest = run.latest_checkpoint()
start = json.load(open(latest / "state.json"))["epoch"] + 1 if latest is not None else 0
for epoch in range(start, 6):
    run.log("loss", 10.0 * attempt + epoch, step=epoch)
    run.log_list("seen", [attempt, epoch])  # a non-scalar value, with no step: never replaced
    run.log_row("row", epoch=epoch)
    if epoch <= 2:
        with run.checkpoint(step=epoch) as folder:
            json.dump({"epoch": epoch}, open(folder / "state.json", "w"))
    if epoch == 4 and attempt == 0:
        run.flush()  # epochs 3 and 4 are stored: past the checkpoint of epoch 2
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_resumed_attempts_values_replace_the_lost_attempts_past_the_checkpoint(ws: Workspace, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "relog.py", RELOG)
    run = Experiment(ws, "retry").submit(ScriptRunConfig(str(tmp_path / "src"), script="relog.py", max_retries=1))
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    assert [a["attempt"] for a in details["attempts"]] == [0, 1]
    metrics = run.get_metrics()
    # epochs 0-2 from the first attempt, 3-5 from the second: one value per step, none of the lost 3 and 4
    assert metrics["loss"] == [0.0, 1.0, 2.0, 13.0, 14.0, 15.0]
    # values logged without a step are never replaced: 5 from the first attempt, 3 from the second
    assert metrics["row"]["epoch"] == [0, 1, 2, 3, 4, 3, 4, 5]
    assert len(metrics["seen"]) == 8
    from sqlalchemy import select

    from torchyard.workspace.schema import run_metric_summary as t

    with ws.store.engine.connect() as conn:
        loss = conn.execute(select(t.c.count, t.c.last, t.c.max).where(t.c.run_id == run.id, t.c.name == "loss")).one()
    assert (loss.count, loss.last, loss.max) == (6, 15.0, 15.0)  # the summary forgot the lost values too


def test_a_lost_node_is_retried_from_the_checkpoint_naming_the_node(ws: Workspace, tmp_path: Path) -> None:
    """One simulated node is lost as a machine is (its launcher and ranks SIGKILLed, no report): the
    attempt's cause is infrastructure naming node 1, and the retry resumes to the uninterrupted result."""
    import signal

    import psutil
    from tests.conftest import wait_until

    from torchyard.paths import RunPaths

    write_script(tmp_path / "src", "train.py", TRAIN)
    run = Experiment(ws, "retry").submit(PyTorch(str(tmp_path / "src"), entry_script="train.py", node_count=2,
                                                 process_count_per_node=1, distributed_backend="pytorch",
                                                 max_retries=1, environment_variables={"EPOCH_SLEEP": "0.5"}))
    wait_until(lambda: len(run.get_checkpoints()) >= 2, timeout=60)  # 3 epochs of 0.5 s to go
    with open(RunPaths(run.workdir).handle) as fh:
        launcher = psutil.Process(int(json.load(fh)["launchers"][1][0]))
    for proc in [launcher, *launcher.children(recursive=True)]:
        proc.send_signal(signal.SIGKILL)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    first = details["attempts"][0]
    assert first["cause"] == "infrastructure" and first["node"] == 1 and "node 1 was lost" in first["message"]
    assert "final 15" in Path(run.workdir, "logs", "rank_0.txt").read_text()
    assert "final 30" in Path(run.workdir, "logs", "rank_1.txt").read_text()
    assert run.get_metrics(rank=1)["total"] == [2.0, 6.0, 12.0, 20.0, 30.0]
