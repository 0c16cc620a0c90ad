"""A sweep's trial retries the way a run does (issue #25 item 2) before the sweep counts it failed:
a trial whose rank is killed by a signal torchyard did not send resumes from its checkpoint, and the
sweep ends with every trial Completed."""

from __future__ import annotations

from tests.conftest import write_script

from torchyard import Experiment, GridParameterSampling, HyperDriveConfig, PyTorch, choice

TRIAL = """
import argparse, json, os, signal
from torchyard import Run
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
a = p.parse_args()
run = Run.get_context()
attempt = int(os.environ["TORCHYARD_ATTEMPT"])
latest = run.latest_checkpoint()
start = json.load(open(latest / "state.json"))["epoch"] + 1 if latest else 0
for epoch in range(start, 4):
    run.log("accuracy", a.lr * (epoch + 1), step=epoch)
    with run.checkpoint(step=epoch) as folder:
        json.dump({"epoch": epoch}, open(folder / "state.json", "w"))
    if epoch == 1 and attempt == 0 and a.lr == 0.2:
        os.kill(os.getpid(), signal.SIGKILL)  # this trial's machine took it away
"""


def test_a_trial_killed_by_the_infrastructure_is_retried_and_the_sweep_completes(ws, tmp_path) -> None:
    write_script(tmp_path / "src", "trial.py", TRIAL)
    est = PyTorch(str(tmp_path / "src"), entry_script="trial.py", max_retries=1)
    config = HyperDriveConfig(run_config=est, hyperparameter_sampling=GridParameterSampling({"--lr": choice(0.1, 0.2)}),
                              primary_metric_name="accuracy", primary_metric_goal="maximize", max_total_runs=2,
                              max_concurrent_runs=2)
    hd = Experiment(ws, "sweep-retry").submit(config)
    details = hd.wait_for_completion(timeout=180, raise_on_error=False)
    assert details["status"] == "Completed", details
    children = {c.get_details()["runDefinition"]["arguments"][-1]: c for c in hd.get_children()}
    assert sorted(children) == ["0.1", "0.2"]
    retried = children["0.2"].get_details()
    assert retried["status"] == "Completed"
    assert [a["cause"] for a in retried["attempts"]] == ["infrastructure", None]
    assert children["0.2"].get_metrics()["accuracy"] == [0.2, 0.4, 0.6000000000000001, 0.8]
    assert "attempts" not in children["0.1"].get_details()
    assert hd.get_best_run_by_primary_metric().id == children["0.2"].id
