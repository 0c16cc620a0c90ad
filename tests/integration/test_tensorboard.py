"""TensorBoard over runs: ranks' SummaryWriter event files via TORCHYARD_TENSORBOARD_DIR, and a run's
torchyard metrics exported as event files; served by the real ``tensorboard`` package, read back over
its HTTP API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tests.conftest import write_script

from torchyard import Experiment, PyTorch, ScriptRunConfig

pytest.importorskip("tensorboard")

TORCHYARD = [sys.executable, "-m", "torchyard"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, **query: str) -> object:
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def tensorboard_cli(ws):
    """Start ``torchyard tensorboard ...``; stopped (with its TensorBoard) when the test ends."""
    procs: list[subprocess.Popen[str]] = []

    def start(*run_ids: str) -> tuple[subprocess.Popen[str], int]:
        port = _free_port()
        proc = subprocess.Popen([*TORCHYARD, "--workspace", ws.path, "tensorboard", *run_ids, "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        procs.append(proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _wait_for_runs(proc: subprocess.Popen[str], port: int, want: set[str], timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            tags = _get(port, "/data/plugin/scalars/tags")
            if want <= set(tags):  # type: ignore[arg-type]
                return tags  # type: ignore[return-value]
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard did not show {want} within {timeout} s")


def test_tensorboard_over_event_files_and_exported_metrics(ws, tmp_path, tensorboard_cli):
    folder = tmp_path / "tb"
    write_script(folder, "writer.py", """
        import os
        from torch.utils.tensorboard import SummaryWriter
        rank = int(os.environ["RANK"])
        w = SummaryWriter(os.environ["TORCHYARD_TENSORBOARD_DIR"])
        for step in range(5):
            w.add_scalar("train/loss", 10.0 * (rank + 1) - step, step)
        w.close()
    """)
    write_script(folder, "plain.py", """
        from torchyard import Run
        run = Run.get_context()
        for step in range(4):
            run.log("acc", 0.25 * step, step=step * 2)
    """)
    exp = Experiment(ws, "tb")
    events = exp.submit(PyTorch(str(folder), entry_script="writer.py", process_count_per_node=2,
                                distributed_backend="pytorch"))
    plain = exp.submit(ScriptRunConfig(str(folder), script="plain.py"))
    assert events.wait_for_completion(timeout=180)["status"] == "Completed"
    assert plain.wait_for_completion(timeout=60)["status"] == "Completed"
    for rank in (0, 1):
        files = os.listdir(Path(events.workdir, "logs", "tensorboard", f"rank_{rank}"))
        assert any("tfevents" in f for f in files)
    assert any("tensorboard/rank_1/" in n for n in events.get_file_names())  # kept with the logs

    proc, port = tensorboard_cli(events.id, plain.id)
    want = {f"{events.id}/rank_0", f"{events.id}/rank_1", f"{plain.id}/rank_0"}
    tags = _wait_for_runs(proc, port, want)
    assert "train/loss" in tags[f"{events.id}/rank_1"]
    assert "acc" in tags[f"{plain.id}/rank_0"]
    got = _get(port, "/data/plugin/scalars/scalars", run=f"{events.id}/rank_1", tag="train/loss")
    assert [(step, value) for _wall, step, value in got] == [(s, 20.0 - s) for s in range(5)]
    got = _get(port, "/data/plugin/scalars/scalars", run=f"{plain.id}/rank_0", tag="acc")
    assert [(step, value) for _wall, step, value in got] == [(0, 0.0), (2, 0.25), (4, 0.5), (6, 0.75)]
    times = ws.store.get_series(plain.id, rank=0, name="acc")[(0, "acc")][2]
    assert [w for w, _s, _v in got] == pytest.approx(times)


def test_tensorboard_cli_refuses_bad_input_in_one_line(ws, src):
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TORCHYARD, "--workspace", ws.path, "tensorboard", *argv],
                              capture_output=True, text=True, timeout=60)

    bad_host = cli("some_run", "--host", "0.0.0.0")
    assert bad_host.returncode == 2 and "--host" in bad_host.stderr + bad_host.stdout
    assert len((bad_host.stderr + bad_host.stdout).strip().splitlines()) == 1
    missing = cli("no_such_run")
    assert missing.returncode == 2 and "no_such_run" in missing.stderr + missing.stdout
    assert "Traceback" not in missing.stderr
    run = Experiment(ws, "t").submit(ScriptRunConfig(str(src), script="ok.py"))
    run.wait_for_completion(timeout=60)
    dry = cli(run.id, "--dry-run", "--port", "7007")
    assert dry.returncode == 0, dry.stderr
    assert "metrics exported as event files" in dry.stdout
    assert "--logdir_spec" in dry.stdout and f"{run.id}:" in dry.stdout and "7007" in dry.stdout
