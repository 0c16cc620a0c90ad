"""Snapshots as runs use them: isolation from later edits, dedupe, restore, git, limits at submit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import wait_until, write_script

from torchyard import Experiment, ScriptRunConfig, SpecError


def test_editing_the_source_during_a_run_changes_nothing(ws, tmp_path):
    folder = tmp_path / "code"
    write_script(folder, "helper.py", "VALUE = 'original'\n")
    write_script(folder, "main.py", """
        import os, time
        while not os.path.exists(os.environ["GO_FILE"]):
            time.sleep(0.05)
        import helper
        print("helper says", helper.VALUE, flush=True)
    """)
    go = tmp_path / "go"
    run = Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="main.py",
                                                        environment_variables={"GO_FILE": str(go)}))
    wait_until(lambda: run.get_status() == "Running")
    (folder / "helper.py").write_text("VALUE = 'edited'\n")
    (folder / "main.py").write_text("raise SystemExit(3)\n")
    go.touch()
    run.wait_for_completion(timeout=60)
    log = (Path(run.workdir) / "logs" / "rank_0.txt").read_text()
    assert "helper says original" in log
    restored = run.restore_snapshot(str(tmp_path / "restored"))
    assert (Path(restored) / "helper.py").read_text() == "VALUE = 'original'\n"
    assert "GO_FILE" in (Path(restored) / "main.py").read_text()
    # the edited tree is a new snapshot; unchanged files are stored once
    second = Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="helper.py"))
    second.wait_for_completion(timeout=60)
    assert second.get_properties()["torchyard.snapshot"] != run.get_properties()["torchyard.snapshot"]
    third = Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="helper.py"))
    third.wait_for_completion(timeout=60)
    assert third.get_properties()["torchyard.snapshot"] == second.get_properties()["torchyard.snapshot"]
    objects = [f for _, _, files in os.walk(os.path.join(ws.path, "snapshots", "objects")) for f in files]
    assert len(objects) == 4  # helper.py and main.py, each in two versions


def test_git_commit_and_dirty_state_are_properties(ws, tmp_path):
    folder = tmp_path / "repo"
    write_script(folder, "main.py", "print('hi')\n")
    git = ["git", "-C", str(folder), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    run = Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="main.py"))
    run.wait_for_completion(timeout=60)
    props = run.get_properties()
    assert props["git.commit"] == commit and props["git.dirty"] == "false"
    (folder / "main.py").write_text("print('changed')\n")
    dirty = Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="main.py"))
    dirty.wait_for_completion(timeout=60)
    assert dirty.get_properties()["git.dirty"] == "true"
    assert not os.path.exists(os.path.join(dirty.workdir, ".git"))


def test_limits_fail_at_submit_with_the_largest_entries(ws, tmp_path, monkeypatch):
    folder = tmp_path / "big"
    write_script(folder, "main.py", "pass\n")
    (folder / "data").mkdir()
    for i in range(30):
        (folder / "data" / f"f{i}.bin").write_bytes(b"x" * 1000)
    monkeypatch.setenv("TORCHYARD_SNAPSHOT_MAX_FILES", "10")
    with pytest.raises(SpecError) as info:
        Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="main.py"))
    assert info.value.field == "source_directory"
    assert "data" in str(info.value) and "10" in str(info.value)
    assert ws.store.list_runs() == []
    (folder / ".torchyardignore").write_text("data/\n")
    run = Experiment(ws, "snap").submit(ScriptRunConfig(str(folder), script="main.py"))
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    assert not os.path.exists(os.path.join(run.workdir, "data"))
