"""Compute targets by name: attach, list, resolve, remove; RayCompute's settings; no ray at import."""

from __future__ import annotations

import json
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
    with pytest.raises(SpecError, match="unknown compute target 'ray-a'.*known targets: local"):
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
    text = target.prepare(job).describe()
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
