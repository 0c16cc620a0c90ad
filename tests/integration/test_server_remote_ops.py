"""Sweeps, the model registry and model services through a real ``torchyard server`` on a real
PostgreSQL, from remote clients (the SDK and the CLI): a sweep's controller and a service run on
the server; what a viewer and a member without the experiment's grant get."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pgserver
import pytest
from teamserver import access_store, cli, make_users, team_server

from torchyard.errors import NotFoundError, SpecError

TRIAL = """\
import argparse, time
from torchyard import Run
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.0)
p.add_argument("--sleep", type=float, default=0.0)
a = p.parse_args()
run = Run.get_context()
for i in range(3):
    run.log("acc", a.lr * (i + 1), step=i)
time.sleep(a.sleep)
print("trial lr", a.lr, flush=True)
"""

TRAIN = """\
import os
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as fh:
    fh.write("weights from the run")
print("trained", flush=True)
"""

SCORE = """\
import json, os
def init():
    global weights
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")) as fh:
        weights = fh.read()
def run(raw_data):
    data = json.loads(raw_data)
    return {"sum": sum(data["x"]), "weights": weights}
"""

EXP = "remote-ops"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("remoteops")
    folder = str(root / "server" / ".torchyard")
    for name, text in (("trial", TRIAL), ("train", TRAIN), ("score", SCORE)):
        (root / name).mkdir()
        (root / name / f"{name}.py").write_text(text)
    with pgserver.PgServer() as pg:
        make_users(folder, pg.url)
        ws, access = access_store(folder, pg.url)
        tokens = {name: access.create_token(name, scope="admin" if name == "admin" else "write")[1]
                  for name in ("admin", "member", "viewer", "outsider")}
        with team_server(folder, pg.url) as server:
            try:
                yield {"server": server, "tokens": tokens, "root": root, "ws": ws, "access": access}
            finally:  # what a failed test left running: stopped here
                from torchyard.models.endpoint import Endpoint
                from torchyard.models.webservice import Webservice

                for ep in Endpoint.list(ws):
                    ep.delete()
                for svc in Webservice.list(ws):
                    svc.delete()
        ws.store.dispose()


def _ws(env: dict[str, Any], who: str) -> Any:
    from torchyard import Workspace

    return Workspace(url=env["server"].url, token=env["tokens"][who])


def _sweep_config(env: dict[str, Any], sleep: float = 0.0) -> Any:
    from torchyard import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, PyTorch, choice

    est = PyTorch(source_directory=str(env["root"] / "trial"), entry_script="trial.py", compute_target="local",
                  script_params={"--sleep": sleep})
    return HyperDriveConfig(run_config=est, hyperparameter_sampling=GridParameterSampling({"--lr": choice(0.1, 0.5)}),
                            primary_metric_name="acc", primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                            max_total_runs=2, max_concurrent_runs=2)


# ---- sweeps ------------------------------------------------------------------------------------------


def test_a_sweep_submitted_remotely_runs_on_the_server(env: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    from torchyard import Experiment
    from torchyard.remote.client import AccessDenied
    from torchyard.remote.run import RemoteSweepRun

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    member = _ws(env, "member")
    hd = Experiment(member, EXP).submit(_sweep_config(env), tags={"who": "member"})
    assert isinstance(hd, RemoteSweepRun)
    out = io.StringIO()
    details = hd.wait_for_completion(show_output=False, out=out)
    assert details["status"] == "Completed", details
    children = hd.get_children()
    assert len(children) == 2 and all(c.get_status() == "Completed" for c in children)
    assert sorted(p["--lr"] for p in hd.get_hyperparameters().values()) == [0.1, 0.5]
    best = hd.get_best_run_by_primary_metric()
    assert best is not None and best.get_metrics()["acc"] == pytest.approx([0.5, 1.0, 1.5])
    ranked = hd.get_children_sorted_by_primary_metric()
    assert [r["best_primary_metric"] for r in ranked] == pytest.approx([1.5, 0.3])
    assert set(hd.get_metrics()) == {c.id for c in children}
    assert hd.get_primary_metric_config() == {"name": "acc", "goal": "MAXIMIZE"}
    assert hd.get_tags()["who"] == "member"
    # the controller ran on the server: the server's workspace holds the sweep, its trials and the code
    server_ws = env["ws"]
    row = server_ws.store.get_run(hd.id)
    assert row["kind"] == "sweep" and row["created_by"] == "member"
    assert [r["created_by"] for r in server_ws.store.list_runs(parent_id=hd.id)] == ["member", "member"]
    # the same sweep opened by id, by a viewer with READ
    env["access"].grant(EXP, "viewer", "READ", by="test")
    viewer = _ws(env, "viewer")
    seen = viewer.get_run(hd.id)
    assert isinstance(seen, RemoteSweepRun) and seen.get_best_run_by_primary_metric().id == best.id
    with pytest.raises(AccessDenied, match="403"):
        Experiment(viewer, EXP).submit(_sweep_config(env))
    with pytest.raises(AccessDenied, match="403"):
        seen.cancel()
    from torchyard.errors import NotFoundError

    outsider = _ws(env, "outsider")
    with pytest.raises(NotFoundError):
        Experiment(outsider, EXP).submit(_sweep_config(env))  # it exists and is not theirs: as if it did not
    with pytest.raises(NotFoundError):
        outsider.get_run(hd.id)


def test_cancelling_a_remote_sweep_cancels_its_trials_and_the_cli_sees_it(env: dict[str, Any], tmp_path: Path,
                                                                          monkeypatch) -> None:
    from torchyard import Experiment

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    member = _ws(env, "member")
    hd = Experiment(member, EXP).submit(_sweep_config(env, sleep=60))
    deadline = time.time() + 60
    while not any(c.get_status() == "Running" for c in hd.get_children()):
        assert time.time() < deadline, "no trial started"
        time.sleep(0.2)
    base = {"TORCHYARD_SERVER": env["server"].url, "TORCHYARD_TOKEN": env["tokens"]["member"],
            "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    shown = json.loads(cli("sweep", "show", hd.id, "--json", env=base).stdout)
    assert shown["run_id"] == hd.id and shown["primary_metric"]["name"] == "acc"
    assert "cancel requested" in cli("sweep", "cancel", hd.id, env=base).stdout
    hd.wait_for_completion(raise_on_error=False, timeout=60)
    assert hd.get_status() == "Canceled"
    children = hd.get_children()
    deadline = time.time() + 60
    while any(c.get_status() not in ("Canceled", "Completed", "Failed") for c in children):
        assert time.time() < deadline
        time.sleep(0.2)
    assert {c.get_status() for c in children} == {"Canceled"}
    # refusals are one line
    viewer_env = {**base, "TORCHYARD_TOKEN": env["tokens"]["viewer"]}
    refused = cli("sweep", "cancel", hd.id, env=viewer_env, check=False)
    assert refused.returncode == 2 and "403" in refused.stderr and "Traceback" not in refused.stderr
    missing = cli("sweep", "show", "no_such_run", env=base, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_a_sweep_yaml_submitted_with_the_cli(env: dict[str, Any], tmp_path: Path) -> None:
    job = tmp_path / "sweep.yml"
    job.write_text(f"""\
