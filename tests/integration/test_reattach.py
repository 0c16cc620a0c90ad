"""A supervisor that dies is replaced, and the run goes on (local compute's REATTACH): the ranks are
not restarted, the journals are read on from the stored offsets, every value is stored exactly once."""

from __future__ import annotations

import json
import os
import signal

import psutil
from tests.conftest import run_processes, wait_until, write_script

from torchyard import Experiment, PyTorch, ScriptRunConfig
from torchyard.paths import RunPaths

STEPS = 40

COUNTER = f"""
    import os, sys, time
    from torchyard import Run
    run = Run.get_context()
    rank = int(os.environ.get("RANK", "0"))
    run.log("pid", float(os.getpid()))
    for i in range({STEPS}):
        run.log("i", float(i), step=i)
        if i == 10:
            open(os.path.join("outputs", f"ready_{{rank}}"), "w").close()
        time.sleep(float(os.environ.get("STEP_SLEEP", "0.1")))
    print("done", rank, flush=True)
"""


def _json(path):
    with open(path) as fh:
        return json.load(fh)


def _kill_supervisor(ws, run) -> int:
    pid = ws.store.get_run(run.id)["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    return pid


def _count_exactly_once(run, ranks: int) -> None:
    every = run.get_metrics(rank="all")
    assert sorted(every) == list(range(ranks))
    for rank in range(ranks):
        assert every[rank]["i"] == [float(i) for i in range(STEPS)], rank  # each value once, in order


def test_killed_supervisor_is_replaced_and_the_ranks_run_on(ws, tmp_path):
    folder = tmp_path / "src"
    write_script(folder, "count.py", COUNTER)
    run = Experiment(ws, "re").submit(PyTorch(str(folder), entry_script="count.py", node_count=2,
                                              process_count_per_node=1, distributed_backend="pytorch"))
    outputs = RunPaths(run.workdir).outputs
    wait_until(lambda: all(os.path.exists(os.path.join(outputs, f"ready_{r}")) for r in range(2)), timeout=60)
    ranks = {p.pid for p in run_processes(run.workdir) if "count.py" in " ".join(p.cmdline())}
    assert len(ranks) == 2
    old = _kill_supervisor(ws, run)
    assert run.get_status() == "Running"  # the reader that notices starts the replacement
    new = ws.store.get_run(run.id)["supervisor_pid"]
    assert new not in (old, None, -1)
    details = run.wait_for_completion(timeout=120)
    assert details["status"] == "Completed"
    assert [s["replaced"] for s in details["supervisors"]] == [old]
    # the same rank processes logged every value: none restarted
    every = run.get_metrics(rank="all")
    assert {int(every[r]["pid"]) for r in range(2)} == ranks
    _count_exactly_once(run, 2)
    history = [h["status"] for h in details["statusHistory"]]
    assert history.count("Running") == 1 and history[-1] == "Completed"
    assert "rank_0.txt" in " ".join(run.get_file_names())


def test_a_job_that_ended_unwatched_is_finished_by_the_replacement(ws, tmp_path):
    folder = tmp_path / "src"
    write_script(folder, "count.py", COUNTER)
    run = Experiment(ws, "re").submit(ScriptRunConfig(str(folder), script="count.py",
                                                      environment_variables={"STEP_SLEEP": "0.05"}))
    wait_until(lambda: os.path.exists(os.path.join(RunPaths(run.workdir).outputs, "ready_0")), timeout=60)
    _kill_supervisor(ws, run)
    report = RunPaths(run.workdir).node_report(0)
    wait_until(lambda: os.path.exists(report), timeout=60)  # the launcher finished on its own
    assert _json(report)["exit_code"] == 0
    details = run.wait_for_completion(timeout=60)
    assert details["status"] == "Completed"
    _count_exactly_once(run, 1)


def test_supervisor_and_job_both_gone_fails_the_run(ws, src):
    run = Experiment(ws, "re").submit(ScriptRunConfig(str(src), script="sleep.py"))
    wait_until(lambda: run.get_status() == "Running")
    launchers = _json(RunPaths(run.workdir).handle)["launchers"]
    for pid, _ in launchers:  # the machine's processes are gone (a reboot): nothing to adopt
        os.killpg(pid, signal.SIGKILL)
    _kill_supervisor(ws, run)
    assert run.get_status() == "Failed"
    history = [h["status"] for h in run.get_details()["statusHistory"]]
    assert history[-2:] == ["NotResponding", "Failed"]
    assert "supervisor process" in run.get_details()["error"]["message"]
    wait_until(lambda: not [p for p in run_processes(run.workdir) if "sleep.py" in " ".join(p.cmdline())], timeout=10)


def test_a_replaced_supervisors_gpus_stay_held(ws, tmp_path, monkeypatch):
    """The window between a supervisor's death and its replacement must not hand its GPUs to a
    waiting run: the ledger keeps them while the run's launchers live, then the replacement holds them."""
    from torchyard.compute.base import ComputeTarget
    from torchyard.compute.local import LocalCompute

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ComputeTarget.attach(ws, "box", LocalCompute(gpus=1))
    folder = tmp_path / "src"
    write_script(folder, "gated.py", """
        import os, sys, time
        print("devices", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
        open(os.path.join("outputs", "ready_0"), "w").close()
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.05)
    """)
    gate = tmp_path / "gate"
    exp = Experiment(ws, "re")
    first = exp.submit(ScriptRunConfig(str(folder), script="gated.py", arguments=[str(gate)], compute_target="box",
                                       use_gpu=True))
    wait_until(lambda: os.path.exists(os.path.join(RunPaths(first.workdir).outputs, "ready_0")), timeout=60)
    _kill_supervisor(ws, first)
    # nobody has read the first run yet: its supervisor is dead and not replaced
    second = exp.submit(ScriptRunConfig(str(folder), script="gated.py", arguments=[str(gate)], compute_target="box",
                                        use_gpu=True))
    wait_until(lambda: second.get_status() == "Queued", timeout=30)
    assert first.get_status() == "Running"  # replaced now
    wait_until(lambda: second.get_details().get("queue_reason"), timeout=10)
    assert second.get_status() == "Queued"
    gate.write_text("go")
    assert first.wait_for_completion(timeout=60)["status"] == "Completed"
    assert second.wait_for_completion(timeout=60)["status"] == "Completed"
    assert first.get_details()["compute"].get("gpus") == ["0"]


def test_cancel_while_the_supervisor_is_gone(ws, src):
    run = Experiment(ws, "re").submit(ScriptRunConfig(str(src), script="sleep.py"))
    wait_until(lambda: run.get_status() == "Running")
    script = wait_until(lambda: [p for p in run_processes(run.workdir) if "sleep.py" in " ".join(p.cmdline())])
    _kill_supervisor(ws, run)
    run.cancel()  # CancelRequested in the store; the replacement reads it and stops the job
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Canceled"
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in script), timeout=10)


