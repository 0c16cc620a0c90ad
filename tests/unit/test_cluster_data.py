"""Data on clusters, the pure parts: a local datastore is accepted at submit only on the target's
shared filesystem; ``credentials="forward"`` is checked, recorded by name, and decides which
credential variables a Slurm job's environment keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchyard import ComputeTarget, Datastore, PyTorch, RayCompute, SpecError
from torchyard.compute.slurm import SlurmCompute, job_environment
from torchyard.runtime.submit import bootstrap_request, check_job


def _job(src: Path, ref, target: str = "far"):
    (src / "t.py").write_text("print(1)\n")
    return PyTorch(str(src), entry_script="t.py", compute_target=target, script_params={"--data": ref}).to_job_spec()


def test_a_local_datastore_must_be_under_the_targets_shared_folders(ws, tmp_path):
    shared, private = tmp_path / "nfs", tmp_path / "mine"
    for folder in (shared / "sub", private):
        folder.mkdir(parents=True)
    ComputeTarget.attach(ws, "far", RayCompute(address="10.0.0.5:6379", shared_dirs=[str(shared)]))
    ok = Datastore.register_local(ws, "nfs", str(shared / "sub"))
    check_job(ws, _job(tmp_path, ok.path("").as_download()))  # under a shared folder: accepted
    s3 = Datastore.register_s3(ws, "blobs", "bucket-a", endpoint_url="http://10.0.0.9:9000")
    check_job(ws, _job(tmp_path, s3.path("x").as_download()))  # the nodes fetch object stores themselves
    bad = Datastore.register_local(ws, "mine", str(private))
    with pytest.raises(SpecError) as err:
        check_job(ws, _job(tmp_path, bad.path("").as_download()))
    message = str(err.value)
    assert "'mine'" in message and "'far'" in message and str(shared) in message
    assert str(shared) + "x" not in message
    (tmp_path / "nfsx").mkdir()  # a sibling whose name starts like the shared folder is not under it
    sibling = Datastore.register_local(ws, "sibling", str(tmp_path / "nfsx"))
    with pytest.raises(SpecError):
        check_job(ws, _job(tmp_path, sibling.path("").as_download()))
    ComputeTarget.attach(ws, "bare", RayCompute(address="10.0.0.5:6379"))
    with pytest.raises(SpecError, match="declares no shared filesystem"):
        check_job(ws, _job(tmp_path, ok.path("").as_download(), target="bare"))
    check_job(ws, _job(tmp_path, bad.path("").as_download(), target="local"))  # local compute sees every folder


def test_shared_paths_by_target():
    assert SlurmCompute(shared_dir="/scratch/me").shared_paths("/home/me/ws") == ("/scratch/me",)
    assert SlurmCompute().shared_paths("/home/me/ws") is None  # the workspace is on the shared filesystem
    assert RayCompute(shared_dirs=["/mnt/nfs"]).shared_paths("/w") == ("/mnt/nfs",)
    with pytest.raises(SpecError, match="shared_dirs"):
        RayCompute(shared_dirs=["relative/path"])


def test_forward_is_recorded_by_name_and_only_for_s3(ws, tmp_path, monkeypatch):
    with pytest.raises(SpecError, match="credentials"):
        Datastore.register_s3(ws, "b", "bucket-a", credentials="always")
    with pytest.raises(SpecError, match="credentials"):
        Datastore("x", "local", str(tmp_path), credentials="forward")
    fwd = Datastore.register_s3(ws, "fwd", "bucket-a", endpoint_url="http://10.0.0.9:9000", credentials="forward")
    assert Datastore.get(ws, "fwd").credentials == "forward"
    assert Datastore.get(ws, "fwd").to_dict()["credentials"] == "forward"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    ComputeTarget.attach(ws, "hpc", SlurmCompute(shared_dir=str(tmp_path / "scratch")))
    spec = _job(tmp_path, fwd.path("x").as_download(), target="hpc")
    request = bootstrap_request(ws, spec, SlurmCompute(shared_dir=str(tmp_path / "scratch")))
    assert request["forward_env"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert "s3cr3t-value" not in repr(request)  # names only, never values
    own = Datastore.register_s3(ws, "own", "bucket-a", endpoint_url="http://10.0.0.9:9000")
    assert bootstrap_request(ws, _job(tmp_path, own.path("x").as_download(), target="hpc"),
                             SlurmCompute(shared_dir=str(tmp_path / "scratch")))["forward_env"] == []


def test_a_slurm_job_environment_keeps_credentials_only_when_forwarded(ws, tmp_path, monkeypatch):
    from torchyard.runtime.submit import plan

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # no Slurm client needed: a pure plan
    ComputeTarget.attach(ws, "hpc", SlurmCompute(shared_dir=str(tmp_path / "scratch")))
    own = Datastore.register_s3(ws, "own", "bucket-a", endpoint_url="http://10.0.0.9:9000")
    fwd = Datastore.register_s3(ws, "fwd", "bucket-a", endpoint_url="http://10.0.0.9:9000", credentials="forward")
    stripped = job_environment(plan(ws, "e", _job(tmp_path, own.path("x").as_download(), target="hpc")).plan)
    assert "AWS_SECRET_ACCESS_KEY" not in stripped and "AWS_ACCESS_KEY_ID" not in stripped
    assert stripped["SOMETHING_ELSE"] == "kept"
    kept = job_environment(plan(ws, "e", _job(tmp_path, fwd.path("x").as_download(), target="hpc")).plan)
    assert kept["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value"
    described = plan(ws, "e", _job(tmp_path, fwd.path("x").as_download(), target="hpc")).describe()
    assert "s3cr3t-value" not in described  # the dry run shows names, never values
