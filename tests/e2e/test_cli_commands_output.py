"""The output options of docs/guides/cli.md through the real `torchyard` command: one shape in JSON and
YAML, --json the same as -o json, ISO-8601 UTC times beside epoch ones, plain text off a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import yaml


def ty(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "torchyard", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_output_formats_of_the_cli_guide(tmp_path: Path) -> None:
    ty("init", cwd=tmp_path)
    (tmp_path / "model.pt").write_bytes(b"weights")
    ty("model", "register", "digits", "model.pt", "--tag", "stage=dev", cwd=tmp_path)

    as_json = json.loads(ty("model", "list", "-o", "json", cwd=tmp_path).stdout)
    assert json.loads(ty("model", "list", "--json", cwd=tmp_path).stdout) == as_json
    assert yaml.safe_load(ty("model", "list", "-o", "yaml", cwd=tmp_path).stdout) == as_json
    (model,) = as_json
    assert model["id"] == "digits:1" and model["tags"] == {"stage": "dev"}
    assert isinstance(model["created_at"], float) and model["created_utc"].endswith("Z")
    parsed = datetime.fromisoformat(model["created_utc"].replace("Z", "+00:00"))
    assert abs(parsed.timestamp() - model["created_at"]) < 0.001 and parsed.utcoffset() == timedelta(0)

    shown = yaml.safe_load(ty("model", "show", "digits:1", "-o", "yaml", cwd=tmp_path).stdout)
    assert shown == model  # one shape for a version, listed or shown

    table = ty("model", "list", cwd=tmp_path, env={"NO_COLOR": "1"}).stdout
    assert "digits:1" in table and "stage=dev" in table and "\x1b[" not in table

    targets = json.loads(ty("compute", "list", "-o", "json", cwd=tmp_path).stdout)
    assert {"name": "local", "kind": "local", "config": {}} in targets
    assert json.loads(ty("runs", "list", "-o", "json", cwd=tmp_path).stdout) == []
    assert yaml.safe_load(ty("env", "list", "-o", "yaml", cwd=tmp_path).stdout) == {"registered": [], "cached": []}


def test_completion_scripts_print(tmp_path: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        script = ty("completion", shell, cwd=tmp_path).stdout
        assert "runs" in script and "--output" in script, shell


def test_run_and_submit_print_yaml_as_they_print_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    (tmp_path / "noop.py").write_text("pass\n")
    (tmp_path / "job.yml").write_text("code: .\nentry_script: noop.py\n")
    base = [sys.executable, "-m", "torchyard", "--workspace", str(tmp_path / ".torchyard")]
    for argv in (["run", "--source-dir", str(tmp_path), "--entry", "noop.py", "-o", "yaml"],
                 ["submit", str(tmp_path / "job.yml"), "-o", "yaml"],
                 ["run", "--source-dir", str(tmp_path), "--entry", "noop.py", "--wait", "-o", "yaml"]):
        out = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
                             env={**__import__("os").environ, "TORCHYARD_AGENT": "0"})
        assert out.returncode == 0, out.stderr
        doc = yaml.safe_load(out.stdout)
        assert doc.get("run_id") or doc.get("runId"), out.stdout
