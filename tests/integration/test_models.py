"""The model registry on SQLite and a real throwaway PostgreSQL, through the SDK and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from torchyard import Experiment, Model, ScriptRunConfig, Workspace
from torchyard.errors import NotFoundError, SpecError, WorkspaceError

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def mws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose store is SQLite or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        ws = Workspace(path=tmp_path / ".torchyard")
        yield ws
        ws.store.dispose()
        return
    admin_url = request.getfixturevalue("pg_admin")
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        ws = Workspace(path=tmp_path / ".torchyard", db_url=admin_url.rsplit("/", 1)[0] + f"/{name}")
        yield ws
        ws.store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


def _objects(ws: Workspace) -> set[str]:
    root = Path(ws.path) / "snapshots" / "objects"
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_versions_aliases_tags_and_dedup(mws: Workspace, tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w" * 1000)
    m1 = Model.register(mws, weights, "digits", tags={"stage": "dev"}, properties={"acc": "0.9"},
                        description="first", model_framework="PyTorch")
    assert (m1.id, m1.version, m1.run_id) == ("digits:1", 1, None)
    before = _objects(mws)
    m2 = Model.register(mws, weights, "digits")  # same bytes: nothing new stored
    assert m2.id == "digits:2" and m2.sha256 == m1.sha256
    assert _objects(mws) == before
    import hashlib

    assert m1.sha256 == hashlib.sha256(b"w" * 1000).hexdigest()
    assert Model(mws, "digits").version == 2
    assert Model(mws, "digits", version=1).description == "first"
    assert Model(mws, id="digits:1").model_framework == "PyTorch"

    m1.set_alias("champion")
    assert Model(mws, "digits", alias="champion").version == 1
    m2.set_alias("champion")  # atomic re-point, history kept
    assert Model(mws, "digits", alias="champion").version == 2
    assert [e["version"] for e in m2.alias_history("champion")] == [1, 2]
    assert Model(mws, "digits", version=1).aliases == []

    m1.update(tags={"stage": "prod", "owner": "me"})
    assert Model(mws, "digits", version=1).tags == {"stage": "prod", "owner": "me"}
    m1.add_properties({"acc": "0.9", "f1": "0.8"})
    with pytest.raises(WorkspaceError, match="add-only"):
        m1.add_properties({"acc": "0.5"})
    assert [m.id for m in Model.list(mws, tags=[["stage", "prod"]])] == ["digits:1"]
    assert [m.id for m in Model.list(mws, tags=["owner"])] == ["digits:1"]
    assert [m.id for m in Model.list(mws, latest=True)] == ["digits:2"]
    assert [m.id for m in Model.list(mws, name="digits")] == ["digits:2", "digits:1"]

    out = tmp_path / "dl"
    path = m1.download(out)
    assert Path(path).read_bytes() == b"w" * 1000 and os.access(path, os.W_OK)
    with pytest.raises(WorkspaceError, match="exist_ok"):
        m1.download(out)

    m1.delete()
    with pytest.raises(NotFoundError, match="no version 1; its versions: 2"):
        Model(mws, "digits", version=1)
    m3 = Model.register(mws, weights, "digits")
    assert m3.version == 3  # numbers are never reused


def test_folder_model_and_bad_input(mws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"abc")
    (folder / "sub" / "config.json").write_text("{}")
    (folder / "outputs").mkdir()
    (folder / "outputs" / "kept.txt").write_text("no default excludes for models")
    m = Model.register(mws, folder, "bundle")
    dest = Path(m.download(tmp_path / "dl"))
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "outputs/kept.txt", "sub/config.json", "weights.bin"
    ]
    with pytest.raises(SpecError, match="model_path"):
        Model.register(mws, tmp_path / "nope.pt", "x")
    with pytest.raises(SpecError, match="model_name"):
        Model.register(mws, folder, "bad name")
    with pytest.raises(NotFoundError, match="no model 'ghost'"):
        Model(mws, "ghost")
    with pytest.raises(NotFoundError, match="no alias 'champion'"):
        Model(mws, "bundle", alias="champion")
    with pytest.raises(SpecError, match="alias"):
        m.set_alias("1")


def test_register_from_a_run_and_cli(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(
        "import os\nos.makedirs('outputs/model', exist_ok=True)\n"
        "open('outputs/model.pt', 'wb').write(b'weights')\n"
        "open('outputs/model/a.bin', 'wb').write(b'a')\n"
    )
    run = Experiment(ws, "train").submit(ScriptRunConfig(str(src), script="train.py"))
    run.wait_for_completion(raise_on_error=True)
    model = run.register_model("digits", tags={"k": "v"})
    assert (model.id, model.run_id, model.experiment_name) == ("digits:1", run.id, "train")
    assert model.properties["azureml.runId"] == run.id
    folder = run.register_model("bundle", model_path="outputs/model")
    assert folder.file_name == "model"
    with pytest.raises(SpecError, match="model_path"):
        run.register_model("digits", model_path="outputs/nope.pt")

    env = {**os.environ, "TORCHYARD_WORKSPACE": ws.path}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "torchyard.cli.main", *argv], capture_output=True,
                              text=True, env=env, timeout=60, check=False)

    done = cli("model", "register", "digits", "outputs/model.pt", "--run", run.id, "--tag", "stage=dev")
    assert done.returncode == 0, done.stderr
    assert "digits:2" in done.stdout
    assert cli("model", "alias", "digits:1", "champion").returncode == 0
    shown = cli("model", "show", "digits@champion", "--json")
    assert '"version": 1' in shown.stdout
    listed = cli("model", "list", "--tag", "stage=dev")
    assert "digits:2" in listed.stdout and "digits:1" not in listed.stdout
    dl = cli("model", "download", "digits:2", "--to", str(tmp_path / "out"))
    assert dl.returncode == 0 and (tmp_path / "out" / "model.pt").read_bytes() == b"weights"
    hist = cli("model", "alias", "digits", "champion", "--history")
    assert "champion -> digits:1" in hist.stdout
    for argv, field in (
        (("model", "show", "digits:9"), "no version 9"),
        (("model", "show", "digits:x"), "model:"),
        (("model", "register", "digits", str(tmp_path / "missing.pt")), "model_path"),
        (("model", "alias", "digits", "champion"), "model:"),
    ):
        bad = cli(*argv)
        assert bad.returncode == 2 and field in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
