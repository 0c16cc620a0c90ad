"""The team server guide's SDK flow and CLI flow (docs/guides/team-server.md), unchanged, against a
real ``torchyard server`` process on a real PostgreSQL: submit (snapshot uploaded content-addressed; an unchanged tree uploads 0 bytes),
wait with live output, status, details, metrics, files, download, runs list/show, logs --follow,
metrics, cancel; ``torchyard login``; who created each run; what another member cannot see."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgserver
import pytest
from teamserver import PASSWORDS, access_store, cli, make_users, team_server

TRAIN = """\
import os, sys, time
from torchyard import Run
run = Run.get_context()
for i in range(20):
    run.log("loss", 1.0 / (i + 1), step=i)
print("hello from the server's run", flush=True)
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.pt", "w") as fh:
    fh.write("weights")
if "--sleep" in sys.argv:
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("teamremote")
    folder = str(root / "server" / ".torchyard")
    src = root / "client" / "digits"
    src.mkdir(parents=True)
    (src / "train.py").write_text(TRAIN)
    for i in range(30):
        (src / f"module_{i}.py").write_text(f"VALUE = {i}\n")
    with pgserver.PgServer() as pg:
        make_users(folder, pg.url)
        ws, access = access_store(folder, pg.url)
        tokens = {name: access.create_token(name, scope="write")[1] for name in ("member", "outsider")}
        with team_server(folder, pg.url) as server:
            yield {"server": server, "tokens": tokens, "root": root, "src": src, "ws": ws}
        ws.store.dispose()


