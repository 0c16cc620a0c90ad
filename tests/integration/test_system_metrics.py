"""System metrics of a real run on local compute: the launcher samples its node into the journals
(torchyard.launch.sampler) and the supervisor stores them as rank 0's ``system/...`` series."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_script

from torchyard import Experiment, ScriptRunConfig
from torchyard.paths import RunPaths


def test_a_three_second_run_has_system_metrics(ws, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_script(src, "busy.py", """
        import time
        from torchyard import Run
        run = Run.get_context()
        end = time.time() + 3
        while time.time() < end:
            sum(i * i for i in range(10000))
        run.log("done", 1)
        """)
    run = Experiment(ws, "sys").submit(ScriptRunConfig(
        str(src), script="busy.py", environment_variables={"TORCHYARD_SYSTEM_METRICS_SECONDS": "0.5"}))
    assert run.wait_for_completion()["status"] == "Completed"
    metrics = run.get_metrics()  # rank 0: its own metrics and its node's system/... series
    assert metrics["done"] == 1
    cpu = metrics["system/cpu_percent"]
    assert isinstance(cpu, list) and len(cpu) >= 3
    assert all(0.0 <= v <= 100.0 * 1024 for v in cpu)
    assert len(metrics["system/memory_percent"]) == len(cpu)
    assert "system/disk_read_mb_s" in metrics or "system/net_recv_mb_s" in metrics
    assert set(run.get_metrics(rank="all")) == {0}
    from torchyard.runtime.summary import execution_summary

    summary = execution_summary(ws.store, ws.store.get_run(run.id))
    assert "Metrics: done=1" in summary and "system/" not in summary  # the samples stay out of the summary


def test_sampling_is_off_with_zero(ws, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_script(src, "nap.py", "import time; time.sleep(1.2)\n")
    run = Experiment(ws, "sys").submit(ScriptRunConfig(
        str(src), script="nap.py", environment_variables={"TORCHYARD_SYSTEM_METRICS_SECONDS": "0"}))
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_metrics() == {}
    journal = Path(RunPaths(run.workdir).journal)
    assert journal.is_dir() and not (journal / "system").exists()


def test_gpu_series_where_nvml_sees_a_gpu(ws, tmp_path: Path) -> None:
    """On a GPU machine with nvidia-ml-py (scripts/gpu_check.sh); skipped cleanly elsewhere."""
    import pytest

    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001
        count = 0
    if not count:
        pytest.skip("no GPU that NVML sees")
    src = tmp_path / "src"
    write_script(src, "nap.py", "import time; time.sleep(2)\n")
    run = Experiment(ws, "sys").submit(ScriptRunConfig(
        str(src), script="nap.py", environment_variables={"TORCHYARD_SYSTEM_METRICS_SECONDS": "0.5"}))
    assert run.wait_for_completion()["status"] == "Completed"
    metrics = run.get_metrics()
    for name in ("utilization_percent", "memory_used_gb", "temperature_c"):
        assert f"system/gpu_0/{name}" in metrics, sorted(metrics)


def test_top_shows_a_running_runs_node(ws, tmp_path: Path, capsys) -> None:
    import json

    from tests.conftest import wait_until

    from torchyard.cli.main import main

    src = tmp_path / "src"
    gate = tmp_path / "gate"
    write_script(src, "wait.py", f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
    run = Experiment(ws, "sys").submit(ScriptRunConfig(
        str(src), script="wait.py", environment_variables={"TORCHYARD_SYSTEM_METRICS_SECONDS": "0.3"}))
    try:
        def rows():
            capsys.readouterr()
            assert main(["--workspace", ws.path, "top", "--once", "-o", "json"]) == 0
            return [r for r in json.loads(capsys.readouterr().out) if r["run_id"] == run.id]

        found = wait_until(rows, timeout=30, interval=0.3)
        assert found[0]["node"] == 0 and found[0]["rank"] == 0 and found[0]["cpu_percent"] is not None
        assert main(["--workspace", ws.path, "top", "--once"]) == 0
        table = capsys.readouterr().out
        assert run.id in table and "cpu %" in table
    finally:
        gate.write_text("go")
    assert run.wait_for_completion()["status"] == "Completed"
