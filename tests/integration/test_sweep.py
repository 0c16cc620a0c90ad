"""Real sweeps: the digits example with a Bandit policy, cancel, a controller killed and resumed,
distributed trials, and a YAML sweep through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from tests.conftest import EXAMPLES, run_processes, wait_until, write_script

from torchyard import (
    BanditPolicy,
    Experiment,
    GridParameterSampling,
    HyperDriveConfig,
    HyperDriveRun,
    PrimaryMetricGoal,
    PyTorch,
    RandomParameterSampling,
    choice,
    uniform,
)

FAKE = """
import argparse, os, time
from torchyard import Run
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--hidden", type=int, default=8)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--sleep", type=float, default=0.2)
a = p.parse_args()
run = Run.get_context()
for epoch in range(a.epochs):
    if os.environ.get("RANK", "0") == "0":
        run.log("accuracy", min(1.0, a.lr * (epoch + 1) * a.hidden / 8))
    time.sleep(a.sleep)
"""


@pytest.fixture
def fake(tmp_path):
    folder = tmp_path / "fake"
    write_script(folder, "fake.py", FAKE)
    return folder


def no_leftovers(hd):
    """No process of the sweep or of any trial is left, and none is a child of this test."""
    folders = [hd.workdir] + [c.workdir for c in hd.get_children()]
    wait_until(lambda: not any(run_processes(f) for f in folders), timeout=15)
    since = hd._store.get_run(hd.id)["created_at"] - 1  # servers other tests started before are not ours

    def ours() -> list[psutil.Process]:
        out = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.create_time() >= since and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out

    wait_until(lambda: not ours(), timeout=15)
    pid = hd._store.get_run(hd.id)["supervisor_pid"]
    assert pid is None or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_digits_sweep_with_bandit_policy(ws):
    est = PyTorch(str(EXAMPLES / "digits"), entry_script="train.py",
                  script_params={"--epochs": 8, "--epoch-sleep": 0.3, "--lr": 0.5},
                  environment_variables={"OMP_NUM_THREADS": "1"})
    hd_config = HyperDriveConfig(
        run_config=est,
        hyperparameter_sampling=GridParameterSampling(
            {"--lr": choice(0.1, 0.05, 0.005, 0.0005), "--hidden": choice(64, 16)}),
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=0),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=8,
        max_concurrent_runs=2,
    )
    hd = Experiment(ws, "digits-sweep").submit(hd_config)
    assert isinstance(hd, HyperDriveRun)
    seen_active = 0
    deadline = time.time() + 150
    while hd.get_status() not in ("Completed", "Failed", "Canceled"):
        active = [r for r in ws.store.list_runs(parent_id=hd.id) if r["status"] not in ("Completed", "Failed", "Canceled")]
        seen_active = max(seen_active, len(active))
        assert len(active) <= 2, "more trials at once than max_concurrent_runs"
        assert time.time() < deadline
        time.sleep(0.1)
    details = hd.get_details()
    assert details["status"] == "Completed", details
    children = hd.get_children()
    assert sorted(c.id for c in children) == sorted(f"{hd.id}_{i}" for i in range(8))
    assert seen_active == 2
    hyper = hd.get_hyperparameters()
    assert hyper[f"{hd.id}_0"] == {"--lr": 0.1, "--hidden": 64}
    for child in children:
        props = child.get_properties()
        assert json.loads(props["hyperparameters"]) == hyper[child.id]
        args = child.get_details()["runDefinition"]["arguments"]
        assert args[args.index("--lr") + 1] == str(hyper[child.id]["--lr"]) and args.count("--lr") == 1
        assert child._row["parent_id"] == hd.id
    stopped = [c for c in children if c.get_status() == "Canceled"]
    assert stopped, "the Bandit policy stopped no trial"
    for child in stopped:
        d = child.get_details()
        assert d["cancel_reason"].startswith("early terminated by BanditPolicy at interval ")
        assert d["statusHistory"][-1]["detail"] == d["cancel_reason"]
        assert len(child.get_metrics()["accuracy"] if isinstance(child.get_metrics().get("accuracy"), list) else [1]) < 8
    best = hd.get_best_run_by_primary_metric()
    ranked = hd.get_children_sorted_by_primary_metric()
    assert ranked[0]["run_id"] == best.id
    logged = best.get_metrics()["accuracy"]
    assert ranked[0]["best_primary_metric"] == max(logged) > 0.9
    assert details["sweep"]["best_run_id"] == best.id and details["sweep"]["early_terminated"] == len(stopped)
    metrics = hd.get_metrics()
    assert set(metrics) == {c.id for c in children} and metrics[best.id]["accuracy"] == logged
    assert [r["run_id"] for r in hd.get_children_sorted_by_primary_metric(top=2, reverse=True)] == \
        [r["run_id"] for r in ranked if r["best_primary_metric"] is not None][::-1][:2]
    no_leftovers(hd)


def grid_sweep(src, total=4, concurrent=2, epochs=5, sleep=0.2, policy=None, **est_kw):
    est = PyTorch(str(src), entry_script="fake.py", script_params={"--epochs": epochs, "--sleep": sleep}, **est_kw)
    return HyperDriveConfig(
        run_config=est,
        hyperparameter_sampling=GridParameterSampling({"--lr": choice(*[0.1 * (i + 1) for i in range(total)])}),
        policy=policy, primary_metric_name="accuracy", primary_metric_goal="maximize",
        max_total_runs=total, max_concurrent_runs=concurrent,
    )


def test_cancel_a_sweep(ws, fake):
    hd = Experiment(ws, "sweep-cancel").submit(grid_sweep(fake, epochs=600, sleep=0.1))
    wait_until(lambda: len([c for c in hd.get_children() if c.get_metrics().get("accuracy")]) == 2, timeout=30)
    started = time.time()
    hd.cancel()
    hd.cancel()  # idempotent
    details = hd.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Canceled" and time.time() - started < 15
    children = hd.get_children()
    assert len(children) == 2, "no trial may start after the cancel"
    for child in children:
        d = child.get_details()
        assert d["status"] == "Canceled" and d["cancel_reason"] == f"sweep {hd.id} was canceled: canceled by user"
    no_leftovers(hd)


def test_controller_killed_and_resumed(ws, fake):
    hd = Experiment(ws, "sweep-restart").submit(grid_sweep(fake, total=6, concurrent=2, epochs=5, sleep=0.25))
    wait_until(lambda: sum(c["status"] == "Completed" for c in ws.store.list_runs(parent_id=hd.id)) >= 2, timeout=60)
    pid = ws.store.get_run(hd.id)["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=5)
    before = {r["id"]: r for r in ws.store.list_runs(parent_id=hd.id)}
    time.sleep(1.5)  # nothing new starts without a controller (the store is read without reconciling)
    assert set(before) == {r["id"] for r in ws.store.list_runs(parent_id=hd.id)}
    assert hd.resume() is True
    assert hd.resume() is False  # one controller at a time
    details = hd.wait_for_completion(timeout=90)
    assert details["status"] == "Completed"
    rows = {r["id"]: r for r in ws.store.list_runs(parent_id=hd.id)}
    assert sorted(rows) == sorted(f"{hd.id}_{i}" for i in range(6))
    for cid, row in before.items():  # trials that existed before the kill were not rerun
        assert rows[cid]["created_at"] == row["created_at"]
        history = [h["status"] for h in ws.store.status_history(cid)]
        assert history.count("Running") == 1 and history[-1] == "Completed"
    assert details["controller_starts"] == 2
    assert len(hd.get_hyperparameters()) == 6
    no_leftovers(hd)


def test_a_reader_restarts_a_dead_controller(ws, fake):
    hd = Experiment(ws, "sweep-revive").submit(grid_sweep(fake, total=3, concurrent=1, epochs=4, sleep=0.25))
    wait_until(lambda: ws.store.list_runs(parent_id=hd.id), timeout=30)
    pid = ws.store.get_run(hd.id)["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=5)
    assert hd.get_status() in ("Running", "Queued")  # reconcile restarts it instead of failing the sweep
    details = hd.wait_for_completion(timeout=60)
    assert details["status"] == "Completed" and details["controller_starts"] == 2
    assert len(hd.get_children()) == 3
    no_leftovers(hd)


def test_distributed_trials(ws, fake):
    config = grid_sweep(fake, total=2, concurrent=2, epochs=3, sleep=0.1, node_count=2, distributed_backend="pytorch")
    hd = Experiment(ws, "sweep-dist").submit(config)
    assert hd.wait_for_completion(timeout=90)["status"] == "Completed"
    for child in hd.get_children():
        d = child.get_details()
        assert d["status"] == "Completed" and d["runDefinition"]["distribution"]["node_count"] == 2
        assert {"logs/rank_0.txt", "logs/rank_1.txt"} <= set(child.get_file_names())
        assert len(child.get_metrics()["accuracy"]) == 3
    no_leftovers(hd)


def test_yaml_sweep_through_the_cli(tmp_path, fake):
    job = tmp_path / "sweep.yml"
    job.write_text(f"""