def test_readme_sdk_flow_against_the_server(env: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    from torchyard import Experiment, PyTorch, Run, Workspace

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(env["src"].parent)
    ws = Workspace(url=env["server"].url, token=env["tokens"]["member"])
    exp = Experiment(ws, "digits")
    est = PyTorch(source_directory="digits", entry_script="train.py", compute_target="local")
    run = exp.submit(est, tags={"owner": "me"})
    first_upload = ws.last_upload_bytes
    assert first_upload == sum(p.stat().st_size for p in env["src"].iterdir())
    import io

    out = io.StringIO()
    run.wait_for_completion(show_output=True, out=out)
    assert "hello from the server's run" in out.getvalue() and "Execution Summary" in out.getvalue()
    assert run.get_status() == "Completed"
    details = run.get_details()
    assert details["tags"] == {"owner": "me"} and details["status"] == "Completed"
    assert run.get_metrics()["loss"] == [1.0 / (i + 1) for i in range(20)]
    assert "outputs/model.pt" in run.get_file_names()
    dest = run.download_file("outputs/model.pt", str(tmp_path / "model.pt"))
    assert Path(dest).read_text() == "weights"
    assert run.id in [r.id for r in exp.get_runs()]
    assert Run(exp, run.id).get_status() == ws.get_run(run.id).get_status() == "Completed"
    run.cancel()  # idempotent on an ended run
    assert run.get_status() == "Completed"
    assert {"name": "local", "kind": "local"} in ws.compute_names()
    assert [d["name"] for d in ws.datastore_names()] == ["workspaceblobstore"]
    assert ws.environment_names() == []

    again = exp.submit(est)  # unchanged tree: nothing travels
    assert ws.last_upload_bytes == 0
    again.wait_for_completion()
    (env["src"] / "module_0.py").write_text("VALUE = 'changed'\n")
    third = exp.submit(est)
    assert ws.last_upload_bytes == len("VALUE = 'changed'\n")  # only the changed file's content
    third.wait_for_completion()

    rows = env["ws"].store.list_runs(experiment="digits")
    from sqlalchemy import select

    from torchyard.workspace.schema import runs

    with env["ws"].store.engine.connect() as conn:
        creators = {r for (r,) in conn.execute(select(runs.c.created_by).where(runs.c.experiment == "digits"))}
    assert len(rows) == 3 and creators == {"member"}


def test_a_2000_file_tree_uploads_once(env: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    from torchyard import Experiment, PyTorch, Workspace

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    tree = tmp_path / "tree"
    for i in range(1999):
        (tree / f"pkg_{i // 100:02d}").mkdir(parents=True, exist_ok=True)
        (tree / f"pkg_{i // 100:02d}" / f"m_{i:04d}.py").write_text(f"BIG = {i}\n")
    (tree / "train.py").write_text("print('big tree')\n")
    ws = Workspace(url=env["server"].url, token=env["tokens"]["member"])
    est = PyTorch(source_directory=str(tree), entry_script="train.py", compute_target="local")
    first = Experiment(ws, "big-tree").submit(est)
    assert ws.last_upload_bytes == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    again = Experiment(ws, "big-tree").submit(est)
    assert ws.last_upload_bytes == 0
    for run in (first, again):
        assert run.wait_for_completion()["status"] == "Completed"


def test_another_member_sees_nothing_and_cancel_goes_through_the_server(env: dict[str, Any], tmp_path: Path,
                                                                       monkeypatch) -> None:
    from torchyard import Experiment, PyTorch, Workspace
    from torchyard.errors import NotFoundError

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    member = Workspace(url=env["server"].url, token=env["tokens"]["member"])
    outsider = Workspace(url=env["server"].url, token=env["tokens"]["outsider"])
    est = PyTorch(source_directory=str(env["src"]), entry_script="train.py", compute_target="local",
                  script_params={"--sleep": ""})
    run = Experiment(member, "private").submit(est)
    assert "private" not in outsider.experiments
    with pytest.raises(NotFoundError):
        outsider.get_run(run.id)
    with pytest.raises(NotFoundError):
        Experiment(outsider, "private").submit(est)  # it exists, and is not theirs: as if it did not
    deadline = time.time() + 60
    while run.get_status() != "Running" and time.time() < deadline:
        time.sleep(0.2)
    run.cancel("stop it")
    run.wait_for_completion(raise_on_error=False)
    assert run.get_status() == "Canceled"
    assert run.get_details()["cancel_reason"] == "stop it"


def test_readme_cli_flow_with_login(env: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    url = env["server"].url
    base = {"TORCHYARD_CREDENTIALS": str(tmp_path / "credentials.json"), "TORCHYARD_CACHE_DIR": str(tmp_path / "c"),
            "HOME": str(tmp_path), "TORCHYARD_WORKSPACE": "", "TORCHYARD_TOKEN": ""}
    os.makedirs(tmp_path / "elsewhere")
    login = cli("login", url, "--user", "member", "--password-stdin", stdin=PASSWORDS["member"] + "\n", env=base)
    assert "logged in" in login.stdout and "member" in login.stdout
    saved = json.loads((tmp_path / "credentials.json").read_text())
    assert saved["current"] == url and saved["servers"][url]["token"].startswith("ty_")
    assert oct((tmp_path / "credentials.json").stat().st_mode & 0o777) == "0o600"

    def ty(*argv: str, **kw: Any) -> Any:
        return cli(*argv, env=base, **kw)

    monkeypatch.chdir(tmp_path / "elsewhere")  # no local workspace: the saved server is the workspace
    run_id = ty("run", "--source-dir", str(env["src"]), "--entry", "train.py", "--experiment", "cli-exp").stdout.strip()
    assert run_id.startswith("cli-exp_")
    follow = ty("logs", run_id, "--follow")
    assert "hello from the server's run" in follow.stdout
    assert run_id in ty("runs", "list").stdout
    shown = json.loads(ty("runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "Completed"
    metrics = json.loads(ty("metrics", run_id, "--json").stdout)
    assert len(metrics["loss"]) == 20
    got = ty("download", run_id, "outputs/model.pt", "--to", str(tmp_path / "dl")).stdout.strip()
    assert Path(got).read_text() == "weights"
    assert "already Completed" in ty("cancel", run_id).stdout
    waited = ty("run", "--source-dir", str(env["src"]), "--entry", "train.py", "--experiment", "cli-exp", "--wait")
    assert "hello from the server's run" in waited.stdout and "Execution Summary" in waited.stdout
    # the same through the environment, with a bad token: one line, exit 2
    bad = cli("runs", "list", env={**base, "TORCHYARD_SERVER": url, "TORCHYARD_TOKEN": "ty_0000000000000000_x"},
              check=False)
    assert bad.returncode == 2 and "401" in bad.stderr and "Traceback" not in bad.stderr
    ty("logout")
    assert "current" not in json.loads((tmp_path / "credentials.json").read_text())