def test_a_server_at_boot_replaces_the_supervisors_that_died_while_it_was_down(ws, tmp_path):
    """Nobody reads the run: the dashboard server, started after the supervisor died, replaces it."""
    import subprocess
    import sys

    folder = tmp_path / "src"
    write_script(folder, "count.py", COUNTER)
    run = Experiment(ws, "re").submit(ScriptRunConfig(str(folder), script="count.py",
                                                      environment_variables={"STEP_SLEEP": "0.2"}))
    wait_until(lambda: os.path.exists(os.path.join(RunPaths(run.workdir).outputs, "ready_0")), timeout=60)
    old = _kill_supervisor(ws, run)
    server = subprocess.Popen([sys.executable, "-m", "torchyard", "ui", "--port", "0", "--workspace", ws.path],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def replaced():
            pid = ws.store.get_run(run.id)["supervisor_pid"]  # the store's row: this read replaces nothing
            return pid not in (None, -1, old) and psutil.pid_exists(pid)

        wait_until(replaced, timeout=30)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    details = run.wait_for_completion(timeout=60)
    assert details["status"] == "Completed"
    assert [s["replaced"] for s in details["supervisors"]] == [old]
    _count_exactly_once(run, 1)


def test_a_live_supervisor_taken_for_dead_keeps_its_run(ws, tmp_path):
    """A reader that takes a live supervisor for dead (here: its recorded pid is made wrong) starts a
    replacement; that one finds the run's lock taken and leaves, and the live one's next heartbeat
    records itself again: one supervisor, every value once."""
    import subprocess

    folder = tmp_path / "src"
    write_script(folder, "count.py", COUNTER)
    run = Experiment(ws, "re").submit(ScriptRunConfig(str(folder), script="count.py"))
    wait_until(lambda: os.path.exists(os.path.join(RunPaths(run.workdir).outputs, "ready_0")), timeout=60)
    real = ws.store.get_run(run.id)["supervisor_pid"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    ws.store.set_supervisor(run.id, dead.pid)
    assert run.get_status() == "Running"  # a replacement was started...
    wait_until(lambda: ws.store.get_run(run.id)["supervisor_pid"] == real, timeout=15)  # ...and the live one is back
    details = run.wait_for_completion(timeout=60)
    assert details["status"] == "Completed" and "supervisors" not in details  # nobody adopted anything
    _count_exactly_once(run, 1)
    log = RunPaths(run.workdir).supervisor_log
    with open(log) as fh:
        assert "already has a supervisor; leaving it alone" in fh.read()
