"""Environments built with uv, for real: cache miss and hit, one build for concurrent runs, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import write_script

from torchyard import (
    Environment,
    Experiment,
    NotFoundError,
    NotSupportedError,
    PyTorch,
    ScriptRunConfig,
    SpecError,
)
from torchyard.environments import conda_create_argv, environment_key, index_options, prune
from torchyard.spec.job import EnvironmentSpec

PKG = "tomli-w==1.2.0"  # tiny, pure Python, not in the base interpreter

SCRIPT = """
import json, os, sys
import tomli_w
import torch  # the layered environment sees the packages of the venv torchyard is installed in
from torchyard import Run
run = Run.get_context()
names = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHYARD_RUN_ID", "TORCHYARD_OUTPUT_DIR",
         "AZ_BATCHAI_TASK_INDEX", "AZUREML_NODE_COUNT"]
os.makedirs("outputs", exist_ok=True)
with open(f"outputs/seen_{os.environ['RANK']}.json", "w") as fh:
    json.dump({"python": sys.executable, "env": {n: os.environ.get(n) for n in names}}, fh)
run.log("ok", 1)
"""


@pytest.fixture
def envsrc(tmp_path: Path) -> Path:
    folder = tmp_path / "envsrc"
    write_script(folder, "use_pkg.py", SCRIPT)
    return folder


def test_build_then_cache_hit_and_the_contract_inside(ws, envsrc):
    exp = Experiment(ws, "env")
    first = exp.submit(PyTorch(str(envsrc), entry_script="use_pkg.py", pip_packages=[PKG],
                               process_count_per_node=2, distributed_backend="pytorch"))
    assert first.wait_for_completion(timeout=180)["status"] == "Completed"
    env = first.get_environment()
    assert env["cached"] is False and env["key"]
    assert PKG in env["packages"]
    log = (Path(first.workdir) / "logs" / "environment.txt").read_text()
    assert "uv pip install" in log and "built in" in log
    for rank in range(2):
        seen = json.loads((Path(first.workdir) / "outputs" / f"seen_{rank}.json").read_text())
        assert seen["python"] == os.path.join(ws.path, "envs", env["key"], "bin", "python")
        assert seen["env"]["RANK"] == str(rank) and seen["env"]["WORLD_SIZE"] == "2"
        assert seen["env"]["TORCHYARD_RUN_ID"] == first.id
        assert all(v is not None for v in seen["env"].values())
    second = exp.submit(PyTorch(str(envsrc), entry_script="use_pkg.py", pip_packages=[PKG]))
    assert second.wait_for_completion(timeout=120)["status"] == "Completed"
    assert second.get_environment()["cached"] is True
    assert second.get_environment()["key"] == env["key"]
    out = subprocess.run([sys.executable, "-m", "torchyard", "--workspace", ws.path, "env", "export", first.id],
                         capture_output=True, text=True, check=True).stdout
    assert PKG in out.splitlines()


def test_concurrent_runs_build_once(ws, envsrc):
    exp = Experiment(ws, "env")
    pkgs = [PKG, "six==1.16.0"]
    runs = [exp.submit(ScriptRunConfig(str(envsrc), script="use_pkg.py", environment=Environment("two", pip=pkgs)))
            for _ in range(2)]
    for run in runs:
        assert run.wait_for_completion(timeout=180)["status"] == "Completed"
    built = [run.get_environment()["cached"] for run in runs]
    logs = [(Path(run.workdir) / "logs" / "environment.txt").read_text() for run in runs]
    assert sum("uv pip install" in log for log in logs) == 1, logs
    assert sorted(built) == [False, True]
    key = runs[0].get_environment()["key"]
    assert [e for e in os.listdir(os.path.join(ws.path, "envs")) if e == key] == [key]


def test_bad_package_fails_at_preparing_and_leaves_nothing(ws, envsrc):
    bad = "torchyard-no-such-package-xyz==0.0.1"
    run = Experiment(ws, "env").submit(PyTorch(str(envsrc), entry_script="use_pkg.py", pip_packages=[bad]))
    details = run.wait_for_completion(raise_on_error=False, timeout=180)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Preparing"
    assert "torchyard-no-such-package-xyz" in details["error"]["message"]
    assert "Running" not in [h["status"] for h in details["statusHistory"]]
    assert not (Path(run.workdir) / "logs" / "rank_0.txt").exists()
    key = environment_key(EnvironmentSpec(pip_packages=(bad,)))
    assert not os.path.exists(os.path.join(ws.path, "envs", key))


def test_conda_without_an_executable_fails_at_submit(ws, envsrc, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NotSupportedError) as info:
        Experiment(ws, "env").submit(PyTorch(str(envsrc), entry_script="use_pkg.py", conda_packages=["numpy"]))
    assert info.value.field == "conda_packages"
    assert "conda, mamba or micromamba" in str(info.value)


def test_conda_command_construction(tmp_path):
    spec = EnvironmentSpec(conda_packages=("numpy=2", "scipy"), python="3.11")
    assert conda_create_argv("/bin/micromamba", "/p", spec) == [
        "/bin/micromamba", "create", "--yes", "--prefix", "/p", "python=3.11", "numpy=2", "scipy"]
    dep = tmp_path / "env.yml"
    dep.write_text("dependencies: [numpy]\n")
    spec = EnvironmentSpec(conda_dependencies_file=str(dep))
    assert conda_create_argv("conda", "/p", spec) == ["conda", "env", "create", "--yes", "--prefix", "/p", "--file", str(dep)]


def test_key_follows_content(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("six\n")
    a = environment_key(EnvironmentSpec(pip_packages=("a", "b"), pip_requirements_file=str(req)))
    assert a == environment_key(EnvironmentSpec(pip_packages=("b", "a"), pip_requirements_file=str(req)))
    req.write_text("six==1.16.0\n")
    assert a != environment_key(EnvironmentSpec(pip_packages=("a", "b"), pip_requirements_file=str(req)))


def test_index_options_follow_pip_config(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = https://example.invalid/simple\nfind-links = {tmp_path}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    opts = index_options()
    assert opts[opts.index("--index-url"):opts.index("--index-url") + 2] == ["--index-url", "https://example.invalid/simple"]
    assert str(tmp_path) in opts


def test_registry_versions_and_use_in_a_job(ws, envsrc, tmp_path):
    reg = ws.environments
    one = Environment("tools", pip=[PKG]).register(ws)
    assert one.version == "1"
    assert Environment("tools", pip=[PKG]).register(ws).version == "1"  # same content: same version
    two = reg.register(Environment("tools", pip=[PKG, "six==1.16.0"]))
    assert two.version == "2"
    assert Environment.get(ws, "tools") == two and reg.get("tools", "1") == one
    assert "tools" in reg and list(reg) == ["tools"]
    with pytest.raises(SpecError, match="immutable"):
        reg.register(Environment("tools", "1", pip=["other"]))
    with pytest.raises(NotFoundError, match="registered: tools"):
        reg.get("nope")
    job = tmp_path / "job.yml"
    job.write_text(f"code: {envsrc}\nentry_script: use_pkg.py\nenvironment: tools:1\n")
    from torchyard.spec.jobfile import load_job_file

    run = Experiment(ws, "env").submit(load_job_file(str(job)).spec)
    assert run.wait_for_completion(timeout=180)["status"] == "Completed"
    assert PKG in run.get_environment()["packages"]
    job.write_text(f"code: {envsrc}\nentry_script: use_pkg.py\nenvironment: missing-env\n")
    with pytest.raises(NotFoundError, match="no environment 'missing-env'"):
        Experiment(ws, "env").submit(load_job_file(str(job)).spec)


def test_prune_keeps_what_is_in_use(ws, envsrc):
    run = Experiment(ws, "env").submit(PyTorch(str(envsrc), entry_script="use_pkg.py", pip_packages=[PKG]))
    run.wait_for_completion(timeout=180)
    key = run.get_environment()["key"]
    assert prune(ws.path, 0, in_use={key}) == []
    assert prune(ws.path, 3600, in_use=set()) == []  # used just now
    assert prune(ws.path, 0, in_use=set()) == [key]
    assert not os.path.exists(os.path.join(ws.path, "envs", key))
