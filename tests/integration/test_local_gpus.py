"""Sharing a machine's GPUs on local compute, with real supervisors (compute/local.py, local_alloc.py).

Eight 1-GPU runs submitted at once to a local target that declares 4 GPUs (the machine needs none:
the declared devices are handed out by id): 4 run, 4 wait Queued with their reason, each rank sees
exactly its device, and all 8 complete."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tests.conftest import wait_until, write_script

from torchyard import Experiment, ScriptRunConfig
from torchyard.compute.base import ComputeTarget
from torchyard.compute.local import LocalCompute

REASON = r"waiting for 1 GPU; 0 free; (\d) runs? ahead"
GATED = """
import os, sys, time
gate = sys.argv[1]
print("devices", os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("TORCHYARD_GPUS"), flush=True)
print("start", time.time(), flush=True)
while not os.path.exists(gate):
    time.sleep(0.05)
time.sleep(0.3)
print("end", time.time(), flush=True)
"""


def _log(run) -> str:
    return Path(run.workdir, "logs", "rank_0.txt").read_text()


def test_eight_one_gpu_runs_on_four_gpus(ws, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ComputeTarget.attach(ws, "box", LocalCompute(gpus=4))
    src = tmp_path / "src"
    write_script(src, "gpu.py", GATED)
    gate = tmp_path / "gate"
    exp = Experiment(ws, "share")
    started = time.time()
    runs = [exp.submit(ScriptRunConfig(str(src), script="gpu.py", arguments=[str(gate)], compute_target="box",
                                       use_gpu=True)) for _ in range(8)]

    def settled():
        statuses = [r.get_status() for r in runs]
        reasons = [r.get_details().get("queue_reason") for r in runs]
        waiting = [why for s, why in zip(statuses, reasons, strict=True) if s == "Queued" and why]
        ahead = sorted(int(m.group(1)) for w in waiting if (m := re.fullmatch(REASON, w)))
        return statuses.count("Running") == 4 and ahead == [0, 1, 2, 3]  # reasons settle as the queue fills

    wait_until(settled, timeout=40, interval=0.2)
    gate.write_text("go")
    for run in runs:
        assert run.wait_for_completion()["status"] == "Completed"
    spans = []
    for run in runs:
        log = _log(run)
        devices = re.search(r"^devices (\S+) (\S+)$", log, re.MULTILINE)
        assert devices, log
        cuda, mine = devices.groups()
        assert cuda == mine and cuda in {"0", "1", "2", "3"}  # exactly one device, its own
        assert run.get_details()["compute"]["gpus"] == [cuda]
        start = float(re.search(r"^start (\S+)$", log, re.MULTILINE).group(1))  # type: ignore[union-attr]
        end = float(re.search(r"^end (\S+)$", log, re.MULTILINE).group(1))  # type: ignore[union-attr]
        spans.append((start, end, cuda))
    for i, (s1, e1, d1) in enumerate(spans):  # no two runs at once on one device
        for s2, e2, d2 in spans[i + 1:]:
            assert d1 != d2 or e1 <= s2 or e2 <= s1
    queued_after_start = [r for r in runs if "Queued" in [h["status"] for h in r.get_details()["statusHistory"]][2:]]
    assert len(queued_after_start) == 4
    ledger = ws.path + "/local_alloc/ledger.json"
    assert os.path.exists(ledger) and '"holders": {}' in Path(ledger).read_text()
    assert time.time() - started < 60


def test_a_queued_run_gives_up_or_is_canceled_without_starting(ws, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ComputeTarget.attach(ws, "one", LocalCompute(max_concurrent_runs=1))  # no GPUs: a run slot only
    src = tmp_path / "src"
    write_script(src, "gpu.py", GATED)
    gate = tmp_path / "gate"
    exp = Experiment(ws, "slots")
    first = exp.submit(ScriptRunConfig(str(src), script="gpu.py", arguments=[str(gate)], compute_target="one"))
    wait_until(lambda: first.get_status() == "Running", timeout=30)
    impatient = exp.submit(ScriptRunConfig(str(src), script="gpu.py", arguments=[str(gate)], compute_target="one",
                                           max_queue_seconds=1))
    canceled = exp.submit(ScriptRunConfig(str(src), script="gpu.py", arguments=[str(gate)], compute_target="one"))
    wait_until(lambda: canceled.get_status() == "Queued" and canceled.get_details().get("queue_reason"), timeout=30)
    canceled.cancel()
    assert canceled.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    details = impatient.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "max_queue_seconds=1" in details["error"]["message"]
    assert "waiting for a run slot; 1 of max_concurrent_runs=1 running" in details["error"]["message"]
    for run in (impatient, canceled):  # neither started a rank
        assert not Path(run.workdir, "logs", "rank_0.txt").exists()
    gate.write_text("go")
    assert first.wait_for_completion()["status"] == "Completed"
    assert "devices None None" in _log(first)  # no GPUs declared, none given
    assert '"waiting": {}' in Path(ws.path, "local_alloc", "ledger.json").read_text()


def test_a_users_gpu_quota_holds_a_second_run_back(ws, tmp_path, monkeypatch) -> None:
    import getpass

    from torchyard.compute.local_alloc import Ledger

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ComputeTarget.attach(ws, "box", LocalCompute(gpus=4))
    Ledger(os.path.join(ws.path, "local_alloc")).set_quota(f"user:{getpass.getuser()}", 1, None)
    src = tmp_path / "src"
    write_script(src, "gpu.py", GATED)
    gate = tmp_path / "gate"
    exp = Experiment(ws, "quota")
    runs = [exp.submit(ScriptRunConfig(str(src), script="gpu.py", arguments=[str(gate)], compute_target="box",
                                       use_gpu=True)) for _ in range(2)]
    wait_until(lambda: sorted(r.get_status() for r in runs) == ["Queued", "Running"], timeout=40, interval=0.2)
    waiting = next(r for r in runs if r.get_status() == "Queued")
    wait_until(lambda: "quota" in (waiting.get_details().get("queue_reason") or ""), timeout=10)
    assert "1 of 1 GPU in use" in waiting.get_details()["queue_reason"]  # 3 GPUs are free: the quota holds it
    gate.write_text("go")
    for run in runs:
        assert run.wait_for_completion(timeout=60)["status"] == "Completed"
