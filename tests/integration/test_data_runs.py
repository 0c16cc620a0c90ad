"""Datastores in real runs, against a real S3-compatible server (moto) started by the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import s3server
from tests.conftest import EXAMPLES

from torchyard import Experiment, PyTorch

BUCKET = "digits-bucket"



pytestmark = pytest.mark.usefixtures("aws_env")

@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    reason = s3server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with s3server.S3Server() as server:
        assert server.endpoint_url
        yield server.endpoint_url


@pytest.fixture
def digits_npz(tmp_path: Path) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path / "digits_data"
    folder.mkdir()
    np.savez(folder / "digits.npz", x=d.data, y=d.target)
    return folder


def _bucket(endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    finally:
        client.close()


def _digits(ds_ref, **kw):
    return PyTorch(str(EXAMPLES / "digits"), entry_script="train.py",
                   script_params={"--epochs": 3, "--data_dir": ds_ref, **kw.pop("params", {})}, **kw)


def test_digits_from_s3_with_an_s3_output_and_a_cached_rerun(ws, s3_url, digits_npz):
    from torchyard.data.datastore import Datastore

    _bucket(s3_url)
    ds = Datastore.register_s3(ws, "blobs", bucket=BUCKET, endpoint_url=s3_url)
    ds.upload(str(digits_npz), "digits")
    assert ds.list("digits") == ["digits/digits.npz"] or "digits.npz" in ds.list("digits")[0]
    exp = Experiment(ws, "data")
    est = _digits(ds.path("digits").as_download(), params={"--model_dir": "${{outputs.model}}"},
                  outputs={"model": {"type": "uri_folder", "path": ds.path("models/{run_id}/")}})
    first = exp.submit(est)
    details = first.wait_for_completion(timeout=300)
    assert details["status"] == "Completed"
    assert details["inputs"]["data_dir"]["bytes_downloaded"] > 0
    assert details["outputs"]["model"]["files"] == 1
    assert any(p.endswith(f"models/{first.id}/model.pt") for p in ds.list("models"))
    assert first.get_metrics()["accuracy"][-1] > 0.8
    second = exp.submit(est)
    details = second.wait_for_completion(timeout=300)
    assert details["status"] == "Completed"
    assert details["inputs"]["data_dir"]["bytes_downloaded"] == 0
    assert "0 B" in (Path(second.workdir) / "logs" / "inputs.txt").read_text() or \
        details["inputs"]["data_dir"]["files"] == 1


def test_digits_from_a_local_datastore_mounted(ws, digits_npz):
    from torchyard.data.datastore import Datastore

    ds = Datastore.register_local(ws, "localdata", str(digits_npz.parent))
    run = Experiment(ws, "data").submit(_digits(ds.path(digits_npz.name).as_mount()))
    details = run.wait_for_completion(timeout=300)
    assert details["status"] == "Completed"
    assert details["inputs"]["data_dir"]["path"] == str(digits_npz)
    assert details["inputs"]["data_dir"]["bytes_downloaded"] == 0


def test_default_datastore_and_env_names(ws, tmp_path):
    from tests.conftest import write_script

    ds = ws.get_default_datastore()
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    ds.upload(str(src), "texts")
    folder = tmp_path / "code"
    write_script(folder, "read.py", """
        import os, sys
        path = sys.argv[1]
        assert path == os.environ["TORCHYARD_INPUT_TEXT"] == os.environ["AZUREML_DATAREFERENCE_text"]
        print("read", open(os.path.join(path, "a.txt")).read(), flush=True)
    """)
    run = Experiment(ws, "data").submit(PyTorch(str(folder), entry_script="read.py", inputs={"text": ds.path("texts")},
                                                script_params={"${{inputs.text}}": ""}))
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    assert "read hello" in (Path(run.workdir) / "logs" / "rank_0.txt").read_text()


@pytest.mark.parametrize("case", ["unknown datastore", "missing path", "unreachable endpoint"])
def test_bad_inputs_fail_at_preparing(ws, s3_url, tmp_path, case):
    from torchyard.data import DataReference, Datastore

    if case == "unknown datastore":
        ref = DataReference("nope", "x")
        fragment = "nope"
    elif case == "missing path":
        _bucket(s3_url)
        ref = Datastore.register_s3(ws, "blobs2", bucket=BUCKET, endpoint_url=s3_url).path("no/such/prefix").as_download()
        fragment = "no/such/prefix"
    else:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ref = Datastore.register_s3(ws, "dead", bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{port}").path("x")
        fragment = "127.0.0.1"
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "never.py").write_text("open('started', 'w').close()\n")
    run = Experiment(ws, "data").submit(PyTorch(str(folder), entry_script="never.py", script_params={"--d": ref}))
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Preparing"
    assert fragment in details["error"]["message"]
    assert not os.path.exists(os.path.join(run.workdir, "started"))
    assert ws.get_run(run.id).get_status() == "Failed"  # recorded, nothing lost


def test_artifacts_in_an_s3_artifact_store(ws, s3_url, src, tmp_path):
    from torchyard import ScriptRunConfig
    from torchyard.data.datastore import Datastore

    _bucket(s3_url)
    store = Datastore.register_s3(ws, "artifacts", bucket=BUCKET, prefix="ws1", endpoint_url=s3_url)
    ws.set_artifact_store(store)
    assert ws.artifact_store().name == "artifacts"
    run = Experiment(ws, "data").submit(ScriptRunConfig(str(src), script="ok.py"))
    assert run.wait_for_completion(timeout=60)["status"] == "Completed"
    assert not os.path.exists(ws.artifacts_dir(run.id))  # they live in the bucket, not here
    names = run.get_file_names()
    assert {"outputs/result.txt", "logs/rank_0.txt", "reports/extra.txt"} <= set(names)
    assert f"ws1/artifacts/{run.id}/outputs/result.txt" in {p.split(BUCKET + "/")[-1] for p in store.list("")} or \
        f"artifacts/{run.id}/outputs/result.txt" in store.list("artifacts")
    got = run.download_file("outputs/result.txt", str(tmp_path / "r.txt"))
    assert Path(got).read_text() == "42"
    ws.set_artifact_store(None)
    assert ws.artifact_store() is None
    assert "outputs/result.txt" in ws.get_run(run.id).get_file_names()  # the run remembers where its files are
