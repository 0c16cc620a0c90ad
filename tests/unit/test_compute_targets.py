"""Compute targets by name: attach, list, resolve, remove; RayCompute's settings; no ray at import."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from torchyard import ComputeError, ComputeTarget, RayCompute, SpecError, Workspace
from torchyard.compute.registry import get_target, target_class
from torchyard.errors import NotFoundError
from torchyard.spec.job import build_job_spec


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "x.py").write_text("print('x')\n")
    return Workspace(str(tmp_path / "ws"))


def test_attach_get_list_remove(ws):
    attached = ComputeTarget.attach(ws, "ray-a", RayCompute(address="10.0.0.1:6379", placement="PACK"))
    assert isinstance(attached, RayCompute)
    assert attached.name == "ray-a"
    got = get_target("ray-a", ws.path)
    assert isinstance(got, RayCompute)
    assert (got.address, got.placement, got.cpus_per_process) == ("10.0.0.1:6379", "PACK", 1.0)
    assert [r["name"] for r in ws.compute_targets.list()] == ["local", "ray-a"]
    ComputeTarget.attach(ws, "ray-a", RayCompute(address="auto"))  # attaching again replaces
    assert get_target("ray-a", ws.path).address == "auto"
    ws.compute_targets.remove("ray-a")
    with pytest.raises(SpecError, match=r"unknown compute target 'ray-a'.*known targets: ([\w-]+, )*local\b"):
        get_target("ray-a", ws.path)


def test_bad_names_and_settings(ws):
    with pytest.raises(SpecError, match="built in"):
        ComputeTarget.attach(ws, "local", RayCompute())
    with pytest.raises(SpecError, match="invalid compute target name"):
        ComputeTarget.attach(ws, "no spaces", RayCompute())
    with pytest.raises(SpecError, match="expected a compute target"):
        ComputeTarget.attach(ws, "x", {"address": "auto"})  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="unknown placement 'DIAGONAL'"):
        RayCompute(placement="DIAGONAL")
    with pytest.raises(SpecError, match="cpus_per_process"):
        RayCompute(cpus_per_process=-1)
    with pytest.raises(SpecError, match="unknown compute target kind 'k8s'"):
        target_class("k8s")
    with pytest.raises(NotFoundError, match="no compute target 'nope'"):
        ws.compute_targets.record("nope")


def test_a_damaged_record_says_attach_again(ws):
    ComputeTarget.attach(ws, "r", RayCompute())
    path = f"{ws.path}/computes/r.json"
    with open(path, "w") as fh:
        json.dump({"name": "r", "kind": "ray", "config": {"adress": "typo"}}, fh)
    with pytest.raises(Exception, match="attach it again"):
        get_target("r", ws.path)


def test_missing_ray_says_how_to_install(ws, monkeypatch):
    import torchyard.compute.ray as ray_mod

    target = ComputeTarget.attach(ws, "r", RayCompute())
    monkeypatch.setattr(ray_mod.importlib.util, "find_spec", lambda name: None)
    spec = build_job_spec(source_directory=str(Path(ws.path).parent), entry_script="x.py", compute_target="r")
    with pytest.raises(ComputeError, match=r"pip install 'torchyard\[ray\]'"):
        target.check(spec)


def test_dry_run_plan_names_the_placement_group(ws):
    from torchyard.compute.base import PreparedJob

    target = ComputeTarget.attach(ws, "r", RayCompute(address="h:1"))
    spec = build_job_spec(source_directory=str(Path(ws.path).parent), entry_script="x.py", compute_target="r",
                          distribution={"backend": "mpi", "node_count": 2, "process_count_per_node": 2})
    job = PreparedJob(run_id="id", experiment="e", workspace="w", workdir="/wd", spec=spec,
                      rank_argv=["/py", "x.py"], launcher_python="/py", rank_python="/py")
    text = target.dryrun(job).describe()
    placement = json.loads(text.split("--- ray placement group\n")[1])
    assert placement["strategy"] == "STRICT_SPREAD"
    assert placement["bundles"] == [{"CPU": 2.0}, {"CPU": 2.0}]
    assert '"ray-node-1"' in text


def test_core_and_cli_never_import_ray(ws):
    ComputeTarget.attach(ws, "r", RayCompute())
    code = (
        "import sys, torchyard, torchyard.cli.main\n"
        "from torchyard.compute.registry import get_target\n"
        f"get_target('r', {ws.path!r}).to_config()\n"
        "torchyard.cli.main._parser()\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the Ray NodeAgent and the supervisor's mirror of its files, without a cluster ----------------


@pytest.fixture
def agent(tmp_path, monkeypatch):
    from torchyard.compute import ray_node

    monkeypatch.setenv("TORCHYARD_RAY_NODE_DIR", str(tmp_path / "nodes"))
    node = ray_node.NodeAgent("run1", 0)
    for sub in ("logs", ".torchyard-run/journal", "outputs"):
        os.makedirs(os.path.join(node.dir, sub), exist_ok=True)
    yield node
    node.cleanup()


def test_a_stop_that_overtakes_start_leaves_nothing_running(agent):
    # a threaded actor may run stop() before start(): start then starts nothing and wait() ends
    agent.stop()
    assert agent.start({"argv": ["never"]}) == 0
    assert agent.proc is None
    assert agent.wait() == 130


def test_a_start_that_fails_does_not_leave_wait_blocked(agent):
    import shutil

    shutil.rmtree(os.path.join(agent.dir, ".torchyard-run"))  # the plan cannot be written
    with pytest.raises(OSError):
        agent.start({})
    assert agent.wait() == 1


def test_cleanup_removes_the_node_folder_and_its_empty_run_folder(agent):
    run_dir = os.path.dirname(agent.dir)
    agent.cleanup()
    assert not os.path.exists(run_dir)
    assert agent.start({}) == 0  # nothing starts once cleaned up


def test_pull_and_apply_mirror_appends_and_the_rewritten_status_file(agent, tmp_path):
    from torchyard.compute.mirror import Mirror
    from torchyard.compute.ray_node import WHOLE_PREFIX

    mirror = Mirror(str(tmp_path / "mirror"), 1)
    log = os.path.join(agent.dir, "logs", "rank_0.txt")
    status = os.path.join(agent.dir, f"{WHOLE_PREFIX}0.json")
    Path(os.path.join(agent.dir, "logs", "empty.txt")).write_text("")

    def sync() -> None:
        while chunks := agent.pull(mirror.offsets[0]):
            mirror.apply(0, chunks)

    Path(log).write_text("one\n")
    Path(status).write_text('{"state": "starting ranks"}')
    sync()
    Path(log).write_text("one\ntwo\n")
    Path(status).write_text('{"state": "ok"}')  # rewritten in place, shorter
    sync()
    local = Path(mirror.workdir)
    assert (local / "logs" / "rank_0.txt").read_text() == "one\ntwo\n"
    assert (local / "logs" / "empty.txt").read_text() == ""
    assert json.loads((local / f"{WHOLE_PREFIX}0.json").read_text()) == {"state": "ok"}
    assert not agent.pull(mirror.offsets[0])  # nothing new: nothing sent
    Path(status).write_text('{"state": "no"}')  # rewritten again at the same length
    sync()
    assert json.loads((local / f"{WHOLE_PREFIX}0.json").read_text()) == {"state": "no"}


def test_node_argv_swaps_the_interpreter_only():
    from torchyard.compute.ray_backend import _node_argv

    local, node = "/ws/envs/k/bin/python", "/tmp/ray/envs/k/bin/python"
    assert _node_argv([local, "train.py", "--out", "/ws/envs/k/bin"], local, node) == \
        [node, "train.py", "--out", "/ws/envs/k/bin"]
    assert _node_argv(["/bin/sh", "-c", 'PATH="/ws/envs/k/bin:$PATH"; python t.py /ws/envs/k/bin'], local, node) == \
        ["/bin/sh", "-c", 'PATH="/tmp/ray/envs/k/bin:$PATH"; python t.py /ws/envs/k/bin']
    assert _node_argv([local, "t.py"], local, local) == [local, "t.py"]


def _rsh_request(addr: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((addr, port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(100)


def test_rsh_server_runs_only_what_carries_the_token(agent, monkeypatch, capfd):
    pytest.importorskip("ray")
    from torchyard.compute import ray_node, ray_rsh

    monkeypatch.setattr(ray_node, "RSH_REQUEST_SECONDS", 0.5)
    addr, port, token = agent.rsh_server()
    marker = os.path.join(agent.dir, "ran")
    bad = json.dumps({"token": "0" * 32, "command": f"touch {marker}"}).encode()
    assert _rsh_request(addr, port, struct.pack("!I", len(bad)) + bad) == b""  # closed, nothing run
    assert _rsh_request(addr, port, struct.pack("!I", 1 << 30)) == b""  # an oversized request is refused
    with socket.create_connection((addr, port), timeout=10) as silent:  # says nothing: dropped
        assert silent.recv(1) == b""
    assert not os.path.exists(marker)
    monkeypatch.setenv(ray_rsh.ENV, json.dumps({"ray-node-0": [addr, port, token]}))
    assert ray_rsh.main(["ray-node-0", "echo", "hello;", "exit", "3"]) == 3
    assert "hello" in capfd.readouterr().out
    monkeypatch.setenv(ray_rsh.ENV, json.dumps({"ray-node-0": ["127.0.0.1", 9, token]}))
    assert ray_rsh.main(["ray-node-0", "true"]) == 255  # nobody there: a message, no traceback
    assert "cannot reach ray-node-0" in capfd.readouterr().err


def test_the_mirror_brings_files_in_subfolders_of_logs(tmp_path):
    """TensorBoard writes logs/tensorboard/rank_N/...: mirrored like any log (append-only)."""
    from torchyard.compute.mirror import Mirror, scan

    node = tmp_path / "node"
    (node / "logs" / "tensorboard" / "rank_0").mkdir(parents=True)
    events = node / "logs" / "tensorboard" / "rank_0" / "events.out"
    events.write_bytes(b"abc")
    mirror = Mirror(str(tmp_path / "run"), 1)
    mirror.pull_folder(0, str(node))
    with open(events, "ab") as fh:
        fh.write(b"def")
    mirror.pull_folder(0, str(node))
    assert (tmp_path / "run" / "logs" / "tensorboard" / "rank_0" / "events.out").read_bytes() == b"abcdef"
    assert not scan(str(node), mirror.offsets[0])


def test_a_ray_client_connection_that_fails_to_start_is_retried_then_named(monkeypatch, capsys):
    """Through ray:// the head starts a server per connection; one that fails to start is retried."""
    from torchyard.compute import ray_backend
    from torchyard.errors import ComputeError

    class FakeRay:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls, self.shutdowns = failures, 0, 0

        def init(self, **_: object) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise ConnectionAbortedError("Starting Ray client server failed. See ray_client_server_23000.err")

        def shutdown(self) -> None:
            self.shutdowns += 1

    monkeypatch.setattr(ray_backend.time, "sleep", lambda _s: None)
    flaky = FakeRay(failures=2)
    ray_backend._connect(flaky, "ray://10.0.0.1:10001")
    assert flaky.calls == 3 and flaky.shutdowns == 2
    assert "attempt 1 of 3" in capsys.readouterr().out
    dead = FakeRay(failures=9)
    with pytest.raises(ComputeError, match="cannot connect to the Ray cluster at 'ray://10.0.0.1:10001'"):
        ray_backend._connect(dead, "ray://10.0.0.1:10001")
    assert dead.calls == 3
    once = FakeRay(failures=9)  # a GCS address is not retried: there is no per-connection server
    with pytest.raises(ComputeError):
        ray_backend._connect(once, "10.0.0.1:6379")
    assert once.calls == 1
