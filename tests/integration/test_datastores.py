"""Datastores against a real S3-compatible server (moto's, in a subprocess) and real local folders."""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3server

from torchyard.data import (
    DataError,
    DataReference,
    Datastore,
    DatastoreRegistry,
    resolve_input,
    upload_output,
)
from torchyard.errors import NotFoundError, TorchyardError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-torchyard-secret"
KEY_ID = "AKIATORCHYARDTESTKEY"

TREE = {
    "a.txt": b"alpha\n",
    "sub/b.bin": bytes(range(256)) * 40,
    "sub/deeper/c.csv": b"x,y\n1,2\n",
}



pytestmark = pytest.mark.usefixtures("aws_env")

@pytest.fixture(scope="session")
def s3() -> Iterator[s3server.S3Server]:
    reason = s3server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with s3server.S3Server() as server:
        yield server


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: s3server.S3Server) -> str:
    name = f"tb-{uuid.uuid4().hex[:12]}"
    assert s3.endpoint_url
    client = _client(s3.endpoint_url)
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name


@pytest.fixture
def wsdir(tmp_path: Path) -> str:
    return str(tmp_path / "ws")


def make_tree(folder: Path, tree: dict[str, bytes] = TREE) -> Path:
    for rel, data in tree.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def read_tree(folder: str | Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath, name)
            out[path.relative_to(folder).as_posix()] = path.read_bytes()
    return out


@pytest.fixture
def s3ds(s3: s3server.S3Server, bucket: str, wsdir: str, tmp_path: Path) -> Datastore:
    ds = Datastore.register_s3(wsdir, "bucketds", bucket, prefix="team", endpoint_url=s3.endpoint_url)
    assert ds.upload(make_tree(tmp_path / "src"), target_path="data") == len(TREE)
    return ds


# ---- S3 -----------------------------------------------------------------------------------------


def test_upload_list_download(s3ds: Datastore, tmp_path: Path, s3: s3server.S3Server, bucket: str) -> None:
    assert s3ds.list() == sorted(f"data/{rel}" for rel in TREE)
    assert s3ds.list("data/sub") == ["data/sub/b.bin", "data/sub/deeper/c.csv"]
    assert s3ds.list("nothing-here") == []
    client = _client(s3.endpoint_url or "")
    try:
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    finally:
        client.close()
    assert keys == sorted(f"team/data/{rel}" for rel in TREE)
    assert s3ds.download(tmp_path / "dl", prefix="data") == len(TREE)
    assert read_tree(tmp_path / "dl") == {f"data/{rel}": data for rel, data in TREE.items()}
    assert s3ds.download(tmp_path / "dl", prefix="data", overwrite=False) == 0
    assert s3ds.upload(tmp_path / "src", target_path="data", overwrite=False) == 0
    (tmp_path / "one.txt").write_bytes(b"1")
    assert s3ds.upload_files([tmp_path / "one.txt"], target_path="single") == 1
    assert s3ds.list("single") == ["single/one.txt"]


