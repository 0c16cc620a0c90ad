"""The team server with its artifacts in S3 (``torchyard server --artifacts s3://...``, moto's S3
server) and a bucket the runs read: a client with no AWS credentials at all registers, as admin, a
``credentials="presigned"`` datastore and a target whose nodes report over HTTP; a member submits
through the server; the nodes read the input through URLs the server signed and report through the
server; the run's outputs and logs land in the artifact bucket, and the client downloads them
through the server. Real server process, real PostgreSQL, real S3-compatible server."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import pgserver
import pytest
import s3server
from teamserver import access_store, make_users, team_server

pytestmark = pytest.mark.skipif(importlib.util.find_spec("toytarget") is None,
                                reason="tests/toytarget is not installed (scripts/test.sh installs it)")
SCRIPT = """\
import os, sys
from torchyard import Run
run = Run.get_context()
folder = sys.argv[sys.argv.index("--data") + 1]
n = int(open(os.path.join(folder, "n.txt")).read())
run.log("n", n)
print("read", n, "from", folder, flush=True)
if int(os.environ["RANK"]) == 0:
    with open(os.path.join("outputs", "model.txt"), "w") as fh:
        fh.write(f"weights {n}")
"""


def test_a_run_through_the_server_reads_a_signed_input_and_keeps_its_artifacts_in_s3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from torchyard import Experiment, PyTorch, Workspace
    from torchyard.compute.registry import target_class
    from torchyard.data import DataReference

    for reason in (pgserver.unavailable_reason(), s3server.unavailable_reason()):
        if reason:
            pytest.skip(reason)
    secret = f"server-secret-{uuid.uuid4().hex}"
    server_env = {"AWS_ACCESS_KEY_ID": "AKIASERVERKEY", "AWS_SECRET_ACCESS_KEY": secret,
                  "AWS_DEFAULT_REGION": "us-east-1"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)  # the client holds no credentials
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "use.py").write_text(SCRIPT)
    folder = str(tmp_path / "server" / ".torchyard")
    with s3server.S3Server() as s3, pgserver.PgServer() as pg:
        s3c = boto3.client("s3", endpoint_url=s3.endpoint_url, **{k.lower(): v for k, v in server_env.items()
                                                                 if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
        for bucket in ("tyart", "tyinputs"):
            s3c.create_bucket(Bucket=bucket)
        s3c.put_object(Bucket="tyinputs", Key="digits/n.txt", Body=b"42\n")
        make_users(folder, pg.url)
        ws, access = access_store(folder, pg.url)
        admin = access.create_token("admin", scope="admin")[1]
        member = access.create_token("member", scope="write")[1]
        try:
            with team_server(folder, pg.url, "--artifacts", "s3://tyart/team",
                             env={**server_env, "TORCHYARD_ARTIFACTS_ENDPOINT": s3.endpoint_url}) as server:
                boss = Workspace(url=server.url, token=admin)
                boss.datastores.register_s3("inputs", "tyinputs", endpoint_url=s3.endpoint_url,
                                            credentials="presigned")
                boss.compute_targets.attach("edge", target_class("toy")(root=str(tmp_path / "nodes"), report="server"))
                ws_member = Workspace(url=server.url, token=member)
                est = PyTorch(source_directory=str(src), entry_script="use.py", compute_target="edge", node_count=2,
                              distributed_backend="gloo",
                              script_params={"--data": DataReference("inputs", "digits", "download")})
                run = Experiment(ws_member, "s3-team").submit(est)
                details = run.wait_for_completion(timeout=180, raise_on_error=False)
                assert details["status"] == "Completed", details.get("error")
                assert run.get_metrics(rank="all") == {0: {"n": 42.0}, 1: {"n": 42.0}}
                names = run.get_file_names()
                assert "outputs/model.txt" in names and any(n.startswith("logs/rank_1") for n in names), names
                target = tmp_path / "download" / "model.txt"
                run.download_file("outputs/model.txt", str(target))
                assert target.read_text() == "weights 42"
                listed = s3c.list_objects_v2(Bucket="tyart", Prefix="team/")
                keys = [o["Key"] for o in listed.get("Contents", [])]
                assert any(k.endswith(f"{run.id}/outputs/model.txt") for k in keys), keys
                assert any(k.endswith(f"{run.id}/logs/rank_1.txt") for k in keys), keys
                logs = {k: s3c.get_object(Bucket="tyart", Key=k)["Body"].read().decode() for k in keys
                        if "/logs/inputs_node_" in k}
                assert len(logs) == 2 and all("through presigned URLs: no credentials" in t for t in logs.values()), logs
                # a member (no AWS keys here) moves files in and out of the bucket through the server
                (tmp_path / "up" / "d").mkdir(parents=True)
                (tmp_path / "up" / "d" / "m.txt").write_bytes(b"from the client")
                store = ws_member.datastores.get("inputs")
                assert store.upload(str(tmp_path / "up"), target_path="uploaded") == 1
                assert s3c.get_object(Bucket="tyinputs", Key="uploaded/d/m.txt")["Body"].read() == b"from the client"
                assert store.download(str(tmp_path / "back"), prefix="digits") == 1
                assert (tmp_path / "back" / "digits" / "n.txt").read_bytes() == b"42\n"
                assert "tyinputs" not in json.dumps(ws_member.client.get("/api/v1/datastores/inputs/files"))
                # what a client may learn of the datastore: its name and kind, never where or how
                listed_ds = json.dumps(boss.client.get("/api/v1/datastores"))
                assert "tyinputs" not in listed_ds and secret not in listed_ds
        finally:
            s3c.close()
            ws.store.dispose()
    found = [str(p) for root in (folder, str(tmp_path / "nodes")) for p in Path(root).rglob("*")
             if p.is_file() and secret.encode() in p.read_bytes()]
    assert not found, f"the server's secret was written to {found}"