type: sweep
experiment: {EXP}
trial:
  code: {env['root'] / 'trial'}
  command: python trial.py --lr ${{{{search_space.lr}}}}
compute: local
search_space:
  lr: {{type: choice, values: [0.2, 0.3]}}
sampling_algorithm: grid
objective: {{goal: maximize, primary_metric: acc}}
limits: {{max_total_trials: 2, max_concurrent_trials: 2}}
""")
    base = {"TORCHYARD_SERVER": env["server"].url, "TORCHYARD_TOKEN": env["tokens"]["member"],
            "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    done = cli("submit", str(job), "--stream", "--json", env=base)
    shown = json.loads(done.stdout)
    assert shown["status"] == "Completed" and len(shown["trials"]) == 2
    assert shown["trials"][0]["best_primary_metric"] == pytest.approx(0.9)


# ---- models and services -----------------------------------------------------------------------------


def test_models_and_a_service_from_a_remote_client(env: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    from torchyard import Experiment, InferenceConfig, LocalWebservice, Model, PyTorch, Webservice
    from torchyard.errors import NotFoundError
    from torchyard.remote.client import AccessDenied

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    member = _ws(env, "member")
    run = Experiment(member, "models-exp").submit(PyTorch(source_directory=str(env["root"] / "train"),
                                                          entry_script="train.py", compute_target="local"))
    run.wait_for_completion()
    model = run.register_model("digits", "outputs/model.txt", tags={"stage": "dev"})
    assert (model.id, model.run_id, model.experiment_name) == ("digits:1", run.id, "models-exp")
    from torchyard.workspace.models import ModelRegistry

    assert ModelRegistry(env["ws"].store, env["ws"].snapshots).get("digits", 1).created_by == "member"
    model.set_alias("champion")
    assert Model(member, "digits", alias="champion").id == "digits:1"
    assert Model(member, "digits").tags == {"stage": "dev"}
    assert [m.id for m in Model.list(member, name="digits")] == ["digits:1"]
    got = Model(member, id="digits:1").download(str(tmp_path / "dl"))
    assert Path(got).read_text() == "weights from the run"
    # a folder registered from the client: content-addressed, only what the server lacks travels
    folder = tmp_path / "folder-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.txt").write_text("weights from a folder")
    (folder / "sub" / "extra.bin").write_bytes(b"\x00\x01" * 100)
    first = Model.register(member, str(folder), "folder-model", tags={"k": "v"})
    assert member.last_upload_bytes == len("weights from a folder") + 200
    again = Model.register(member, str(folder), "folder-model")
    assert member.last_upload_bytes == 0 and again.version == first.version + 1
    back = Path(again.download(str(tmp_path / "dl2")))
    assert (back / "model.txt").read_text() == "weights from a folder"
    assert (back / "sub" / "extra.bin").read_bytes() == b"\x00\x01" * 100
    again.update(tags={"a": "b"})
    assert Model(member, "folder-model", version=again.version).tags == {"a": "b"}
    again.delete()
    with pytest.raises(NotFoundError):
        Model(member, "folder-model", version=again.version)

    # a viewer (READ on the experiment) sees, and may not change
    env["access"].grant("models-exp", "viewer", "READ", by="test")
    viewer = _ws(env, "viewer")
    assert Model(viewer, "digits").id == "digits:1"
    with pytest.raises(AccessDenied, match="403"):
        viewer.get_run(run.id).register_model("digits", "outputs/model.txt")
    with pytest.raises(AccessDenied, match="403"):
        Model(viewer, "digits").set_alias("mine")
    # an outsider sees nothing of it
    outsider = _ws(env, "outsider")
    with pytest.raises(NotFoundError):
        Model(outsider, "digits")
    assert "digits" not in [m.name for m in Model.list(outsider)]
    (tmp_path / "evil.txt").write_text("not the real weights")
    with pytest.raises(AccessDenied, match="taken"):  # no "latest" slipped under a name others deploy
        Model.register(outsider, str(tmp_path / "evil.txt"), "digits")
    with pytest.raises(NotFoundError):
        outsider.get_run(run.id)

    # a service deployed remotely runs on the server; its scoring URL is the server's host
    inference = InferenceConfig(entry_script="score.py", source_directory=str(env["root"] / "score"))
    svc = Model.deploy(member, "digits-svc", [model], inference, LocalWebservice.deploy_configuration())
    try:
        svc.wait_for_deployment(timeout_sec=90)
        assert svc.state == "Healthy"
        uri = svc.scoring_uri
        assert uri.startswith("http://127.0.0.1:") and uri.endswith("/score")
        answer = httpx.post(uri, json={"x": [1, 2, 3]}, timeout=30)
        assert answer.status_code == 200 and answer.json() == {"sum": 6, "weights": "weights from the run"}
        assert svc.run({"x": [4]}) == {"sum": 4, "weights": "weights from the run"}
        assert "service.txt" in svc.get_logs()
        assert [s.name for s in Webservice.list(member)] == ["digits-svc"]
        assert Webservice(member, "digits-svc").models == ["digits:1"]
        with pytest.raises(AccessDenied, match="403"):
            Model.deploy(viewer, "viewer-svc", [Model(viewer, "digits")], inference)
        with pytest.raises(NotFoundError):
            Model.deploy(outsider, "outsider-svc", ["digits:1"], inference)
        with pytest.raises(NotFoundError):
            Webservice(outsider, "digits-svc")
        # an endpoint serving it is hidden from the outsider too (its deployments name the model)
        from torchyard.models.endpoint import Endpoint

        ep = Endpoint.create(member, "digits-ep")
        try:
            ep.deploy("blue", [model], inference)
            with httpx.Client(base_url=env["server"].url, timeout=30) as h:
                for who, status in (("member", 200), ("viewer", 200), ("outsider", 404)):
                    bearer = {"Authorization": f"Bearer {env['tokens'][who]}"}
                    assert h.get("/api/v1/endpoints/digits-ep", headers=bearer).status_code == status, who
                    names = [e["name"] for e in h.get("/api/v1/endpoints", headers=bearer).json()["endpoints"]]
                    assert ("digits-ep" in names) == (status == 200), who
        finally:
            ep.delete()
        with pytest.raises(Exception, match="used by the service"):
            model.delete()
        # an update through the server: new code (uploaded), the same model, no restart of the address
        (tmp_path / "score2").mkdir()
        (tmp_path / "score2" / "score.py").write_text(SCORE.replace('"sum": sum', '"total": sum'))
        svc.update(inference_config=InferenceConfig(entry_script="score.py", source_directory=str(tmp_path / "score2")))
        assert svc.scoring_uri == uri and svc.run({"x": [1, 1]}) == {"total": 2, "weights": "weights from the run"}
    finally:
        svc.delete()
    with pytest.raises(NotFoundError):
        Webservice(member, "digits-svc")
    with pytest.raises(httpx.TransportError):
        httpx.post(uri, json={"x": [1]}, timeout=5)


def test_model_cli_against_the_server(env: dict[str, Any], tmp_path: Path) -> None:
    base = {"TORCHYARD_SERVER": env["server"].url, "TORCHYARD_TOKEN": env["tokens"]["member"],
            "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    weights = tmp_path / "cli.pt"
    weights.write_bytes(b"cli weights")
    registered = json.loads(cli("model", "register", "cli-model", str(weights), "--tag", "t=1", "--json",
                                env=base).stdout)
    assert registered["id"] == "cli-model:1" and registered["tags"] == {"t": "1"}
    listed = json.loads(cli("model", "list", "--name", "cli-model", "--json", env=base).stdout)
    assert [m["id"] for m in listed] == ["cli-model:1"]
    cli("model", "alias", "cli-model:1", "prod", env=base)
    shown = json.loads(cli("model", "show", "cli-model@prod", "--json", env=base).stdout)
    assert shown["version"] == 1 and shown["aliases"] == ["prod"]
    got = cli("model", "download", "cli-model:1", "--to", str(tmp_path / "out"), env=base).stdout.strip()
    assert Path(got).read_bytes() == b"cli weights"
    history = cli("model", "alias", "cli-model", "--history", env=base).stdout
    assert "prod -> cli-model:1" in history
    viewer = {**base, "TORCHYARD_TOKEN": env["tokens"]["viewer"]}
    refused = cli("model", "register", "viewer-model", str(weights), env=viewer, check=False)
    assert refused.returncode == 2 and "403" in refused.stderr and "Traceback" not in refused.stderr
    bad = cli("model", "show", "no-such-model", env=base, check=False)
    assert bad.returncode == 2 and "no model" in bad.stderr and "Traceback" not in bad.stderr
    cli("model", "delete", "cli-model:1", env=base)
    assert json.loads(cli("model", "list", "--name", "cli-model", "--json", env=base).stdout) == []


def test_an_endpoint_through_the_cli_runs_on_the_server(env: dict[str, Any], tmp_path: Path) -> None:
    base = {"TORCHYARD_SERVER": env["server"].url, "TORCHYARD_TOKEN": env["tokens"]["member"],
            "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.txt").write_text("endpoint weights")
    cli("model", "register", "ep-model", str(tmp_path / "m" / "model.txt"), env=base)
    uri = cli("endpoint", "create", "ep1", env=base).stdout.strip()
    assert uri.startswith("http://127.0.0.1:") and uri.endswith("/score")
    try:
        deployed = json.loads(cli("endpoint", "deploy", "ep1", "--deployment", "blue", "--model", "ep-model:1",
                                  "--score", "score.py", "--source-dir", str(env["root"] / "score"), env=base).stdout)
        assert deployed == {"deployment": "blue", "traffic": {"blue": 100}}
        request = tmp_path / "req.json"
        request.write_text(json.dumps({"x": [2, 3]}))
        answer = json.loads(cli("endpoint", "invoke", "ep1", "--request-file", str(request), env=base).stdout)
        assert answer == {"sum": 5, "weights": "endpoint weights"}
        direct = httpx.post(uri, json={"x": [7]}, timeout=30)
        assert direct.status_code == 200 and direct.json()["sum"] == 7
        shown = json.loads(cli("endpoint", "show", "ep1", env=base).stdout)
        assert shown["scoring_uri"] == uri and shown["deployments"]["blue"]["state"] == "Healthy"
        assert "ep1" in cli("endpoint", "list", env=base).stdout
        assert "service.txt" in cli("endpoint", "logs", "ep1", "--deployment", "blue", env=base).stdout
        viewer = {**base, "TORCHYARD_TOKEN": env["tokens"]["viewer"]}
        refused = cli("endpoint", "delete", "ep1", env=viewer, check=False)
        assert refused.returncode == 2 and "403" in refused.stderr and "Traceback" not in refused.stderr
        bad = cli("endpoint", "update", "ep1", "--traffic", "green=100", env=base, check=False)
        assert bad.returncode == 2 and "unknown deployment" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        cli("endpoint", "delete", "ep1", env=base, check=False)
    assert "no endpoints" in cli("endpoint", "list", env=base).stdout
    with pytest.raises(httpx.TransportError):
        httpx.post(uri, json={"x": [1]}, timeout=5)


# ---- registrations -----------------------------------------------------------------------------------

SECRETS = ("secret-bucket-q7", "secret-endpoint-q7", "secret-profile-q7", "secret-path-q7", "secret-option-q7",
           "secret-folder-q7", "secret-head-q7")


def _every_get_route(env: dict[str, Any], token: str) -> dict[str, str]:
    """The body of every declared GET route, its parameters filled with what exists on the server."""
    from torchyard.server.app import ENDPOINTS

    ws = env["ws"]
    runs = [r["id"] for r in ws.store.list_runs(limit=20)]
    fills = {"run_id": runs, "name": ["sds", "fds", "lds", "rayc", "digits", "reg-env", EXP], "rank": ["0"], "node": ["0"],
             "version": ["1"], "path": ["outputs/model.txt", "model.txt"], "alias": ["champion"],
             "deployment": ["blue"], "user": ["member"], "sha256": ["0" * 64], "token_id": ["0" * 16],
             "name:path": ["acc"]}
    bodies: dict[str, str] = {}
    with httpx.Client(base_url=env["server"].url, timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Origin": env["server"].url}) as client:
        for ep in ENDPOINTS:
            if ep.method != "GET" or ep.path.endswith("/events"):  # live streams: they hold no settings either
                continue
            paths = [ep.path]
            for part in [p for p in ep.path.split("/") if p.startswith("{")]:
                key = part.strip("{}")
                key = key if key in fills else key.split(":")[0]
                paths = [p.replace(part, value) for p in paths for value in fills[key]]
            for path in paths:
                resp = client.get(path)
                bodies[path] = resp.text
    return bodies


def test_registrations_are_admin_only_and_what_they_name_stays_on_the_server(env: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    url = env["server"].url
    admin = {"TORCHYARD_SERVER": url, "TORCHYARD_TOKEN": env["tokens"]["admin"], "TORCHYARD_WORKSPACE": "",
             "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    member = {**admin, "TORCHYARD_TOKEN": env["tokens"]["member"]}
    outputs: list[str] = []

    def ty(*argv: str, who: dict[str, str] = admin, check: bool = True) -> Any:
        proc = cli(*argv, env=who, check=check)
        outputs.append(proc.stdout + proc.stderr)
        return proc

    # environments: the requirements file travels as its text
    (tmp_path / "reqs.txt").write_text("six\n")
    (tmp_path / "env.yml").write_text("name: reg-env\npip: [tomli-w]\npip_requirements_file: reqs.txt\n")
    assert ty("env", "register", str(tmp_path / "env.yml")).stdout.strip() == "reg-env:1"
    shown = json.loads(ty("env", "show", "reg-env", "--json", who=member).stdout)
    assert shown["pip_packages"] == ["tomli-w"] and shown["version"] == "1"
    assert [e["name"] for e in json.loads(ty("env", "list", "--json", who=member).stdout)["registered"]] == ["reg-env"]
    kept = env["ws"].environments.get("reg-env")
    assert Path(kept.pip_requirements_file).read_text() == "six\n"  # on the server, in its workspace

    # datastores: registered on the server, listed by name and kind only
    folder = tmp_path / "secret-folder-q7"
    folder.mkdir()
    ty("datastore", "add", "s3", "sds", "--bucket", "secret-bucket-q7", "--endpoint-url",
       "http://secret-endpoint-q7.example:9000", "--profile", "secret-profile-q7")
    ty("datastore", "add", "fsspec", "fds", "memory://secret-path-q7", "--option", "region=secret-option-q7")
    ty("datastore", "add", "local", "lds", str(folder))
    listed = json.loads(ty("datastore", "list", "--json", who=member).stdout)
    assert {"name": "sds", "kind": "s3"} in listed and {"name": "lds", "kind": "local"} in listed
    assert env["ws"].datastores.get("sds").url == "s3://secret-bucket-q7"  # the server has it all
    refused = ty("datastore", "add", "fsspec", "mine", "memory://x", who=member, check=False)
    assert refused.returncode == 2 and "403" in refused.stderr and "Traceback" not in refused.stderr
    secret_option = ty("datastore", "add", "fsspec", "bad", "memory://x", "--option", "password=hunter2", check=False)
    assert secret_option.returncode == 2 and "secret" in secret_option.stderr and "Traceback" not in secret_option.stderr

    # compute targets: attached on the server
    ty("compute", "add", "ray", "rayc", "--address", "ray://secret-head-q7:10001")
    assert {"name": "rayc", "kind": "ray", "config": {}} in json.loads(ty("compute", "list", "--json", who=member).stdout)
    assert env["ws"].compute_targets.record("rayc")["config"]["address"] == "ray://secret-head-q7:10001"
    no = ty("compute", "remove", "rayc", who=member, check=False)
    assert no.returncode == 2 and "403" in no.stderr and "Traceback" not in no.stderr

    # no read route, for an admin or a member, names what was registered
    bodies = {**_every_get_route(env, env["tokens"]["admin"]),
              **{f"member {k}": v for k, v in _every_get_route(env, env["tokens"]["member"]).items()}}
    assert len(bodies) > 80
    leaks = [(path, s) for path, text in bodies.items() for s in SECRETS if s in text]
    leaks += [("cli", s) for text in outputs for s in SECRETS if s in text]
    assert not leaks, leaks
    for argv in (("datastore", "upload", "sds", str(tmp_path / "reqs.txt")), ("datastore", "download", "sds", "x")):
        failed = ty(*argv, check=False)  # the server's S3 error, in one line and without what sds names
        assert failed.returncode == 2 and "Traceback" not in failed.stderr and failed.stderr.count("\n") == 1
    leaks = [("cli", s) for text in outputs for s in SECRETS if s in text]
    assert not leaks, leaks
    ty("compute", "remove", "rayc")
    assert "rayc" not in [r["name"] for r in env["ws"].compute_targets.list()]
    entries = httpx.get(f"{url}/api/v1/audit", headers={"Authorization": f"Bearer {env['tokens']['admin']}"},
                        timeout=30).json()["entries"]
    done = {(e["user_name"], e["action"], e["target"]) for e in entries}
    assert {("admin", "environment.register", "reg-env:1"), ("admin", "datastore.register", "sds"),
            ("admin", "compute.attach", "rayc"), ("admin", "compute.remove", "rayc")} <= done


# ---- ownership and keys of services and endpoints (issue 15) --------------------------------------


def test_only_the_creator_and_admins_change_a_service_or_an_endpoint(env: dict[str, Any], tmp_path: Path) -> None:
    """Role matrix: admin, the creating member, another member, a viewer. Everyone who sees the
    service reads it; only its creator and admins regenerate its keys, update or delete it."""
    from torchyard import InferenceConfig, LocalWebservice, Model, Webservice
    from torchyard.models.endpoint import Endpoint
    from torchyard.remote.client import AccessDenied

    member, other, viewer, admin = (_ws(env, w) for w in ("member", "outsider", "viewer", "admin"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.txt").write_text("owned weights")
    model = Model.register(member, str(tmp_path / "m"), "owned-model")  # no experiment: every member sees it
    inference = InferenceConfig(entry_script="score.py", source_directory=str(env["root"] / "score"))
    svc = Model.deploy(member, "owned-svc", [model], inference,
                       LocalWebservice.deploy_configuration(auth_enabled=True))
    ep = Endpoint.create(member, "owned-ep", auth_mode="key")
    try:
        svc.wait_for_deployment(timeout_sec=90)
        doc = json.loads((Path(env["ws"].path) / "services" / "owned-svc" / "service.json").read_text())
        assert doc["created_by"] == "member"
        uri = svc.scoring_uri
        old_primary, old_secondary = svc.get_keys()
        assert svc.run({"x": [1]}) == {"sum": 1, "weights": "owned weights"}
        # the creator regenerates the primary key on the server: the old one stops working at once
        svc.regen_key("primary")
        new_primary, secondary = svc.get_keys()
        assert new_primary != old_primary and secondary == old_secondary
        assert httpx.post(uri, json={"x": [1]}, headers={"Authorization": f"Bearer {old_primary}"},
                          timeout=30).status_code == 401
        assert svc.run({"x": [2]}) == {"sum": 2, "weights": "owned weights"}
        with pytest.raises(SpecError, match="key"):
            svc.regen_key("tertiary")
        # another member and a viewer read it, and may not change it
        for who, ws in (("other member", other), ("viewer", viewer)):
            seen = Webservice(ws, "owned-svc")
            assert seen.state == "Healthy" and seen.models == ["owned-model:1"], who
            with pytest.raises(AccessDenied, match="403"):
                seen.regen_key("primary")
            with pytest.raises(AccessDenied, match="403"):
                seen.update(models=[model])
            with pytest.raises(AccessDenied, match="403"):
                seen.delete()
            with pytest.raises(AccessDenied, match="403"):
                Model.deploy(ws, "owned-svc", [model], inference, overwrite=True)
        assert Webservice(member, "owned-svc").get_keys()[0] == new_primary  # nothing changed
        # an admin may: regenerate the secondary key
        Webservice(admin, "owned-svc").regen_key("secondary")
        assert svc.get_keys() == (new_primary, Webservice(admin, "owned-svc").get_keys()[1])
        assert svc.get_keys()[1] != old_secondary

        # an endpoint: the same rule
        e_primary, _ = ep.get_keys()
        ep.regen_key("primary")
        assert ep.get_keys()[0] != e_primary
        assert httpx.post(ep.scoring_uri, json={"x": [1]}, headers={"Authorization": f"Bearer {e_primary}"},
                          timeout=30).status_code == 401
        assert httpx.post(ep.scoring_uri, json={"x": [1]}, headers={"Authorization": f"Bearer {ep.get_keys()[0]}"},
                          timeout=30).status_code != 401
        ep.deploy("blue", [model], inference)  # its deployment's service is the endpoint creator's
        assert Webservice(other, "owned-ep.blue").state == "Healthy"
        with pytest.raises(AccessDenied, match="403"):
            Webservice(other, "owned-ep.blue").delete()
        with pytest.raises(AccessDenied, match="403"):
            Endpoint(other, "owned-ep").deploy("green", [model], inference)
        assert list(Endpoint(other, "owned-ep").traffic) == ["blue"]
        for who, ws in (("other member", other), ("viewer", viewer)):
            seen = Endpoint(ws, "owned-ep")
            assert seen.state == "Healthy", who
            with pytest.raises(AccessDenied, match="403"):
                seen.regen_key("secondary")
            with pytest.raises(AccessDenied, match="403"):
                seen.set_traffic({})
            with pytest.raises(AccessDenied, match="403"):
                seen.delete()
        cli_env = {"TORCHYARD_SERVER": env["server"].url, "TORCHYARD_TOKEN": env["tokens"]["outsider"],
                   "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
        refused = cli("endpoint", "delete", "owned-ep", env=cli_env, check=False)
        assert refused.returncode == 2 and "403" in refused.stderr and "creator" in refused.stderr
        assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1
        Endpoint(admin, "owned-ep").regen_key("secondary")  # an admin may
        Endpoint(admin, "owned-ep").delete()  # ... and delete another's endpoint
        with pytest.raises(NotFoundError):
            Endpoint(member, "owned-ep")
        svc.delete()  # the creator may
        with pytest.raises(NotFoundError):
            Webservice(member, "owned-svc")
    finally:
        for name, kind in (("owned-svc", Webservice), ("owned-ep", Endpoint)):
            try:
                kind(env["ws"], name).delete()
            except NotFoundError:
                pass
    entries = httpx.get(f"{env['server'].url}/api/v1/audit", timeout=30,
                        headers={"Authorization": f"Bearer {env['tokens']['admin']}"}).json()["entries"]
    done = {(e["user_name"], e["action"], e["target"]) for e in entries}
    assert {("member", "service.regen_key", "owned-svc"), ("admin", "service.regen_key", "owned-svc"),
            ("member", "endpoint.regen_key", "owned-ep"), ("admin", "endpoint.delete", "owned-ep")} <= done


# ---- datastore files and environment builds through the server -------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_datastore_upload_and_download_through_the_server(env: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    url = env["server"].url
    base = {"TORCHYARD_SERVER": url, "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    as_ = {who: {**base, "TORCHYARD_TOKEN": env["tokens"][who]} for who in ("admin", "member", "viewer")}
    on_server = tmp_path / "server-side-store"
    on_server.mkdir()
    cli("datastore", "add", "local", "shared", str(on_server), env=as_["admin"])
    cli("datastore", "add", "fsspec", "scratch", "memory://scratch-q9", env=as_["admin"])
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    # a member uploads with the CLI: the server writes the files into its datastore
    up = cli("datastore", "upload", "shared", str(src), "--target", "data/v1", env=as_["member"])
    assert "uploaded 2 file(s)" in up.stdout and str(on_server) not in up.stdout
    assert _tree(on_server / "data" / "v1") == _tree(src)
    again = cli("datastore", "upload", "shared", str(src), "--target", "data/v1", env=as_["member"])
    assert "(0 bytes sent)" in again.stdout  # content-addressed: nothing the server has travels again
    one = cli("datastore", "upload", "shared", str(src / "a.txt"), "--target", "one", env=as_["member"])
    assert "uploaded 1 file(s)" in one.stdout and (on_server / "one" / "a.txt").read_bytes() == b"alpha\n"
    # ... and downloads, with the CLI and the SDK
    cli("datastore", "download", "shared", "data", "--to", str(tmp_path / "down"), env=as_["member"])
    assert _tree(tmp_path / "down" / "data" / "v1") == _tree(src)
    member = _ws(env, "member")
    ds = member.datastores.get("shared")
    assert ds.list("data") == ["data/v1/a.txt", "data/v1/sub/b.bin"]
    assert ds.download(str(tmp_path / "sdk"), prefix="data/v1/sub") == 1
    assert (tmp_path / "sdk" / "data" / "v1" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 40
    # a non-local datastore (fsspec memory:// in the server's process): streamed back through the server
    scratch = member.datastores.get("scratch")
    assert scratch.upload(str(src), target_path="x") == 2
    assert scratch.download(str(tmp_path / "mem")) == 2 and _tree(tmp_path / "mem" / "x") == _tree(src)
    assert scratch.upload_files([str(src / "a.txt")], target_path="x", overwrite=False) == 0  # kept
    # paths stay inside the datastore; viewers may not move files; errors are one line
    with pytest.raises(SpecError, match="target"):
        ds.upload(str(src), target_path="../escape")
    assert not (tmp_path / "escape").exists()
    auth = {"Authorization": f"Bearer {env['tokens']['member']}"}
    assert httpx.get(f"{url}/api/v1/datastores/shared/files/data/..%2F..%2Fsecret", headers=auth,
                     timeout=30).status_code in (400, 404)
    assert httpx.get(f"{url}/api/v1/datastores/shared/files/nope.txt", headers=auth, timeout=30).status_code == 404
    for argv in (("upload", "shared", str(src)), ("download", "shared", "data", "--to", str(tmp_path / "v"))):
        refused = cli("datastore", *argv, env=as_["viewer"], check=False)
        assert refused.returncode == 2 and "403" in refused.stderr and "Traceback" not in refused.stderr
        assert refused.stderr.count("\n") == 1
    assert not (tmp_path / "v").exists()
    missing = cli("datastore", "download", "shared", "no/such/prefix", env=as_["member"], check=False)
    assert missing.returncode == 2 and "nothing to download" in missing.stderr and "Traceback" not in missing.stderr
    entries = httpx.get(f"{url}/api/v1/audit", headers={"Authorization": f"Bearer {env['tokens']['admin']}"},
                        timeout=30).json()["entries"]
    assert ("member", "datastore.upload", "shared") in {(e["user_name"], e["action"], e["target"]) for e in entries}


def test_env_export_and_prune_against_the_server(env: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from torchyard import Experiment, PyTorch

    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    url = env["server"].url
    base = {"TORCHYARD_SERVER": url, "TORCHYARD_WORKSPACE": "", "TORCHYARD_CACHE_DIR": str(tmp_path / "c")}
    as_ = {who: {**base, "TORCHYARD_TOKEN": env["tokens"][who]} for who in ("admin", "member", "viewer", "outsider")}
    est = PyTorch(source_directory=str(env["root"] / "train"), entry_script="train.py", compute_target="local")
    run = Experiment(_ws(env, "member"), EXP).submit(est)
    assert run.wait_for_completion()["status"] == "Completed"
    local = env["ws"].get_run(run.id).get_environment()  # what the server's own workspace says
    assert run.get_environment()["packages"] == local["packages"] and local["packages"]
    env["access"].grant(EXP, "viewer", "READ", by="test")
    for who in ("member", "viewer"):  # READ on the experiment is enough
        out = cli("env", "export", run.id, env=as_[who]).stdout.splitlines()
        assert out[0] == f"# torchyard: environment of run {run.id}" and out[-len(local["packages"]):] == local["packages"]
    hidden = cli("env", "export", run.id, env=as_["outsider"], check=False)
    assert hidden.returncode == 2 and "no run" in hidden.stderr and "Traceback" not in hidden.stderr
    # prune: admins only; an old, unused cached build on the server goes
    envs = Path(env["ws"].path) / "envs" / "oldbuild0000"
    envs.mkdir(parents=True)
    (envs / ".ready").write_text("")
    os.utime(envs / ".ready", (time.time() - 30 * 86400,) * 2)
    for who in ("member", "viewer"):
        refused = cli("env", "prune", env=as_[who], check=False)
        assert refused.returncode == 2 and "403" in refused.stderr and "Traceback" not in refused.stderr
    assert envs.exists()
    done = cli("env", "prune", "--older-than", "7", env=as_["admin"]).stdout
    assert "removed 1 cached environment(s) on the server: oldbuild0000" in done and not envs.exists()