def test_registration_stores_no_secret(
    s3: s3server.S3Server, bucket: str, wsdir: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    ds = Datastore.register_s3(wsdir, "secretive", bucket, endpoint_url=s3.endpoint_url, profile=None)
    ds.upload(make_tree(tmp_path / "src"))  # used with those credentials (moto accepts any)
    Datastore.register_s3(wsdir, "profiled", bucket, endpoint_url=s3.endpoint_url, profile="dev")
    for name in ("secretive", "profiled"):
        text = Path(wsdir, "datastores", f"{name}.json").read_text()
        assert SECRET not in text and KEY_ID not in text
        stored = json.loads(text)
        assert set(stored) == {"name", "kind", "url", "options", "registered"}
        assert set(stored["options"]) <= {"endpoint_url", "profile"}
    assert json.loads(Path(wsdir, "datastores", "profiled.json").read_text())["options"]["profile"] == "dev"


def test_resolve_download_uses_the_cache(s3ds: Datastore, wsdir: str, tmp_path: Path) -> None:
    total = sum(len(d) for d in TREE.values())
    ref = s3ds.path("data").as_download().to_dict()
    log = io.StringIO()
    cold = resolve_input(wsdir, ref, str(tmp_path / "run1" / "in"), log)
    assert cold == {
        "path": str(tmp_path / "run1" / "in"), "mode": "download", "files": len(TREE),
        "bytes_downloaded": total, "bytes_total": total,
    }  # fmt: skip
    assert read_tree(cold["path"]) == TREE
    assert f"{len(TREE)} file(s)" in log.getvalue()
    warm = resolve_input(wsdir, ref, str(tmp_path / "run2" / "in"), log)
    assert (warm["bytes_downloaded"], warm["bytes_total"], warm["files"]) == (0, total, len(TREE))
    assert read_tree(warm["path"]) == TREE
    assert os.path.isdir(os.path.join(wsdir, "datacache"))
    # one object changes: only it is fetched again
    changed = tmp_path / "changed"
    make_tree(changed, {"a.txt": b"alpha, version two\n"})
    s3ds.upload(changed, target_path="data")
    third = resolve_input(wsdir, ref, str(tmp_path / "run3" / "in"), log)
    assert third["bytes_downloaded"] == len(b"alpha, version two\n")
    assert read_tree(third["path"])["a.txt"] == b"alpha, version two\n"
    assert read_tree(warm["path"])["a.txt"] == b"alpha\n"  # the earlier run's copy is untouched


def test_presigned_inputs_are_read_with_no_credentials(
    s3: s3server.S3Server, bucket: str, wsdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``credentials="presigned"``: the submitter signs one URL per object (its secret is in none),
    a process with no AWS variables at all fetches exactly those, through the cache the second time;
    a URL that is refused fails naming the object."""
    from urllib.parse import parse_qs, urlsplit

    from torchyard.data.transfer import presign_input

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("TORCHYARD_PRESIGN_SECONDS", "600")
    ds = Datastore.register_s3(wsdir, "signed", bucket, prefix="team", endpoint_url=s3.endpoint_url,
                               credentials="presigned")
    assert json.loads(Path(wsdir, "datastores", "signed.json").read_text())["credentials"] == "presigned"
    ds.upload(make_tree(tmp_path / "src"), target_path="data")
    ref = ds.path("data").as_download().to_dict()
    signed = presign_input(ds, ref)
    assert [f["rel"] for f in signed["files"]] == sorted(TREE)
    text = json.dumps(signed)
    assert SECRET not in text and time.time() + 500 < signed["expires_at"] < time.time() + 700
    for entry in signed["files"]:
        query = parse_qs(urlsplit(entry["url"]).query)
        assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Credential"][0].startswith(KEY_ID + "/")
        assert urlsplit(entry["url"]).path.endswith(f"/team/data/{entry['rel']}")  # one object each
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # the node: no credentials of any kind
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    total = sum(len(d) for d in TREE.values())
    node = str(tmp_path / "nodecache")
    log = io.StringIO()
    cold = resolve_input(node, ref, str(tmp_path / "run1" / "in"), log, store=ds, presigned=signed)
    assert (cold["files"], cold["bytes_downloaded"], cold["bytes_total"]) == (len(TREE), total, total)
    assert read_tree(cold["path"]) == TREE
    warm = resolve_input(node, ref, str(tmp_path / "run2" / "in"), log, store=ds, presigned=signed)
    assert (warm["bytes_downloaded"], warm["files"]) == (0, len(TREE)) and read_tree(warm["path"]) == TREE
    with pytest.raises(DataError, match="no S3 credentials found"):  # the credentialed path, for contrast
        resolve_input(str(tmp_path / "other"), ref, str(tmp_path / "run3" / "in"), log, store=ds)
    broken = {**signed, "files": [{**signed["files"][0], "url": signed["files"][0]["url"].replace("/data/", "/gone/"),
                                    "identity": None}]}
    with pytest.raises(DataError, match=r"object 'a.txt' through its presigned URL: HTTP 40\d"):
        resolve_input(node, ref, str(tmp_path / "run4" / "in"), log, store=ds, presigned=broken)
    hostile = {**signed, "files": [{**signed["files"][0], "rel": "../../escape.txt"}]}
    with pytest.raises(DataError, match="leaves the input folder"):
        resolve_input(node, ref, str(tmp_path / "run5" / "in"), log, store=ds, presigned=hostile)
    with pytest.raises(TorchyardError, match="'presigned' is for S3 datastores"):
        Datastore("x", "local", str(tmp_path), credentials="presigned")


def test_resolve_s3_mount_downloads_and_says_so(
    s3ds: Datastore, wsdir: str, tmp_path: Path, bucket: str
) -> None:
    log = io.StringIO()
    got = resolve_input(wsdir, s3ds.path("data/sub").to_dict(), str(tmp_path / "in"), log)
    assert got["mode"] == "download"
    assert read_tree(got["path"]) == {"b.bin": TREE["sub/b.bin"], "deeper/c.csv": TREE["sub/deeper/c.csv"]}
    assert (
        f"mount of s3://{bucket}/team/data/sub needs a FUSE filesystem (s3fs-fuse); downloading instead"
        in log.getvalue()
    )


def test_resolve_single_file(s3ds: Datastore, wsdir: str, tmp_path: Path) -> None:
    got = resolve_input(
        wsdir, s3ds.path("data/sub/b.bin").as_download().to_dict(), str(tmp_path / "in"), io.StringIO()
    )
    assert got["path"] == str(tmp_path / "in" / "b.bin")
    assert Path(got["path"]).read_bytes() == TREE["sub/b.bin"]
    assert got["files"] == 1


def test_resolve_url_input_without_a_datastore(
    s3ds: Datastore,
    s3: s3server.S3Server,
    bucket: str,
    wsdir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url or "")
    ref = DataReference.from_url(f"s3://{bucket}/team/data", "download")
    got = resolve_input(wsdir, ref.to_dict(), str(tmp_path / "in"), io.StringIO())
    assert read_tree(got["path"]) == TREE


def test_upload_output_replaces_run_id(s3ds: Datastore, wsdir: str, tmp_path: Path, bucket: str) -> None:
    out = make_tree(tmp_path / "outputs", {"model.pt": b"weights", "logs/metrics.json": b"{}"})
    log = io.StringIO()
    got = upload_output(
        wsdir, {"datastore": "bucketds", "path": "runs/{run_id}/outputs"}, str(out), "run-42", log
    )
    assert got == {"url": f"s3://{bucket}/team/runs/run-42/outputs", "files": 2, "bytes": 9}
    assert s3ds.list("runs") == ["runs/run-42/outputs/logs/metrics.json", "runs/run-42/outputs/model.pt"]
    assert "run-42" in log.getvalue()


# ---- local --------------------------------------------------------------------------------------


def test_local_mount_and_download(wsdir: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data")
    ds = Datastore.register_local(wsdir, "localds", src)
    log = io.StringIO()
    mounted = resolve_input(wsdir, ds.as_mount().to_dict(), str(tmp_path / "unused"), log)
    assert mounted["path"] == str(src) and mounted["mode"] == "mount" and mounted["bytes_downloaded"] == 0
    assert not (tmp_path / "unused").exists()
    down = resolve_input(wsdir, ds.path("sub").as_download().to_dict(), str(tmp_path / "in"), log)
    assert down["mode"] == "download" and down["path"] == str(tmp_path / "in")
    assert read_tree(down["path"]) == {"b.bin": TREE["sub/b.bin"], "deeper/c.csv": TREE["sub/deeper/c.csv"]}
    assert os.stat(tmp_path / "in" / "b.bin").st_ino == os.stat(src / "sub" / "b.bin").st_ino  # hard link
    single = resolve_input(wsdir, ds.path("a.txt").as_download().to_dict(), str(tmp_path / "one"), log)
    assert Path(single["path"]).read_bytes() == TREE["a.txt"] and single["path"].endswith("a.txt")
    by_url = resolve_input(
        wsdir, DataReference.from_url(str(src / "a.txt")).to_dict(), str(tmp_path / "x"), log
    )
    assert by_url["path"] == str(src / "a.txt")


def test_local_upload_output_and_default_datastore(wsdir: str, tmp_path: Path) -> None:
    out = make_tree(tmp_path / "outputs", {"m.txt": b"m"})
    got = upload_output(
        wsdir, {"datastore": "workspaceblobstore", "path": "o/{run_id}"}, str(out), "r1", io.StringIO()
    )
    assert got == {"url": os.path.join(wsdir, "datastore", "o", "r1"), "files": 1, "bytes": 1}
    assert Datastore.get(wsdir, "workspaceblobstore").list() == ["o/r1/m.txt"]


def test_fsspec_memory_datastore(wsdir: str, tmp_path: Path) -> None:
    import fsspec

    root = f"memory://ty-{uuid.uuid4().hex[:8]}"
    try:
        ds = Datastore.register_fsspec(wsdir, "mem", root)
        assert ds.upload(make_tree(tmp_path / "src")) == len(TREE)
        assert ds.list() == sorted(TREE)
        first = resolve_input(wsdir, ds.as_download().to_dict(), str(tmp_path / "a"), io.StringIO())
        assert read_tree(first["path"]) == TREE
        log = io.StringIO()
        resolve_input(wsdir, ds.as_mount().to_dict(), str(tmp_path / "b"), log)
        assert "needs a FUSE filesystem; downloading instead" in log.getvalue()
    finally:
        fsspec.filesystem("memory").rm(root.removeprefix("memory:/"), recursive=True)


def test_fsspec_datastore_with_an_s3_url(
    s3: s3server.S3Server, bucket: str, wsdir: str, tmp_path: Path
) -> None:
    ds = Datastore.register_fsspec(wsdir, "vias3", f"s3://{bucket}/viafsspec", endpoint_url=s3.endpoint_url)
    assert ds.options == {"endpoint_url": s3.endpoint_url}
    assert ds.upload(make_tree(tmp_path / "src")) == len(TREE)
    assert ds.list() == sorted(TREE)
    got = resolve_input(wsdir, ds.as_download().to_dict(), str(tmp_path / "in"), io.StringIO())
    assert read_tree(got["path"]) == TREE


# ---- failures -----------------------------------------------------------------------------------


def test_unknown_datastore(wsdir: str, tmp_path: Path) -> None:
    Datastore.register_local(wsdir, "known", tmp_path)
    with pytest.raises(DataError, match=r"no datastore 'nope'.*registered: known"):
        resolve_input(
            wsdir, {"datastore": "nope", "path": "x", "mode": "download"}, str(tmp_path / "d"), io.StringIO()
        )


def test_missing_paths(s3ds: Datastore, wsdir: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"datastore 'bucketds'.*team/missing does not exist"):
        resolve_input(wsdir, s3ds.path("missing").to_dict(), str(tmp_path / "d"), io.StringIO())
    local = Datastore.register_local(wsdir, "localds", tmp_path)
    with pytest.raises(DataError, match=r"datastore 'localds'.*nothing/here does not exist"):
        resolve_input(wsdir, local.path("nothing/here").to_dict(), str(tmp_path / "d"), io.StringIO())
    with pytest.raises(DataError, match="not a folder"):
        upload_output(
            wsdir, {"datastore": "localds", "path": "o"}, str(tmp_path / "none"), "r", io.StringIO()
        )


def test_missing_bucket(s3: s3server.S3Server, wsdir: str, tmp_path: Path) -> None:
    ds = Datastore.register_s3(wsdir, "ghost", "no-such-bucket-here", endpoint_url=s3.endpoint_url)
    with pytest.raises(DataError, match=r"datastore 'ghost'.*bucket does not exist"):
        resolve_input(wsdir, ds.as_download().to_dict(), str(tmp_path / "d"), io.StringIO())


def test_wrong_credentials_are_named(wsdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if s3server.unavailable_reason():
        pytest.skip(s3server.unavailable_reason() or "")
    # this server checks signatures after its first 3 requests: a user, its key, a bucket
    with s3server.S3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as server:
        import boto3

        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name="us-east-1")
        try:
            iam.create_user(UserName="alice")
            key = iam.create_access_key(UserName="alice")["AccessKey"]
        finally:
            iam.close()
        client = _client(server.endpoint_url or "")
        try:
            client.create_bucket(Bucket="guarded")
        finally:
            client.close()
        ds = Datastore.register_s3(wsdir, "guarded", "guarded", endpoint_url=server.endpoint_url)
        ref = ds.as_download().to_dict()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
        with pytest.raises(DataError, match=r"datastore 'guarded'.*access denied \(InvalidAccessKeyId\)"):
            resolve_input(wsdir, ref, str(tmp_path / "d"), io.StringIO())
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + key["SecretAccessKey"])
        with pytest.raises(DataError, match=r"access denied \(SignatureDoesNotMatch\)"):
            resolve_input(wsdir, ref, str(tmp_path / "d"), io.StringIO())
        with pytest.raises(DataError, match="access denied .*to write"):
            upload_output(
                wsdir,
                {"datastore": "guarded", "path": "o"},
                str(make_tree(tmp_path / "o")),
                "r",
                io.StringIO(),
            )


def test_no_credentials(s3: s3server.S3Server, bucket: str, wsdir: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    ds = Datastore.register_s3(wsdir, "anon", bucket, endpoint_url=s3.endpoint_url)
    with pytest.raises(DataError, match="no S3 credentials found"):
        ds.list()
    prof = Datastore.register_s3(wsdir, "prof", bucket, endpoint_url=s3.endpoint_url, profile="nosuchprofile")
    with pytest.raises(DataError, match="profile 'nosuchprofile'"):
        prof.list()


def test_unreachable_endpoint_fails_fast(wsdir: str, tmp_path: Path) -> None:
    port = s3server.free_port()  # nothing listens there
    ds = Datastore.register_s3(wsdir, "down", "some-bucket", endpoint_url=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(
        DataError, match=rf"datastore 'down'.*cannot reach the endpoint http://127.0.0.1:{port}"
    ):
        resolve_input(wsdir, ds.as_download().to_dict(), str(tmp_path / "d"), io.StringIO())
    assert time.monotonic() - started < 15


# ---- CLI ----------------------------------------------------------------------------------------


def _cli(workspace: str, *argv: str) -> int:
    from torchyard.cli import datastore as cli

    parser = argparse.ArgumentParser(prog="torchyard")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return cli.run(parser.parse_args(list(argv)), workspace)


def test_cli(
    s3: s3server.S3Server, bucket: str, wsdir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_tree(tmp_path / "src")
    assert _cli(wsdir, "datastore", "add", "local", "loc", str(src)) == 0
    assert _cli(wsdir, "datastore", "add", "s3", "buck", "--bucket", bucket, "--prefix", "p",
                "--endpoint-url", s3.endpoint_url or "") == 0  # fmt: skip
    assert (
        _cli(wsdir, "datastore", "add", "fsspec", "mem", "memory://ty-cli", "--option", "auto_mkdir=true")
        == 0
    )
    out = capsys.readouterr().out
    assert f"registered datastore 'buck': s3 s3://{bucket}/p" in out
    assert _cli(wsdir, "datastore", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == ["buck", "loc", "mem"]
    assert _cli(wsdir, "datastore", "list") == 0
    assert "loc" in capsys.readouterr().out
    assert _cli(wsdir, "datastore", "upload", "buck", str(src), "--target", "in") == 0
    assert "uploaded 3 file(s)" in capsys.readouterr().out
    assert _cli(wsdir, "datastore", "download", "buck", "in/sub", "--to", str(tmp_path / "dl")) == 0
    assert "downloaded 2 file(s)" in capsys.readouterr().out
    assert read_tree(tmp_path / "dl") == {
        "in/sub/b.bin": TREE["sub/b.bin"],
        "in/sub/deeper/c.csv": TREE["sub/deeper/c.csv"],
    }
    with pytest.raises(NotFoundError, match="no datastore 'nope'"):
        _cli(wsdir, "datastore", "upload", "nope", str(src))
    with pytest.raises(TorchyardError, match="not an existing folder"):
        _cli(wsdir, "datastore", "add", "local", "x", str(tmp_path / "missing"))
    assert _cli(wsdir, "datastore") == 2
    assert "datastores" in DatastoreRegistry(wsdir).root
