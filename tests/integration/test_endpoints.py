"""Online endpoints: a real router process in front of real local services; httpx and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from torchyard import Endpoint, InferenceConfig, Model, Webservice, Workspace
from torchyard.errors import SpecError

SCORE = """
import json, os
def init():
    global weights
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")) as fh:
        weights = fh.read()
def run(raw_data):
    return {"weights": weights}
"""


@pytest.fixture
def endpoint(ws: Workspace, tmp_path: Path) -> Iterator[Endpoint]:
    ep = Endpoint.create(ws, "digits")
    try:
        yield ep
    finally:
        ep.delete()
        for svc in Webservice.list(ws):
            svc.delete()


def _model(ws: Workspace, tmp_path: Path, text: str) -> Model:
    path = tmp_path / f"model-{text}" / "model.txt"
    path.parent.mkdir()
    path.write_text(text)
    return Model.register(ws, path, "digits")


def _src(tmp_path: Path) -> Path:
    folder = tmp_path / "serve"
    folder.mkdir(exist_ok=True)
    (folder / "score.py").write_text(textwrap.dedent(SCORE))
    return folder


def test_traffic_split_pin_mirror_and_shift_under_load(ws: Workspace, tmp_path: Path, endpoint: Endpoint) -> None:
    blue_model, green_model = _model(ws, tmp_path, "blue"), _model(ws, tmp_path, "green")
    ic = InferenceConfig(entry_script="score.py", source_directory=str(_src(tmp_path)))
    endpoint.deploy("blue", [blue_model], ic)
    assert endpoint.traffic == {"blue": 100}
    endpoint.deploy("green", [green_model], ic)
    assert endpoint.traffic == {"blue": 100, "green": 0}
    uri = endpoint.scoring_uri
    assert uri is not None
    with httpx.Client(timeout=10) as client:
        r = client.post(uri, json={})
        assert r.json() == {"weights": "blue"} and r.headers["azureml-model-deployment"] == "blue"
        pinned = client.post(uri, json={}, headers={"torchyard-deployment": "green"})
        assert pinned.json() == {"weights": "green"}
        azure_pin = client.post(uri, json={}, headers={"azureml-model-deployment": "green"})
        assert azure_pin.json() == {"weights": "green"}
        assert client.post(uri, json={}, headers={"torchyard-deployment": "red"}).status_code == 404

        endpoint.set_traffic({"blue": 50, "green": 50})
        seen = [client.post(uri, json={}).json()["weights"] for _ in range(60)]
        assert 10 < seen.count("blue") < 50, seen.count("blue")

        endpoint.set_traffic({"blue": 100, "green": 0}, mirror={"green": 50})
        assert {client.post(uri, json={}).json()["weights"] for _ in range(40)} == {"blue"}
        base = uri.rsplit("/", 1)[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = client.get(base + "/metrics").text
            if 'torchyard_endpoint_mirrored_total{endpoint="digits",deployment="green",code="200"}' in metrics:
                break
            time.sleep(0.05)
        assert 'deployment="green",code="200"' in metrics
        # the shadow's own metrics count what it was sent
        green_metrics = client.get(endpoint.deployments["green"].scoring_uri.rsplit("/", 1)[0] + "/metrics").text
        assert 'code="200"' in green_metrics

    # bad traffic specs: named, and nothing changes
    for traffic, mirror, field in (({"blue": 90}, None, "traffic"), ({"blue": 50, "red": 50}, None, "traffic"),
                                   ({"blue": 100}, {"blue": 10}, "mirror"), ({"blue": 100}, {"green": 60}, "mirror")):
        with pytest.raises(SpecError) as info:
            endpoint.set_traffic(traffic, mirror)
        assert info.value.field == field
    assert endpoint.traffic == {"blue": 100, "green": 0}

    # zero failed requests while the traffic shifts from blue to green under load
    endpoint.set_traffic({"blue": 100, "green": 0})
    stop = threading.Event()
    results: list[tuple[float, int, str]] = []  # (time the request was sent, code, deployment)
    errors: list[str] = []

    def load() -> None:
        with httpx.Client(timeout=20) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(uri, json={})
                    results.append((sent, r.status_code, r.headers.get("azureml-model-deployment", "")))
                except httpx.HTTPError as err:
                    errors.append(repr(err))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while len(results) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        first_shift = time.monotonic()
        for blue in (75, 50, 25, 0):
            endpoint.set_traffic({"blue": blue, "green": 100 - blue})  # returns once the router applied it
            time.sleep(0.2)
        last_shift = time.monotonic() - 0.2
        deadline = time.monotonic() + 30
        while sum(1 for sent, _, _ in results if sent > last_shift) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == [] and {c for _, c, _ in results} == {200}
    assert {d for sent, _, d in results if sent < first_shift} == {"blue"}
    assert {d for sent, _, d in results if sent > last_shift} == {"green"}
    with pytest.raises(SpecError, match="takes 100"):
        endpoint.delete_deployment("green")
    endpoint.delete_deployment("blue")
    assert list(endpoint.deployments) == ["green"]


def test_cli_create_deploy_update_invoke(ws: Workspace, tmp_path: Path) -> None:
    _model(ws, tmp_path, "one")
    _model(ws, tmp_path, "two")
    src = _src(tmp_path)
    env = {**os.environ, "TORCHYARD_WORKSPACE": ws.path}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "torchyard.cli.main", *argv], capture_output=True, text=True,
                              env=env, timeout=120, check=False)

    (tmp_path / "endpoint.yml").write_text("name: web\nauth_mode: key\n")
    (tmp_path / "green.yml").write_text(textwrap.dedent(f"""
        name: green
        endpoint_name: web
        model: azureml:digits:2
        code_configuration:
          code: {src}
          scoring_script: score.py
        instance_count: 1
        request_settings:
          request_timeout_ms: 3000
    """))
    req = tmp_path / "req.json"
    req.write_text("{}")
    try:
        done = cli("endpoint", "create", "-f", str(tmp_path / "endpoint.yml"))
        assert done.returncode == 0, done.stderr
        done = cli("endpoint", "deploy", "web", "--deployment", "blue", "--model", "digits:1", "--score", "score.py",
                   "--source-dir", str(src))
        assert done.returncode == 0, done.stderr
        done = cli("endpoint", "deploy", "-f", str(tmp_path / "green.yml"))
        assert done.returncode == 0, done.stderr
        assert json.loads(cli("endpoint", "invoke", "web", "--request-file", str(req)).stdout) == {"weights": "one"}
        pinned = cli("endpoint", "invoke", "web", "--request-file", str(req), "--deployment", "green")
        assert json.loads(pinned.stdout) == {"weights": "two"}
        for argv, field in (
            (("endpoint", "update", "web", "--traffic", "blue=90,green=20"), "traffic: the weights must sum to 100"),
            (("endpoint", "update", "web", "--traffic", "blue=90,red=10"), "unknown deployment 'red'"),
            (("endpoint", "update", "web", "--traffic", "blue:90"), "traffic: expected NAME=PERCENT"),
            (("endpoint", "deploy", "web", "--deployment", "x", "--model", "digits:9", "--source-dir", str(src)),
             "no version 9"),
            (("endpoint", "deploy", "web", "--deployment", "x", "--model", "digits:1", "--score", "nope.py",
              "--source-dir", str(src)), "entry_script"),
        ):
            bad = cli(*argv)
            assert bad.returncode == 2 and field in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert not (Path(ws.path) / "services" / "web.x").exists()
        done = cli("endpoint", "update", "web", "--traffic", "blue=0,green=100")
        assert done.returncode == 0, done.stderr
        assert json.loads(cli("endpoint", "invoke", "web", "--request-file", str(req)).stdout) == {"weights": "two"}
        shown = json.loads(cli("endpoint", "show", "web").stdout)
        assert shown["traffic"] == {"blue": 0, "green": 100} and shown["auth_mode"] == "key"
        with httpx.Client(timeout=10) as client:
            assert client.post(shown["scoring_uri"], json={}).status_code == 401
        assert "web" in cli("endpoint", "list").stdout
        assert "worker" in cli("endpoint", "logs", "web", "--deployment", "green").stdout
    finally:
        cli("endpoint", "delete", "web")
    assert Webservice.list(ws) == [] and Endpoint.list(ws) == []
