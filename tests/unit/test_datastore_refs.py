"""DataReference (to/from dict) and the datastore registry: pure, tmp folders only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchyard.data import (
    DEFAULT_DATASTORE,
    DataError,
    DataReference,
    Datastore,
    DatastoreRegistry,
    default_datastore,
)
from torchyard.errors import NotFoundError, SpecError, TorchyardError


def test_data_error_is_a_torchyard_error() -> None:
    assert issubclass(DataError, TorchyardError)


def test_reference_round_trip_through_json() -> None:
    ref = DataReference("images", "train/set1/", "download", "imgs")
    data = ref.to_dict()
    assert data == {
        "datastore": "images",
        "path": "train/set1",
        "mode": "download",
        "path_on_compute": "imgs",
    }
    assert DataReference.from_dict(json.loads(json.dumps(data))) == ref
    assert DataReference.__torchyard_input__ is True
    assert ref.__torchyard_input__ is True


def test_reference_modes_are_new_objects() -> None:
    ref = DataReference("images", "a")
    assert ref.mode == "mount"
    down = ref.as_download("here")
    assert (down.mode, down.path_on_compute, ref.mode) == ("download", "here", "mount")
    assert down.as_mount().mode == "mount"
    assert down.as_mount().path_on_compute == "here"


def test_reference_from_url() -> None:
    s3 = DataReference.from_url("s3://bucket/prefix", "download")
    assert s3.to_dict() == {
        "datastore": None, "path": "", "mode": "download", "path_on_compute": None, "url": "s3://bucket/prefix",
    }  # fmt: skip
    assert DataReference.from_dict(s3.to_dict()) == s3
    local = DataReference.from_url("some/folder")
    assert local.url == os.path.abspath("some/folder")
    assert DataReference.from_url("file:///data/x").url == "/data/x"
    assert DataReference.from_url("memory://bucket/x").url == "memory://bucket/x"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"datastore": "a", "mode": "copy"}, "mode"),
        ({"datastore": "a", "path": "../etc"}, "path"),
        ({"datastore": "a", "path_on_compute": "/abs"}, "path_on_compute"),
        ({"datastore": "a", "path_on_compute": "x/../.."}, "path_on_compute"),
        ({"datastore": None}, "datastore"),
        ({"datastore": "a", "url": "s3://b/x"}, "datastore"),
        ({"datastore": "bad name"}, "datastore"),
    ],
)
def test_reference_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        DataReference(**kwargs)
    assert info.value.field == field


def test_reference_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(SpecError, match="unknown field 'bogus'"):
        DataReference.from_dict({"datastore": "a", "bogus": 1})


def test_registry_register_get_list(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    ws = str(tmp_path / "ws")
    ds = Datastore.register_local(ws, "mydata", folder)
    assert (ds.name, ds.kind, ds.url, ds.options) == ("mydata", "local", str(folder), {})
    s3 = Datastore.register_s3(
        ws, "bucket1", "my-bucket", prefix="/a/b/", endpoint_url="http://127.0.0.1:9000"
    )
    assert s3.url == "s3://my-bucket/a/b"
    assert s3.options == {"endpoint_url": "http://127.0.0.1:9000"}
    registry = DatastoreRegistry(ws)
    assert registry.names() == ["bucket1", "mydata"]
    assert list(registry) == ["bucket1", "mydata"]
    assert len(registry) == 2
    assert "mydata" in registry and "other" not in registry and 3 not in registry
    assert [d.name for d in registry.list()] == ["bucket1", "mydata"]
    assert Datastore.get(ws, "mydata") == ds
    assert registry["bucket1"] == s3
    assert sorted(os.listdir(os.path.join(ws, "datastores"))) == [
        "bucket1.json",
        "mydata.json",
    ]  # no temp files


def test_reregistering_replaces(tmp_path: Path) -> None:
    ws = str(tmp_path)
    Datastore.register_s3(ws, "b", "bucket-one")
    Datastore.register_s3(ws, "b", "bucket-two", profile="dev")
    got = Datastore.get(ws, "b")
    assert (got.url, got.options) == ("s3://bucket-two", {"profile": "dev"})


def test_unknown_datastore_lists_the_registered(tmp_path: Path) -> None:
    Datastore.register_s3(str(tmp_path), "alpha", "bucket-a")
    Datastore.register_s3(str(tmp_path), "beta", "bucket-b")
    with pytest.raises(NotFoundError, match=r"no datastore 'gamma'.*alpha, beta"):
        Datastore.get(str(tmp_path), "gamma")


def test_default_datastore_is_registered_on_first_use(ws) -> None:
    assert DEFAULT_DATASTORE not in DatastoreRegistry(ws)
    ds = default_datastore(ws.path)
    assert (ds.name, ds.kind, ds.url) == ("workspaceblobstore", "local", os.path.join(ws.path, "datastore"))
    assert os.path.isdir(ds.url)
    assert DEFAULT_DATASTORE in DatastoreRegistry(ws.path)
    assert default_datastore(ws) == ds
    other = Path(ws.path).parent / "fresh"
    assert Datastore.get(str(other), DEFAULT_DATASTORE).url == str(
        other / "datastore"
    )  # get registers it too


def test_registration_errors(tmp_path: Path) -> None:
    ws = str(tmp_path)
    with pytest.raises(DataError, match="is not an existing folder"):
        Datastore.register_local(ws, "x", tmp_path / "missing")
    with pytest.raises(SpecError, match="invalid datastore name"):
        Datastore.register_s3(ws, "bad/name", "bucket")
    with pytest.raises(SpecError, match="invalid bucket name"):
        Datastore.register_s3(ws, "b", "ab")
    with pytest.raises(SpecError, match="endpoint_url"):
        Datastore.register_s3(ws, "b", "bucket", endpoint_url="localhost:9000")
    with pytest.raises(SpecError, match="looks like a secret"):
        Datastore.register_fsspec(ws, "m", "memory://x", secret="hunter2")
    with pytest.raises(SpecError, match="looks like a secret"):
        Datastore.register_fsspec(ws, "m", "s3://bucket", key="AKIA")
    with pytest.raises(SpecError, match="no protocol"):
        Datastore.register_fsspec(ws, "m", "nosuchprotocol://x")
    with pytest.raises(SpecError, match="register_local"):
        Datastore.register_fsspec(ws, "m", "/a/folder")
    assert DatastoreRegistry(ws).names() == []


def test_fsspec_registration_keeps_options(tmp_path: Path) -> None:
    ds = Datastore.register_fsspec(str(tmp_path), "mem", "memory://bucket/", skip_instance_cache=False)
    assert (ds.kind, ds.url, ds.options) == ("fsspec", "memory://bucket", {"skip_instance_cache": False})
    stored = json.loads((tmp_path / "datastores" / "mem.json").read_text())
    assert stored["url"] == "memory://bucket"


def test_paths_and_references_of_a_datastore(tmp_path: Path) -> None:
    ds = Datastore("s", "s3", "s3://bucket/pre")
    assert ds.url_of("a/b.txt") == "s3://bucket/pre/a/b.txt"
    assert ds.url_of("") == "s3://bucket/pre"
    assert ds.path("a").to_dict() == {"datastore": "s", "path": "a", "mode": "mount", "path_on_compute": None}
    assert ds.as_mount() == DataReference("s", "", "mount")
    assert ds.as_download("x") == DataReference("s", "", "download", "x")
    local = Datastore("l", "local", str(tmp_path))
    assert local.url_of("a/b") == str(tmp_path / "a" / "b")


def test_import_loads_no_fsspec() -> None:
    code = "import sys, torchyard, torchyard.data; print(sorted(m for m in sys.modules if m.split('.')[0] in ('fsspec', 's3fs', 'botocore', 'aiobotocore')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_datastore_as_a_script_param_is_its_root_mounted(tmp_path):
    from torchyard import PyTorch
    from torchyard.data.datastore import Datastore

    (tmp_path / "train.py").write_text("pass\n")
    ds = Datastore("blobs", "local", str(tmp_path))
    spec = PyTorch(str(tmp_path), entry_script="train.py", script_params={"--data_dir": ds, "--n": 1}).spec
    assert spec.arguments == ("--data_dir", "${{inputs.data_dir}}", "--n", "1")
    assert spec.inputs == {"data_dir": {"datastore": "blobs", "path": "", "mode": "mount", "path_on_compute": None}}
