"""Versioned file datasets with Azure's names: a version shows the contents it was registered with
(never newer ones, the gap Azure's users met), in a local folder and in an S3 bucket (moto's server),
and lineage both ways (a run records the versions it read; a version lists its runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import write_script

from torchyard import Workspace
from torchyard.azureml.core import Dataset, Experiment, ScriptRunConfig
from torchyard.errors import DataError, NotFoundError, SpecError

READ = """
import argparse, json, os
from torchyard import Run
p = argparse.ArgumentParser(); p.add_argument("--data")
a = p.parse_args()
files = sorted(os.path.relpath(os.path.join(d, f), a.data) for d, _s, fs in os.walk(a.data) for f in fs)
print("FILES " + json.dumps({f: open(os.path.join(a.data, f)).read() for f in files}), flush=True)
"""


def _files_seen(run) -> dict[str, str]:
    for line in Path(run.workdir, "logs", "rank_0.txt").read_text().splitlines():
        if line.startswith("FILES "):
            return dict(json.loads(line[6:]))
    raise AssertionError("the script printed no FILES line")


def test_versions_keep_their_contents_and_runs_record_what_they_read(ws: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "digits-data"
    data.mkdir()
    (data / "a.txt").write_text("one")
    v1 = Dataset.File.from_files(path=str(data)).register(ws, "digits", description="first")
    assert (v1.id, v1.version) == ("digits:1", 1)
    assert Dataset.File.from_files(str(data)).register(ws, "digits").version == 1  # same contents: the same version
    (data / "a.txt").write_text("two")
    (data / "b.txt").write_text("new")
    with pytest.raises(SpecError, match="create_new_version=True"):
        Dataset.File.from_files(str(data)).register(ws, "digits")
    v2 = Dataset.File.from_files(str(data)).register(ws, "digits", create_new_version=True)
    assert v2.version == 2 and v2.digest != v1.digest
    write_script(tmp_path / "src", "read.py", READ)
    exp = Experiment(ws, "data")
    old = Dataset.get_by_name(ws, "digits", version=1)
    run1 = exp.submit(ScriptRunConfig(str(tmp_path / "src"), script="read.py",
                                      arguments=["--data", old.as_named_input("digits").as_mount()]))
    run1.wait_for_completion(timeout=60, raise_on_error=False)
    assert run1.get_status() == "Completed", run1.get_details().get("error")
    assert _files_seen(run1) == {"a.txt": "one"}  # version 1 as registered, though the folder changed
    latest = Dataset.get_by_name(ws, "digits")
    run2 = exp.submit(ScriptRunConfig(str(tmp_path / "src"), script="read.py",
                                      arguments=["--data", latest.as_named_input("digits").as_download()]))
    run2.wait_for_completion(timeout=60, raise_on_error=False)
    assert _files_seen(run2) == {"a.txt": "two", "b.txt": "new"}
    assert run1.get_properties()["torchyard.dataset.digits"] == "digits:1"
    assert run2.get_properties()["torchyard.dataset.digits"] == "digits:2"
    assert old.get_runs() == [run1.id] and latest.get_runs() == [run2.id]
    assert latest.to_path() == ["a.txt", "b.txt"]
    with pytest.raises(NotFoundError, match="no version 9"):
        Dataset.get_by_name(ws, "digits", version=9)
    assert set(Dataset.get_all(ws)) == {"digits"}


def test_a_dataset_in_a_bucket_is_pinned_by_its_digest(ws: Workspace, tmp_path: Path, aws_env: None) -> None:
    import boto3
    import s3server

    from torchyard import Datastore

    if s3server.unavailable_reason():
        pytest.skip(str(s3server.unavailable_reason()))
    with s3server.S3Server() as server:
        client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        client.create_bucket(Bucket="data")
        client.close()
        store = Datastore.register_s3(ws, "bucket", "data", endpoint_url=server.endpoint_url)
        up = tmp_path / "up"
        up.mkdir()
        (up / "x.txt").write_text("v1")
        ds = Dataset.File.upload_directory(str(up), target=(store, "sets/x"), overwrite=True)
        v1 = ds.register(ws, "xs")
        assert v1.version == 1 and v1.to_path() == ["x.txt"]  # downloaded once, checked against the digest
        (up / "x.txt").write_text("v2, changed in the bucket")
        store.upload(str(up), target_path="sets/x", overwrite=True)
        (up / "x.txt").write_text("v2, changed in the bucket")
        again = Dataset.get_by_name(ws, "xs", 1)
        assert again.to_path() == ["x.txt"]  # already pinned: the registered contents stay
        v2 = Dataset.File.from_files((store, "sets/x")).register(ws, "xs", create_new_version=True)
        store.upload_files([str(up / "x.txt")], target_path="sets/x/extra", overwrite=True)
        with pytest.raises(DataError, match="changed since it was registered"):
            v2.to_path()  # never pinned before the bucket changed: refused, not silently newer
