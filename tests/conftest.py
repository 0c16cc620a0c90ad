"""Shared fixtures: an isolated workspace and small real scripts to run in it."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TORCHYARD_WORKSPACE", "TORCHYARD_DB_URL", "TORCHYARD_RUN_ID", "TORCHYARD_JOURNAL_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCHYARD_AGENT_IDLE", "20")  # agents the CLI tests start go away soon after
    # no system/... metrics unless a test asks (a run's metrics stay exactly what its script logged)
    monkeypatch.setenv("TORCHYARD_SYSTEM_METRICS_SECONDS", "0")


@pytest.fixture
def ws(tmp_path: Path):
    from torchyard import Workspace

    workspace = Workspace(path=tmp_path / ".torchyard")
    yield workspace
    if workspace._store is not None:
        workspace._store.dispose()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test credentials for the throwaway S3 server, and nothing of the machine's AWS setup."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def write_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A source folder with small, torch-free scripts."""
    folder = tmp_path / "src"
    write_script(
        folder,
        "ok.py",
        """
        import os, sys
        from torchyard import Run
        run = Run.get_context()
        print("hello from", os.environ["RANK"], "args", sys.argv[1:], flush=True)
        for i in range(3):
            run.log("loss", 1.0 / (i + 1), step=i)
        run.log("final", 0.5)
        run.log_list("lst", [1, 2, 3])
        run.log_row("row", epoch=1, acc=0.5)
        run.log_row("row", epoch=2, acc=0.75)
        run.log_table("tbl", {"a": [1, 2], "b": [3, 4]})
        run.tag("phase", "done")
        run.add_properties({"commit": "abc"})
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/result.txt", "w") as fh:
            fh.write("42")
        with open("extra.txt", "w") as fh:
            fh.write("uploaded")
        run.upload_file("reports/extra.txt", "extra.txt")
        with open("pic.png", "wb") as fh:
            fh.write(bytes([137, 80, 78, 71, 13, 10, 26, 10]))
        run.log_image("sample", path="pic.png")
        """,
    )
    write_script(
        folder,
        "fail.py",
        """
        print("about to fail", flush=True)
        def inner():
            raise ValueError("boom at step 7")
        inner()
        """,
    )
    write_script(
        folder,
        "sleep.py",
        """
        import sys, time
        from torchyard import Run
        run = Run.get_context()
        print("sleeping", flush=True)
        for i in range(int(float(sys.argv[1]) * 10) if len(sys.argv) > 1 else 600):
            run.log("tick", i)
            time.sleep(0.1)
        """,
    )
    write_script(folder, "noop.py", "pass\n")
    return folder


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def run_processes(run_dir: str) -> list:
    """Every live process whose command line or cwd mentions the run folder."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if run_dir in cmd or (proc.info["cwd"] or "").startswith(run_dir):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


PYTHON = sys.executable
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


@pytest.fixture
def ckdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint folder for ranks simulated in one process (RANK set per save): world of 2."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setenv("TORCHYARD_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHYARD_ATTEMPT", "0")
    monkeypatch.delenv("TORCHYARD_RESUME_FROM", raising=False)
    return folder


def save_part(monkeypatch: pytest.MonkeyPatch, rank: int, step: int, **kw: object) -> None:
    """Rank ``rank`` enters checkpoint ``step`` (``run.checkpoint``'s keywords in ``kw``) and writes its part."""
    from torchyard.tracking.checkpoint import CheckpointMixin

    monkeypatch.setenv("RANK", str(rank))
    with CheckpointMixin().checkpoint(step, **kw) as folder:  # type: ignore[arg-type]
        (folder / f"part_{rank}.txt").write_text(f"{step}")
