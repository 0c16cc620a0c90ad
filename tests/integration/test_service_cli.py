"""``torchyard service list|show|logs|delete`` over a real local service, and a deploy whose serving
packages are missing refused before anything is created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchyard import InferenceConfig, LocalWebservice, Model, Webservice, Workspace
from torchyard.errors import NotFoundError, NotSupportedError

SCORE = """
import json
def init():
    pass
def run(raw):
    return {"echo": json.loads(raw)}
"""


def ty(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torchyard", "--workspace", str(ws.path), *args],
                          capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


def test_the_service_commands_over_a_real_service(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("w")
    model = Model.register(ws, str(tmp_path / "m.txt"), "echo-model")
    src = tmp_path / "svc"
    src.mkdir()
    (src / "score.py").write_text(textwrap.dedent(SCORE))
    svc = Model.deploy(ws, "echo-svc", [model], InferenceConfig(entry_script="score.py", source_directory=str(src)),
                       LocalWebservice.deploy_configuration())
    try:
        svc.wait_for_deployment(timeout_sec=60)
        listed = ty(ws, "service", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert row["name"] == "echo-svc" and row["state"] == "Healthy" and row["models"] == ["echo-model:1"]
        assert row["scoring_uri"] == svc.scoring_uri
        table = ty(ws, "service", "list")
        assert "echo-svc" in table.stdout and "Healthy" in table.stdout
        shown = ty(ws, "service", "show", "echo-svc")
        assert shown.returncode == 0 and "state:       Healthy" in shown.stdout and "score.py" in shown.stdout
        assert json.loads(ty(ws, "service", "show", "echo-svc", "--json").stdout)["name"] == "echo-svc"
        logs = ty(ws, "service", "logs", "echo-svc", "--lines", "20")
        assert logs.returncode == 0 and "==> service.txt <==" in logs.stdout
        unknown = ty(ws, "service", "show", "nope")
        assert unknown.returncode == 2 and "no service 'nope'" in unknown.stderr and "echo-svc" in unknown.stderr
        deleted = ty(ws, "service", "delete", "echo-svc")
        assert deleted.returncode == 0, deleted.stderr
        with pytest.raises(NotFoundError):
            Webservice(ws, "echo-svc")
        assert json.loads(ty(ws, "service", "list", "--json").stdout) == []
    finally:
        try:
            Webservice(ws, "echo-svc").delete()
        except NotFoundError:
            pass


def test_a_deploy_without_the_serving_extra_creates_nothing(ws: Workspace, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    (tmp_path / "m.txt").write_text("w")
    model = Model.register(ws, str(tmp_path / "m.txt"), "m")
    src = tmp_path / "svc"
    src.mkdir()
    (src / "score.py").write_text(textwrap.dedent(SCORE))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(NotSupportedError, match=r'pip install "torchyard\[serve\]"'):
        Model.deploy(ws, "svc", [model], InferenceConfig(entry_script="score.py", source_directory=str(src)))
    assert not os.path.exists(os.path.join(ws.path, "services", "svc"))
    monkeypatch.undo()
    assert Webservice.list(ws) == []
