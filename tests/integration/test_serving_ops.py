"""Serving operations: request size limits (services and endpoints), the supervised endpoint router,
and ``/metrics`` summed over a service's workers. Real supervisor, worker and router processes on
127.0.0.1, a real HTTP client (httpx), Prometheus's own parser (``prometheus_client``)."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from torchyard import Endpoint, InferenceConfig, LocalWebservice, Model, Webservice, Workspace
from torchyard.errors import NotFoundError, SpecError

parser = pytest.importorskip("prometheus_client.parser")

SCORE = """
import json, os, time
def init():
    global weights
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")) as fh:
        weights = fh.read()
def run(raw_data):
    time.sleep(float(os.environ.get("RUN_SLEEP", "0")))
    return {"weights": weights, "size": len(raw_data), "pid": os.getpid()}
"""


def _model(ws: Workspace, tmp_path: Path, text: str) -> Model:
    path = tmp_path / f"model-{text}" / "model.txt"
    path.parent.mkdir()
    path.write_text(text)
    return Model.register(ws, path, "digits")


def _ic(tmp_path: Path, **env: str) -> InferenceConfig:
    folder = tmp_path / "serve"
    folder.mkdir(exist_ok=True)
    (folder / "score.py").write_text(textwrap.dedent(SCORE))
    return InferenceConfig(entry_script="score.py", source_directory=str(folder), environment_variables=env)


@pytest.fixture
def cleanup(ws: Workspace) -> Iterator[None]:
    """Delete every endpoint and service the test made, whatever happens."""
    yield
    for ep in Endpoint.list(ws):
        ep.delete()
    for svc in Webservice.list(ws):
        try:
            svc.delete()
        except NotFoundError:
            pass


def _families(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Prometheus's parser over the text: family → {(sample name, labels): value}."""
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fam in parser.text_string_to_metric_families(text):
        out[fam.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
    return out


def _chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def test_request_body_limit_on_a_service_and_an_endpoint(ws: Workspace, tmp_path: Path, cleanup: None) -> None:
    model = _model(ws, tmp_path, "w1")
    with pytest.raises(SpecError) as info:
        LocalWebservice.deploy_configuration(max_request_bytes=0)
    assert info.value.field == "max_request_bytes"
    svc = Model.deploy(ws, "small", [model], _ic(tmp_path), LocalWebservice.deploy_configuration(max_request_bytes=2000))
    svc.wait_for_deployment(timeout_sec=60)
    uri = svc.scoring_uri
    assert uri is not None
    with httpx.Client(timeout=10) as client:
        ok = client.post(uri, content=b"y" * 2000)
        assert ok.status_code == 200 and ok.json()["size"] == 2000
        big = client.post(uri, content=b"y" * 2001)
        assert big.status_code == 413 and "max_request_bytes (2000)" in big.json()["error"]
        assert big.headers["connection"] == "close" and big.headers["x-request-id"]
        chunked = client.post(uri, content=_chunks(5000))  # no Content-Length: counted while read
        assert chunked.status_code == 413
        assert client.post(uri, content=b"{}").status_code == 200  # still up
        metrics = _families(client.get(uri.rsplit("/", 1)[0] + "/metrics").text)
        codes = {dict(k[1])["code"]: v for k, v in metrics["torchyard_requests"].items()}
        assert codes == {"200": 2, "413": 2}

    with pytest.raises(SpecError) as info:
        Endpoint.create(ws, "tiny", max_request_bytes=-5)
    assert info.value.field == "max_request_bytes"
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "torchyard.cli.main", "endpoint", "create", "tiny",
                           "--max-request-bytes", "0"], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "TORCHYARD_WORKSPACE": ws.path})
    assert done.returncode == 2 and "max_request_bytes" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert Endpoint.list(ws) == []
    ep = Endpoint.create(ws, "tiny", max_request_bytes=1000)
    ep.deploy("blue", [model], _ic(tmp_path))
    assert ep.show()["max_request_bytes"] == 1000
    uri = ep.scoring_uri
    assert uri is not None
    with httpx.Client(timeout=10) as client:
        assert client.post(uri, content=b"z" * 1000).json()["size"] == 1000
        refused = client.post(uri, content=b"z" * 1500)  # under the deployment's limit, over the router's
        assert refused.status_code == 413 and "max_request_bytes (1000)" in refused.json()["error"]
        assert "azureml-model-deployment" not in refused.headers
        assert client.post(uri, content=_chunks(3000)).status_code == 413
        text = client.get(uri.rsplit("/", 1)[0] + "/metrics").text
        assert 'torchyard_endpoint_requests_total{endpoint="tiny",deployment="blue",code="413"} 2' in text
        # the deployment behind never saw the refused bodies
        behind = client.get(ep.deployments["blue"].scoring_uri.rsplit("/", 1)[0] + "/metrics").text
        assert 'code="413"' not in behind


