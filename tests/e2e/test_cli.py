"""The documented CLI flows (docs/get-started.md, docs/guides/cli.md) through the real `torchyard` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES, wait_until


def ty(*args: str, cwd: Path, check: bool = False, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "torchyard", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TORCHYARD_WORKSPACE": str(cwd / ".torchyard")},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_run_wait_streams_output_and_summary(tmp_path, src):
    proc = ty("run", "--source-dir", str(src), "--entry", "ok.py", "--experiment", "cli", "--wait", "--", "--a", "b",
              cwd=tmp_path, check=True)
    assert "hello from 0 args ['--a', 'b']" in proc.stdout
    assert "Execution Summary" in proc.stdout
    listed = json.loads(ty("runs", "list", "--json", cwd=tmp_path, check=True).stdout)
    assert len(listed) == 1 and listed[0]["status"] == "Completed"
    run_id = listed[0]["run_id"]
    table = ty("runs", "list", "--experiment", "cli", "--status", "Completed", cwd=tmp_path, check=True).stdout
    assert run_id in table
    show = ty("runs", "show", run_id, cwd=tmp_path, check=True).stdout
    assert "Completed" in show and "outputs/result.txt" in show
    details = json.loads(ty("runs", "show", run_id, "--json", cwd=tmp_path, check=True).stdout)
    assert details["runId"] == run_id
    metrics = json.loads(ty("metrics", run_id, "--json", cwd=tmp_path, check=True).stdout)
    assert metrics["loss"] == [1.0, 0.5, 1 / 3]
    assert "loss" in ty("metrics", run_id, cwd=tmp_path, check=True).stdout
    assert "hello from 0" in ty("logs", run_id, cwd=tmp_path, check=True).stdout
    ty("download", run_id, "outputs/result.txt", "--to", str(tmp_path / "dl"), cwd=tmp_path, check=True)
    assert (tmp_path / "dl" / "result.txt").read_text() == "42"
    ty("download", run_id, "outputs", "--to", str(tmp_path / "all"), cwd=tmp_path, check=True)
    assert (tmp_path / "all" / "outputs" / "result.txt").exists()


def test_submit_yaml_and_cancel(tmp_path, src):
    job = tmp_path / "job.yml"
    job.write_text(f"experiment: y\ncode: {src}\ncommand: python sleep.py 60\n")
    proc = ty("submit", str(job), cwd=tmp_path, check=True)
    run_id = proc.stdout.strip()
    wait_until(lambda: "sleeping" in ty("logs", run_id, cwd=tmp_path).stdout, timeout=60)
    assert "cancel requested" in ty("cancel", run_id, cwd=tmp_path, check=True).stdout
    follow = ty("logs", run_id, "--follow", cwd=tmp_path, check=True, timeout=60)
    assert "sleeping" in follow.stdout
    assert json.loads(ty("runs", "show", run_id, "--json", cwd=tmp_path).stdout)["status"] == "Canceled"


def test_submit_stream_failed_run_exits_1(tmp_path, src):
    job = tmp_path / "job.yml"
    job.write_text(f"code: {src}\nentry_script: fail.py\n")
    proc = ty("submit", str(job), "--stream", cwd=tmp_path)
    assert proc.returncode == 1
    assert "boom at step 7" in proc.stdout
    assert "ended Failed" in proc.stderr


def test_dry_run_prints_the_plan(tmp_path):
    proc = ty("submit", str(EXAMPLES / "digits" / "job.yml"), "--dry-run", cwd=tmp_path, check=True)
    assert "torchyard.launch.launcher" in proc.stdout
    assert '"nproc": 2' in proc.stdout
    assert not (tmp_path / ".torchyard" / "runs").exists() or not os.listdir(tmp_path / ".torchyard" / "runs")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--source-dir", "/nonexistent", "--entry", "x.py"], "source_directory"),
        (["run", "--source-dir", "{src}", "--entry", "missing.py"], "entry_script"),
        (["run", "--source-dir", "{src}", "--entry", "ok.py", "--node-count", "0"], "node_count"),
        (["run", "--source-dir", "{src}", "--entry", "ok.py", "--node-count", "2"], "distributed_backend"),
        (["run", "--source-dir", "{src}", "--entry", "ok.py", "--compute", "nowhere"], "unknown compute target"),
        (["run", "--source-dir", "{src}", "--entry", "ok.py", "--env", "NOEQUALS"], "KEY=VALUE"),
        (["run", "--source-dir", "{src}", "--entry", "ok.py", "--experiment", "bad name"], "invalid name"),
        (["submit", "{tmp}/missing.yml"], "not found"),
        (["submit", "{tmp}/bad.yml"], "malformed YAML"),
        (["runs", "show", "nope"], "no run 'nope'"),
        (["logs", "nope"], "no run 'nope'"),
        (["metrics", "nope"], "no run 'nope'"),
        (["cancel", "nope"], "no run 'nope'"),
        (["download", "nope", "outputs/x"], "no run 'nope'"),
        (["run", "--entry", "x.py", "--node-count", "two"], "invalid int value"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, src, args, fragment):
    (tmp_path / "bad.yml").write_text("code: [unclosed\n")
    ty("init", cwd=tmp_path, check=True)  # read commands never make a workspace: they would say so instead
    args = [a.replace("{src}", str(src)).replace("{tmp}", str(tmp_path)) for a in args]
    proc = ty(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_command(tmp_path):
    out = ty("--help", cwd=tmp_path, check=True).stdout
    for command in ("run", "submit", "runs", "logs", "metrics", "cancel", "download"):
        assert command in out


def _agent_procs(ws_path: str) -> list:
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "torchyard.runtime.agent" in cmd and ws_path in cmd:
            out.append(proc)
    return out


def test_agent_serves_later_submissions_and_reports_errors(tmp_path, src, monkeypatch):
    ws_path = str(tmp_path / ".torchyard")
    ty("run", "--source-dir", str(src), "--entry", "noop.py", "--wait", cwd=tmp_path, check=True)  # starts an agent
    wait_until(lambda: _agent_procs(ws_path), timeout=30)
    from torchyard.runtime import agent

    def agent_answers() -> bool:
        sock = agent.connect(ws_path, f"sqlite:///{ws_path}/store.db")
        if sock is None:
            return False
        sock.close()
        return True

    wait_until(agent_answers, timeout=30)
    (src / "probe.py").write_text("import os\nprint('probe', os.environ.get('TY_PROBE'))\n")
    monkeypatch.setenv("TY_PROBE", "from-this-shell")  # the agent started without it
    probe = ty("run", "--source-dir", str(src), "--entry", "probe.py", "--wait", cwd=tmp_path, check=True)
    assert "probe from-this-shell" in probe.stdout
    proc = ty("run", "--source-dir", str(src), "--entry", "ok.py", "--wait", cwd=tmp_path, check=True)
    assert "hello from 0" in proc.stdout and "Execution Summary" in proc.stdout
    run_id = json.loads(ty("runs", "list", "--json", "--limit", "1", cwd=tmp_path, check=True).stdout)[0]["run_id"]
    details = json.loads(ty("runs", "show", run_id, "--json", cwd=tmp_path, check=True).stdout)
    assert details["status"] == "Completed"
    assert details["logFiles"]
    bad = ty("run", "--source-dir", str(src), "--entry", "ok.py", "--compute", "nowhere", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown compute target" in bad.stderr and "Traceback" not in bad.stderr
    failed = ty("run", "--source-dir", str(src), "--entry", "fail.py", "--wait", cwd=tmp_path)
    assert failed.returncode == 1 and "boom at step 7" in failed.stderr
    quick = ty("run", "--source-dir", str(src), "--entry", "noop.py", "--json", cwd=tmp_path, check=True)
    assert json.loads(quick.stdout)["status"] == "Queued"
    for p in _agent_procs(ws_path):
        p.terminate()


def test_without_agent(tmp_path, src, monkeypatch):
    monkeypatch.setenv("TORCHYARD_AGENT", "0")
    for _ in range(2):
        proc = ty("run", "--source-dir", str(src), "--entry", "ok.py", "--wait", cwd=tmp_path, check=True)
        assert "Execution Summary" in proc.stdout
    assert not _agent_procs(str(tmp_path / ".torchyard"))


def test_env_commands(tmp_path):
    spec = tmp_path / "env.yml"
    spec.write_text("name: tools\npip: [tomli-w==1.2.0]\n")
    assert ty("env", "register", str(spec), cwd=tmp_path, check=True).stdout.strip() == "tools:1"
    assert ty("env", "register", str(spec), cwd=tmp_path, check=True).stdout.strip() == "tools:1"
    shown = ty("env", "show", "tools:1", cwd=tmp_path, check=True).stdout
    assert "tomli-w==1.2.0" in shown
    listed = json.loads(ty("env", "list", "--json", cwd=tmp_path, check=True).stdout)
    assert [e["name"] for e in listed["registered"]] == ["tools"]
    assert "removed 0" in ty("env", "prune", cwd=tmp_path, check=True).stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\nbogus: 1\n")
    for args, fragment in ((["env", "register", str(bad)], "unknown field 'bogus'"),
                           (["env", "register", str(tmp_path / "none.yml")], "not found"),
                           (["env", "show", "nope"], "no environment 'nope'"),
                           (["env", "export", "nope"], "no run 'nope'")):
        proc = ty(*args, cwd=tmp_path)
        assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