type: sweep
experiment: ysweep
trial:
  code: {fake}
  command: python fake.py --epochs 3 --sleep 0.1 --lr ${{{{search_space.lr}}}}
search_space:
  lr: {{type: uniform, min_value: 0.05, max_value: 0.3}}
  hidden: {{type: choice, values: [8, 16]}}
sampling_algorithm: {{type: random, seed: 11}}
objective: {{goal: maximize, primary_metric: accuracy}}
limits: {{max_total_trials: 3, max_concurrent_trials: 2}}
""")
    env = {**os.environ, "TORCHYARD_AGENT": "0"}
    cli = [sys.executable, "-m", "torchyard", "--workspace", str(tmp_path / ".torchyard")]
    out = subprocess.run([*cli, "submit", str(job), "--stream"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rank" in out.stdout and "hyperparameters" in out.stdout and "Completed" in out.stdout
    sweep_id = out.stderr.split("submitted sweep ")[1].split()[0]
    shown = subprocess.run([*cli, "sweep", "show", sweep_id, "--json"], capture_output=True, text=True, env=env)
    data = json.loads(shown.stdout)
    assert data["status"] == "Completed" and len(data["trials"]) == 3
    values = [t["best_primary_metric"] for t in data["trials"]]
    assert values == sorted(values, reverse=True)
    assert all(set(t["hyperparameters"]) == {"lr", "hidden"} for t in data["trials"])
    # the same seed draws the same values
    again = RandomParameterSampling({"lr": uniform(0.05, 0.3), "hidden": choice(8, 16)}, seed=11)
    expected = [again.suggest(i, 11) for i in range(3)]
    by_id = {t["run_id"]: t["hyperparameters"] for t in data["trials"]}
    assert [by_id[f"{sweep_id}_{i}"] for i in range(3)] == expected
    bad = subprocess.run([*cli, "sweep", "show", "nope"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_trials_that_fail_or_log_no_metric(ws, tmp_path):
    failing = tmp_path / "failing"
    write_script(failing, "fake.py", "import sys\nsys.exit(3)\n")
    hd = Experiment(ws, "sweep-fail").submit(grid_sweep(failing, total=2, concurrent=2))
    details = hd.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed" and "no trial completed" in details["error"]["message"]
    assert [c.get_status() for c in hd.get_children()] == ["Failed", "Failed"]
    assert hd.get_best_run_by_primary_metric() is None
    silent = tmp_path / "silent"
    write_script(silent, "fake.py", "print('no metric')\n")
    hd = Experiment(ws, "sweep-nometric").submit(grid_sweep(silent, total=2, concurrent=2))
    details = hd.wait_for_completion(timeout=60)
    assert details["status"] == "Completed" and details["sweep"]["best_run_id"] is None
    assert "no trial logged the primary metric 'accuracy'" in details["statusHistory"][-1]["detail"]
    no_leftovers(hd)


def test_a_trial_recorded_but_never_started_runs_once_after_resume(ws, fake):
    """A controller killed between recording a trial (still NotStarted) and starting its supervisor: the
    resumed controller starts it (once); it is neither lost nor run twice, and the sweep ends."""
    hd = Experiment(ws, "sweep-orphan").submit(grid_sweep(fake, total=3, concurrent=1, epochs=4, sleep=0.25))
    wait_until(lambda: ws.store.list_runs(parent_id=hd.id), timeout=30)
    pid = ws.store.get_run(hd.id)["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=5)
    config = hd.hyperdrive_config
    values = config.hyperparameter_sampling.suggest(1, 0)
    from torchyard.sweeps.config import trial_arguments

    orphan = ws.record_run("sweep-orphan", trial_arguments(config.trial_spec, values), parent_id=hd.id,
                           run_id=f"{hd.id}_1", tags={"hyperparameters": json.dumps(values)})
    from torchyard.status import RunStatus

    ws.store.set_status(orphan, RunStatus.NOT_STARTED)  # killed before record_run moved it to Queued
    assert ws.store.get_run(orphan)["supervisor_pid"] is None
    assert hd.resume() is True
    details = hd.wait_for_completion(timeout=90)
    assert details["status"] == "Completed" and len(hd.get_children()) == 3
    history = [h["status"] for h in ws.store.status_history(orphan)]
    assert history.count("Running") == 1 and history[-1] == "Completed"
    assert hd.get_hyperparameters()[orphan] == values
    no_leftovers(hd)