def test_a_killed_router_is_restarted(ws: Workspace, tmp_path: Path, cleanup: None) -> None:
    ep = Endpoint.create(ws, "digits")
    ep.deploy("blue", [_model(ws, tmp_path, "blue")], _ic(tmp_path))
    uri = ep.scoring_uri
    assert uri is not None and ep.state == "Healthy" and ep.restarts == 0
    state = ws.path + "/endpoints/digits/state.json"
    import json

    with open(state) as fh:
        first = json.load(fh)
    router_pid = first["router_pid"]
    assert router_pid and router_pid != first["pid"]
    os.kill(router_pid, signal.SIGKILL)
    # a request sent at once waits in the listening socket's queue for the restarted router
    with httpx.Client(timeout=20) as client:
        assert client.post(uri, json={}).json()["weights"] == "blue"
    deadline = time.monotonic() + 20
    while not (ep.state == "Healthy" and ep.restarts == 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ep.state == "Healthy" and ep.restarts == 1
    shown = ep.show()
    assert shown["last_crash"]["how"] == "signal 9" and shown["last_crash"]["pid"] == router_pid
    with open(state) as fh:
        assert json.load(fh)["router_pid"] not in (None, router_pid)
    assert f"router (pid {router_pid}) died (signal 9)" in ep.get_logs()
    # the restarted router takes configuration changes as before
    ep.deploy("green", [_model(ws, tmp_path, "green")], _ic(tmp_path))
    ep.set_traffic({"blue": 0, "green": 100})
    with httpx.Client(timeout=10) as client:
        assert {client.post(uri, json={}).json()["weights"] for _ in range(10)} == {"green"}
    ep.delete()
    from torchyard.models.webservice import process_alive

    assert not process_alive(first["pid"], b"torchyard.runtime.serving.router")


def test_metrics_are_the_service_totals_whichever_worker_answers(ws: Workspace, tmp_path: Path,
                                                                 cleanup: None) -> None:
    svc = Model.deploy(ws, "pair", [_model(ws, tmp_path, "w")], _ic(tmp_path, RUN_SLEEP="0.02"),
                       LocalWebservice.deploy_configuration(workers=2))
    svc.wait_for_deployment(timeout_sec=60)
    uri = svc.scoring_uri
    assert uri is not None
    base = uri.rsplit("/", 1)[0]
    pids: list[int] = []
    lock = threading.Lock()

    def load(n: int) -> None:
        # a new connection per request: each is accepted by whichever worker is free
        with httpx.Client(timeout=20, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for _ in range(n):
                r = client.post(uri, json={})
                assert r.status_code == 200
                with lock:
                    pids.append(r.json()["pid"])

    threads = [threading.Thread(target=load, args=(10,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(pids) == 60 and len(set(pids)) == 2, set(pids)
    seen_by = set()
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(8):
            r = client.get(base + "/metrics")
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            fam = _families(r.text)
            label = (("code", "200"), ("service", "pair"))
            assert fam["torchyard_requests"][("torchyard_requests_total", label)] == 60
            assert fam["torchyard_request_duration_seconds"][
                ("torchyard_request_duration_seconds_count", (("service", "pair"),))] == 60
            assert fam["torchyard_batch_size"][("torchyard_batch_size_count", (("service", "pair"),))] == 60
            assert fam["torchyard_workers"][("torchyard_workers", (("service", "pair"),))] == 2
            assert fam["torchyard_inflight_requests"][("torchyard_inflight_requests", (("service", "pair"),))] == 0
            seen_by.add(r.headers["x-request-id"])
    # a crashed worker's counts stay in the totals (counters never go backwards)
    victim = svc.get_details()["status"]["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = svc.get_details()["status"]
        if svc.state == "Healthy" and st.get("restarts") == 1:
            break
        time.sleep(0.05)
    assert svc.state == "Healthy"
    with httpx.Client(timeout=10) as client:
        fam = _families(client.get(base + "/metrics").text)
    assert fam["torchyard_requests"][("torchyard_requests_total", (("code", "200"), ("service", "pair")))] == 60
    assert fam["torchyard_workers"][("torchyard_workers", (("service", "pair"),))] == 2


THREAD_SCORE = """
import json, os, threading, time
inside = 0
overlapped = False
lock = threading.Lock()
def init():
    pass
def run(raw_data):
    global inside, overlapped
    with lock:
        inside += 1
        overlapped = overlapped or inside > 1
    time.sleep(json.loads(raw_data).get("sleep", 0))
    with lock:
        inside -= 1
    return {"thread": threading.current_thread().name, "overlapped": overlapped}
"""


def test_the_event_loop_fast_path(ws: Workspace, tmp_path: Path, cleanup: None) -> None:
    """A lone quick request runs on the event loop (no thread hand-off); under concurrency the
    inference thread takes over, and the user's code is never entered twice at once."""
    folder = tmp_path / "threads"
    folder.mkdir()
    (folder / "score.py").write_text(textwrap.dedent(THREAD_SCORE))
    model = _model(ws, tmp_path, "t")
    on = Model.deploy(ws, "fast", [model], InferenceConfig(source_directory=str(folder)))
    off = Model.deploy(ws, "slow", [model], InferenceConfig(source_directory=str(folder),
                                                            environment_variables={"TORCHYARD_INLINE_MAX_MS": "0"}))
    on.wait_for_deployment(timeout_sec=60)
    off.wait_for_deployment(timeout_sec=60)
    assert on.scoring_uri and off.scoring_uri
    with httpx.Client(timeout=20) as client:
        threads = [client.post(on.scoring_uri, json={}).json()["thread"] for _ in range(5)]
        assert threads[0].startswith("torchyard-infer") and set(threads[1:]) == {"MainThread"}
        assert {client.post(off.scoring_uri, json={}).json()["thread"] for _ in range(5)} == {"torchyard-infer_0"}
    answers: list[dict[str, object]] = []

    def hit(body: dict[str, float]) -> None:
        with httpx.Client(timeout=20) as c:
            for _ in range(10):
                answers.append(c.post(on.scoring_uri, json=body).json())

    workers = [threading.Thread(target=hit, args=({"sleep": 0.003 * (i % 2)},)) for i in range(6)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert len(answers) == 60 and not any(a["overlapped"] for a in answers)
    assert any(str(a["thread"]).startswith("torchyard-infer") for a in answers)
