"""The checkpoint commit protocol (torchyard.tracking.checkpoint) and the hang stacks' reading
(torchyard.runtime.failure), in one process: ranks are simulated by their RANK variable."""

from __future__ import annotations

import os

import pytest
from tests.conftest import save_part as save

from torchyard.runtime.failure import hang_report, hang_summary, parse_stacks
from torchyard.tracking.checkpoint import CheckpointMixin, committed, list_checkpoints


def test_committed_only_when_every_rank_left_the_block(ckdir, monkeypatch):
    run = CheckpointMixin()
    assert run.latest_checkpoint() is None
    save(monkeypatch, 0, 1)
    assert run.latest_checkpoint() is None  # rank 1 has not finished step 1
    save(monkeypatch, 1, 1, metrics={"loss": 0.5})
    latest = run.latest_checkpoint()
    assert latest == ckdir / "step_1"
    assert sorted(p.name for p in latest.iterdir() if not p.name.startswith(".")) == [
        "part_0.txt", "part_1.txt", "torchyard_checkpoint.json"]
    [info] = list_checkpoints(ckdir)
    assert info["step"] == 1 and info["metrics"] == {"loss": 0.5} and info["size"] > 0 and info["world_size"] == 2


def test_a_rank_failing_mid_save_leaves_the_previous_one_latest(ckdir, monkeypatch):
    save(monkeypatch, 0, 1)
    save(monkeypatch, 1, 1)
    save(monkeypatch, 0, 2)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ZeroDivisionError), CheckpointMixin().checkpoint(2) as folder:
        (folder / "part_1.txt").write_text("half")
        1 / 0  # noqa: B018
    assert CheckpointMixin().latest_checkpoint() == ckdir / "step_1"
    assert [s for s, _ in committed(ckdir)] == [1]
    save(monkeypatch, 0, 3)
    save(monkeypatch, 1, 3)
    assert [s for s, _ in committed(ckdir)] == [1, 3]
    assert not (ckdir / "step_2.tmp.0").exists()  # the unfinished one of an earlier step is cleaned up


def test_keep_last_and_node_local_folders(ckdir, monkeypatch):
    for step in range(5):
        save(monkeypatch, 0, step)
        save(monkeypatch, 1, step)
    assert [s for s, _ in committed(ckdir)] == [2, 3, 4]
    # a node-local folder (one .node_K in it) on a 2-node job of 1 rank per node: its rank alone commits
    (ckdir / ".node_1").write_text("host")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    save(monkeypatch, 1, 9)
    assert CheckpointMixin().latest_checkpoint() == ckdir / "step_9"


def test_resume_from_when_the_node_has_none(ckdir, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHYARD_RESUME_FROM", str(tmp_path / "elsewhere" / "step_7"))
    assert CheckpointMixin().latest_checkpoint() == tmp_path / "elsewhere" / "step_7"


FAULTHANDLER = '''Thread 0x00007f0000000001 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 324 in wait
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007f0000000002 (most recent call first):
  File "{where}", line {line} in {func}
  File "/run/train.py", line 20 in <module>
'''


def test_hang_report_names_the_straggler(tmp_path):
    from torchyard.paths import RunPaths

    paths = RunPaths(str(tmp_path))
    os.makedirs(paths.logs)
    lib = "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py"
    for rank, (where, line, func) in enumerate([(lib, 2050, "all_reduce"), (lib, 2050, "all_reduce"),
                                                ("/run/train.py", 12, "stuck_forever")]):
        with open(paths.stacks_log(rank), "w") as fh:
            fh.write(FAULTHANDLER.format(where=where, line=line, func=func))
    with open(paths.stacks_log(2)) as fh:
        threads = parse_stacks(fh.read())
    assert threads[0][-1][2] == "<module>" and len(threads) == 2
    report = hang_report(paths, 3)
    assert report["stragglers"] == [2]
    assert report["where"]["2"].startswith("stuck_forever (train.py:12)")
    assert "straggler: rank 2 at stuck_forever" in hang_summary(report)
    # two ranks, no majority: the one outside torch.distributed is the straggler
    os.remove(paths.stacks_log(1))
    report = hang_report(paths, 3)
    assert report["stragglers"] == [2] and report["missing"] == [1]


RANK_LOOP = """
import os, sys
from torchyard.tracking.checkpoint import CheckpointMixin
run = CheckpointMixin()
for step in range(int(sys.argv[1])):
    with run.checkpoint(step) as folder:
        (folder / f"part_{os.environ['RANK']}.txt").write_text(str(step))
"""


def test_ranks_racing_through_many_checkpoints_commit_each_once(ckdir, monkeypatch):
    """4 processes, no barrier between them: whichever finishes a step last commits it, exactly once,
    and no rank sees an error from another's commit or retention."""
    import subprocess
    import sys

    world, steps = 4, 25
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(world))
    procs = [subprocess.Popen([sys.executable, "-c", RANK_LOOP, str(steps)], env={**os.environ, "RANK": str(r)})
             for r in range(world)]
    assert [p.wait(timeout=60) for p in procs] == [0] * world
    found = committed(ckdir)
    assert [s for s, _ in found] == [steps - 3, steps - 2, steps - 1]
    for step, folder in found:
        assert sorted(p.name for p in folder.glob("part_*")) == [f"part_{r}.txt" for r in range(world)]
        assert {p.read_text() for p in folder.glob("part_*")} == {str(step)}
    assert sorted(p.name for p in ckdir.iterdir()) == [f"step_{s}" for s, _ in found]


def test_a_bare_script_checkpoints_into_its_own_folder(tmp_path, monkeypatch):
    from torchyard.tracking.context import OfflineRun

    for name in ("TORCHYARD_CHECKPOINT_DIR", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "TORCHYARD_RESUME_FROM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    run = OfflineRun()
    assert run.latest_checkpoint() is None
    with run.checkpoint(step=3) as folder:
        (folder / "state.txt").write_text("x")
    assert run.latest_checkpoint() == tmp_path / "checkpoints" / "step_3"
