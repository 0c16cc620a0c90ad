"""Real runs on local compute: submit → Completed/Failed/Canceled, with real supervisor processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import run_processes, wait_until

from torchyard import Experiment, NotSupportedError, PyTorch, RunFailedError, ScriptRunConfig, SpecError


def submit(ws, src, script, *, args=None, **kw):
    exp = Experiment(ws, "t")
    return exp.submit(ScriptRunConfig(str(src), script=script, arguments=args, **kw), tags={"owner": "me"})


def test_completed_run_has_logs_metrics_outputs_and_history(ws, src, tmp_path, capsys):
    run = submit(ws, src, "ok.py", args=["--x", 1])
    details = run.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert "hello from 0 args ['--x', '1']" in out
    assert "Execution Summary" in out and run.id in out
    assert details["status"] == "Completed"
    assert details["exitCode"] == 0
    assert [h["status"] for h in details["statusHistory"]] == [
        "NotStarted", "Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed",
    ]
    metrics = run.get_metrics()
    assert metrics["loss"] == [1.0, 0.5, 1 / 3]
    assert metrics["final"] == 0.5
    assert metrics["lst"] == [1, 2, 3]
    assert metrics["row"] == {"epoch": [1, 2], "acc": [0.5, 0.75]}
    assert metrics["tbl"] == {"a": [1, 2], "b": [3, 4]}
    assert run.get_tags() == {"owner": "me", "phase": "done"}
    props = run.get_properties()
    assert props["commit"] == "abc"
    assert set(props) == {"commit", "torchyard.snapshot", "torchyard.source_directory"}
    names = run.get_file_names()
    assert {"outputs/result.txt", "logs/rank_0.txt", "reports/extra.txt", metrics["sample"]} <= set(names)
    assert metrics["sample"].startswith("images/sample_0_")
    dest = run.download_file("outputs/result.txt", str(tmp_path / "got.txt"))
    assert Path(dest).read_text() == "42"
    assert run.id.startswith("t_") and len(run.id.split("_")[-1]) == 8
    assert [r.id for r in Experiment(ws, "t").get_runs()] == [run.id]
    assert ws.get_run(run.id).get_status() == "Completed"
    wait_until(lambda: not run_processes(run.workdir), timeout=5)


def test_properties_are_immutable_from_sdk(ws, src):
    run = submit(ws, src, "noop.py")
    run.add_properties({"a": "1"})
    run.add_properties({"a": "1"})
    with pytest.raises(Exception, match="immutable"):
        run.add_properties({"a": "2"})
    run.wait_for_completion()


def test_failing_script_is_failed_with_traceback_tail(ws, src):
    run = submit(ws, src, "fail.py")
    with pytest.raises(RunFailedError, match="boom at step 7"):
        run.wait_for_completion()
    details = run.get_details()
    assert details["status"] == "Failed"
    assert details["exitCode"] == 1
    error = details["error"]
    assert error["rank"] == 0
    assert any("ValueError: boom at step 7" in line for line in error["last_lines"])
    assert any("inner()" in line for line in error["last_lines"])
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_cancel_stops_the_script(ws, src):
    run = submit(ws, src, "sleep.py")
    wait_until(lambda: run.get_metrics().get("tick"), timeout=30)
    started = time.time()
    run.cancel("stopped by BanditPolicy at interval 3")
    run.cancel()  # idempotent
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Canceled"
    assert details["cancel_reason"] == "stopped by BanditPolicy at interval 3"
    assert details["statusHistory"][-1]["detail"] == "stopped by BanditPolicy at interval 3"
    assert time.time() - started < 10
    assert "CancelRequested" in [h["status"] for h in details["statusHistory"]]
    wait_until(lambda: not run_processes(run.workdir), timeout=5)
    run.cancel()  # after the end: still fine


def test_cancel_right_after_submit_ends_canceled_every_time(ws, src):
    """Bug: a cancel within ~0.3 s of submit killed the supervisor during its imports (it had no
    SIGTERM handler yet), and the run ended Failed ("supervisor process ... is gone")."""
    for delay in (0.0, 0.0, 0.05, 0.1, 0.2):
        run = submit(ws, src, "sleep.py")
        time.sleep(delay)
        run.cancel()
        details = run.wait_for_completion(raise_on_error=False, timeout=60)
        assert details["status"] == "Canceled", details.get("error")
        assert details["cancel_reason"] == "canceled by user"
        wait_until(lambda run=run: not run_processes(run.workdir), timeout=10)


def test_max_run_duration_cancels(ws, src):
    run = submit(ws, src, "sleep.py", max_run_duration_seconds=1.5)
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Canceled"
    assert "max_run_duration_seconds=1.5" in details["cancel_reason"]
    assert details["runDefinition"]["max_run_duration_seconds"] == 1.5


def test_sigkilled_script_keeps_what_it_flushed(ws, tmp_path):
    from tests.conftest import write_script

    folder = tmp_path / "k"
    write_script(folder, "burst.py", """
        import os, time
        from torchyard import Run
        run = Run.get_context()
        for i in range(5000):
            run.log("v", i)
        time.sleep(1.5)  # longer than the flush interval
        open("ready", "w").close()
        time.sleep(60)
    """)
    run = submit(ws, folder, "burst.py")
    wait_until(lambda: os.path.exists(os.path.join(run.workdir, "ready")), timeout=60)
    proc = next(p for p in run_processes(run.workdir) if "burst.py" in " ".join(p.cmdline()))
    proc.send_signal(signal.SIGKILL)
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Failed"
    assert details["error"]["signal"] == "SIGKILL"
    assert run.get_metrics()["v"] == list(range(5000))


def test_run_continues_after_submitter_exits(ws, src):
    code = (
        "import sys; from torchyard import Workspace, Experiment, ScriptRunConfig;"
        f"ws = Workspace(path={ws.path!r});"
        f"r = Experiment(ws, 'detached').submit(ScriptRunConfig({str(src)!r}, script='sleep.py', arguments=['1']));"
        "print(r.id)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    run = ws.get_run(out.stdout.strip())
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    assert len(run.get_metrics()["tick"]) == 10


def test_concurrent_submits_from_separate_processes(ws, src):
    code = (
        "import sys; from torchyard import Workspace, Experiment, ScriptRunConfig;"
        f"ws = Workspace(path={ws.path!r});"
        f"r = Experiment(ws, 'many').submit(ScriptRunConfig({str(src)!r}, script='ok.py'));"
        "print(r.id)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        ids.append(out.strip())
    assert len(set(ids)) == 20
    for run_id in ids:
        run = ws.get_run(run_id)
        assert run.wait_for_completion(timeout=180)["status"] == "Completed"
        assert run.get_metrics()["loss"] == [1.0, 0.5, 1 / 3]


def test_unsupported_and_unknown_fail_at_submit(ws, src):
    exp = Experiment(ws, "t")
    with pytest.raises(NotSupportedError) as info:
        exp.submit(PyTorch(str(src), entry_script="ok.py", pip_requirements_file=str(src / "missing.txt")))
    assert info.value.field == "pip_requirements_file"
    with pytest.raises(SpecError) as info:
        exp.submit(PyTorch(str(src), entry_script="ok.py", compute_target="gpu-cluster"))
    assert re.search(r"known targets: ([\w-]+, )*local\b", str(info.value))  # kinds sort around it
    with pytest.raises(SpecError):
        Experiment(ws, "bad name!")
    assert ws.store.list_runs() == []


def test_hang_timeout_fails_a_silent_run(ws, tmp_path):
    from tests.conftest import write_script

    folder = tmp_path / "h"
    write_script(folder, "silent.py", "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    run = Experiment(ws, "t").submit(
        PyTorch(str(folder), entry_script="silent.py", process_count_per_node=2, distributed_backend="pytorch",
                hang_timeout_seconds=2)
    )
    started = time.time()
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert details["error"]["hang"] is True
    assert "hang_timeout_seconds=2" in details["error"]["message"]
    assert time.time() - started < 20
    wait_until(lambda: not run_processes(run.workdir), timeout=5)


def test_a_second_supervisor_for_the_same_run_leaves_at_once(ws, src):
    run = submit(ws, src, "sleep.py")
    wait_until(lambda: run.get_metrics().get("tick"), timeout=30)
    pid = ws.store.get_run(run.id)["supervisor_pid"]
    second = subprocess.run([sys.executable, "-m", "torchyard.runtime.supervisor", run.workdir],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 0 and "already has a supervisor" in second.stdout
    assert ws.store.get_run(run.id)["supervisor_pid"] == pid
    assert run.get_status() == "Running"
    run.cancel()
    assert run.wait_for_completion(raise_on_error=False, timeout=30)["status"] == "Canceled"


def test_the_dry_run_is_the_command_the_run_executes(ws, src):
    """Bug: `--dry-run` built its own argv (`python SCRIPT ARGS`), not what the supervisor ran. Now both
    come from the same plan: the rank command and every launcher setting match, bar the run's id,
    its folder and a free port."""
    import json

    from torchyard import Datastore, PyTorchConfiguration, ScriptRunConfig
    from torchyard.runtime.submit import plan

    data = Path(ws.path).parent / "data"
    data.mkdir()
    store = Datastore.register_local(ws, "here", str(data))
    config = ScriptRunConfig(str(src), script="ok.py", arguments=["--x", 1, "--data", store.path("").as_mount()],
                             distributed_job_config=PyTorchConfiguration(process_count=2, node_count=2))
    dry = plan(ws, "t", config.to_job_spec())
    run = Experiment(ws, "t").submit(config)
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    for node in dry.plan.nodes:
        with open(os.path.join(run.workdir, ".torchyard-run", f"plan_node_{node.node_rank}.json")) as fh:
            executed = json.load(fh)
        planned = node.plan.to_dict()
        for key in ("run_id", "workdir", "master_port"):
            planned.pop(key), executed.pop(key)
        planned_text = json.dumps(planned).replace("<workspace>", ws.path)
        assert json.loads(planned_text) == executed
        assert str(data) in executed["argv"]  # the input's placeholder, filled the same way
