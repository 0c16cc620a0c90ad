"""Local model services: real supervisor and worker processes on 127.0.0.1, a real HTTP client (httpx)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from torchyard import InferenceConfig, LocalWebservice, Model, Webservice, Workspace
from torchyard.errors import NotFoundError, SpecError, WorkspaceError
from torchyard.models.webservice import DeploymentError

AZURE_SCORE = """
import json, os
input_example = {"x": [1, 2]}
output_example = {"sum": 3}
def init():
    global weights
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")) as fh:
        weights = fh.read()
    assert os.environ["TORCHYARD_MODEL_DIR"] == os.environ["AZUREML_MODEL_DIR"]
def run(raw_data):
    data = json.loads(raw_data)
    if data.get("boom"):
        raise ValueError("asked to fail")
    return {"sum": sum(data["x"]), "weights": weights, "pid": os.getpid()}
"""

TYPED_SCORE = """
import os, time
class Scorer:
    def load(self, model_dir):
        with open(os.path.join(model_dir, "model.txt")) as fh:
            self.weights = fh.read()
        time.sleep(float(os.environ.get("LOAD_SLEEP", "0")))
    def predict(self, batch):
        time.sleep(max([0.01] + [item.get("sleep", 0) for item in batch if isinstance(item, dict)]))
        return [{"n": len(batch), "weights": self.weights, "echo": item} for item in batch]
"""


def _src(tmp_path: Path, name: str, body: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "score.py").write_text(textwrap.dedent(body))
    return folder


def _model(ws: Workspace, tmp_path: Path, name: str, text: str) -> Model:
    folder = tmp_path / f"model-{name}-{text}"
    folder.mkdir()
    (folder / "model.txt").write_text(text)
    return Model.register(ws, folder / "model.txt", name)


@pytest.fixture
def deploy(ws: Workspace) -> Iterator[Callable[..., Webservice]]:
    """Deploy a service; every one is deleted at the end, whatever happens."""
    made: list[str] = []

    def _deploy(name: str, models: list[Model], src: Path, wait: bool = True, **config: object) -> Webservice:
        made.append(name)
        svc = Model.deploy(ws, name, models, InferenceConfig(entry_script="score.py", source_directory=str(src)),
                           LocalWebservice.deploy_configuration(**config))  # type: ignore[arg-type]
        if wait:
            svc.wait_for_deployment(timeout_sec=60)
        return svc

    yield _deploy
    for name in made:
        try:
            Webservice(ws, name).delete()
        except NotFoundError:
            pass


def test_azure_score_protocols_and_errors(ws: Workspace, tmp_path: Path, deploy: Callable[..., Webservice]) -> None:
    model = _model(ws, tmp_path, "digits", "w1")
    svc = deploy("digits-svc", [model], _src(tmp_path, "azure", AZURE_SCORE))
    assert svc.state == "Healthy"
    assert svc.run({"x": [1, 2, 3]})["sum"] == 6
    with httpx.Client(timeout=10) as client:
        r = client.post(svc.scoring_uri, content=b'{"x": [4, 5]}', headers={"x-request-id": "abc-1"})
        assert r.status_code == 200 and r.json()["sum"] == 9 and r.json()["weights"] == "w1"
        assert r.headers["x-request-id"] == "abc-1"
        assert len(client.post(svc.scoring_uri, json={"x": [1]}).headers["x-request-id"]) == 32
        base = svc.scoring_uri.rsplit("/", 1)[0]
        assert client.get(base + "/").text == "Healthy"
        swagger = client.get(svc.swagger_uri).json()
        assert swagger["paths"]["/score"]["post"]["parameters"][0]["schema"]["example"] == {"x": [1, 2]}
        assert client.get(base + "/v2/health/live").status_code == 200
        assert client.get(base + "/v2/health/ready").json() == {"ready": True}
        meta = client.get(base + "/v2/models/digits-svc").json()
        assert meta["name"] == "digits-svc" and meta["versions"] == ["digits:1"]
        assert client.get(base + "/v2/models/other").status_code == 404
        assert client.post(base + "/v2/models/digits-svc/infer", json={"inputs": []}).status_code == 404
        failed = client.post(svc.scoring_uri, json={"boom": True})
        assert failed.status_code == 500 and "asked to fail" in failed.json()["error"]
        assert client.post(svc.scoring_uri, json={"x": [1]}).status_code == 200  # still up
        metrics = client.get(base + "/metrics").text
        assert 'code="200"} 4' in metrics and 'code="500"} 1' in metrics
        assert "torchyard_request_duration_seconds_bucket" in metrics and "torchyard_batch_size_count" in metrics
    assert "ValueError: asked to fail" in svc.get_logs()
    assert [s.name for s in Webservice.list(ws)] == ["digits-svc"]
    again = Webservice(ws, "digits-svc")
    assert again.scoring_uri == svc.scoring_uri and again.models == ["digits:1"]
    with pytest.raises(WorkspaceError, match="used by the service"):
        model.delete()
    with pytest.raises(SpecError, match="name"):
        deploy("digits-svc", [model], _src(tmp_path, "azure", AZURE_SCORE))
    svc.delete()
    with pytest.raises(NotFoundError):
        Webservice(ws, "digits-svc")
    model.delete()  # no service uses it any more


def test_typed_batching_infer_and_backpressure(ws: Workspace, tmp_path: Path, deploy: Callable[..., Webservice]) -> None:
    model = _model(ws, tmp_path, "typed", "w")
    svc = deploy("typed", [model], _src(tmp_path, "typed", TYPED_SCORE), max_batch_size=16, max_batch_delay_ms=50,
                 max_concurrent_requests=24, request_timeout_ms=1500)
    uri = svc.scoring_uri
    assert uri is not None
    base = uri.rsplit("/", 1)[0]

    async def burst(n: int, body: object) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(client.post(uri, json=body) for _ in range(n)))

    answers = asyncio.run(burst(16, [1.0, 2.0]))
    assert all(r.status_code == 200 for r in answers)
    assert all(r.json()["echo"] == [1.0, 2.0] for r in answers)
    assert max(r.json()["n"] for r in answers) > 1  # batched
    with httpx.Client(timeout=10) as client:
        infer = client.post(base + "/v2/models/typed/infer",
                            json={"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
        assert infer.status_code == 200
        assert infer.json()["outputs"][0]["datatype"] == "BYTES" and infer.json()["model_name"] == "typed"
        assert client.post(base + "/v2/models/typed/infer", json={"nope": 1}).status_code == 400
        assert client.post(base + "/v2/models/other/infer", json={"inputs": [{"data": [1]}]}).status_code == 404
        assert client.post(uri, content=b"{not json").status_code == 400
        metrics = client.get(base + "/metrics").text
        assert "torchyard_batch_size_bucket" in metrics
        # 504: an answer that takes longer than request_timeout_ms
        slow = client.post(uri, json={"sleep": 2.5})
        assert slow.status_code == 504
    # 429: more than max_concurrent_requests at once (the first slow batch holds 24 slots)
    answers = asyncio.run(burst(40, {"sleep": 0.3}))
    codes = sorted({r.status_code for r in answers})
    assert 429 in codes and (200 in codes or 504 in codes), codes
    assert svc.run([3]) is not None  # the service is fine afterwards


QUICK_SCORE = """
import time
class Scorer:
    def load(self, model_dir):
        pass
    def predict(self, batch):
        time.sleep(0.0005)  # a small model: quick enough for the event-loop fast path (<= 2 ms a call)
        return [len(batch)] * len(batch)
"""


def _batch_totals(client: httpx.Client, base: str) -> tuple[float, float]:
    inputs = calls = 0.0
    for line in client.get(base + "/metrics").text.splitlines():
        if line.startswith("torchyard_batch_size_sum"):
            inputs += float(line.rsplit(" ", 1)[1])
        elif line.startswith("torchyard_batch_size_count"):
            calls += float(line.rsplit(" ", 1)[1])
    return inputs, calls


async def _keepalive_load(host: str, port: int, request: bytes, clients: int, each: int) -> list[int]:
    """``clients`` keep-alive connections, each sending ``request`` ``each`` times, one at a time
    (a closed loop, as load generators and busy frontends drive a service): the status codes."""
    async def one() -> list[int]:
        reader, writer = await asyncio.open_connection(host, port)
        codes = []
        try:
            for _ in range(each):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                           if line.startswith(b"content-length:")]
                if lengths:
                    await reader.readexactly(lengths[0])
                else:  # chunked
                    while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)) > 0:
                        await reader.readexactly(size + 2)
                    await reader.readexactly(2)
                codes.append(int(head.split(b" ")[1]))
        finally:
            writer.close()
        return codes
    return [c for codes in await asyncio.gather(*(one() for _ in range(clients))) for c in codes]


def test_a_quick_model_under_steady_load_is_batched_not_answered_one_by_one(
        ws: Workspace, tmp_path: Path, deploy: Callable[..., Webservice]) -> None:
    """A model quick enough for the fast path, under a closed loop of 32 keep-alive clients:
    requests that arrive together are batched. (Before, each was answered inline while the others
    waited unparsed, so every later request was alone too: a mean batch of 1.0 at c=32 and c=64.)"""
    svc = deploy("quick", [_model(ws, tmp_path, "quick", "q")], _src(tmp_path, "quick", QUICK_SCORE),
                 max_batch_size=64, max_batch_delay_ms=2)
    uri = svc.scoring_uri
    assert uri is not None
    base = uri.rsplit("/", 1)[0]
    host, port = base.split("//")[1].rsplit(":", 1)
    body = b"[" + b",".join([b"0.5"] * 64) + b"]"
    request = (f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with httpx.Client(timeout=10) as client:
        assert client.post(uri, json=[0.5]).json() == 1  # alone: answered at once
        before = _batch_totals(client, base)
        codes = asyncio.run(_keepalive_load(host, int(port), request, 32, 50))
        after = _batch_totals(client, base)
    assert codes == [200] * 1600
    inputs, calls = after[0] - before[0], after[1] - before[1]
    assert inputs == 1600 and inputs / calls >= 4.0, f"mean batch {inputs / calls:.2f} over {calls:.0f} calls"


def test_starting_503_then_ready_and_auth(ws: Workspace, tmp_path: Path, deploy: Callable[..., Webservice],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(ws, tmp_path, "slow", "w")
    monkeypatch.setenv("LOAD_SLEEP", "2")
    svc = deploy("slow", [model], _src(tmp_path, "typed", TYPED_SCORE), wait=False, auth_enabled=True)
    deadline = time.monotonic() + 30
    while svc.scoring_uri is None and time.monotonic() < deadline:
        time.sleep(0.02)
    uri = svc.scoring_uri
    assert uri is not None
    primary, secondary = svc.get_keys()
    seen = set()
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                r = client.post(uri, json=[1], headers={"Authorization": f"Bearer {primary}"})
            except httpx.TransportError:
                time.sleep(0.02)  # the worker is not listening yet
                continue
            seen.add(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            time.sleep(0.05)
        assert seen == {503, 200}
        svc.wait_for_deployment(timeout_sec=10)  # the supervisor notices within its poll
        assert svc.state == "Healthy"
        assert client.post(uri, json=[1]).status_code == 401
        assert client.post(uri, json=[1], headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post(uri, json=[1], headers={"Authorization": f"Bearer {secondary}"}).status_code == 200
        assert client.get(uri.rsplit("/", 1)[0] + "/metrics").status_code == 401
        svc.regen_key("primary")
        assert client.post(uri, json=[1], headers={"Authorization": f"Bearer {primary}"}).status_code == 401
        new_primary = svc.get_keys()[0]
        assert client.post(uri, json=[1], headers={"Authorization": f"Bearer {new_primary}"}).status_code == 200
    assert svc.run([1])["echo"] == [1]  # the SDK sends the key


def test_bad_input_leaves_nothing(ws: Workspace, tmp_path: Path, deploy: Callable[..., Webservice]) -> None:
    model = _model(ws, tmp_path, "bad", "w")
    services = Path(ws.path) / "services"

    def refused(field: str, src: Path, **config: object) -> None:
        with pytest.raises(SpecError) as info:
            Model.deploy(ws, "bad", [model], InferenceConfig(entry_script="score.py", source_directory=str(src)),
                         LocalWebservice.deploy_configuration(**config))  # type: ignore[arg-type]
        assert info.value.field == field, info.value
        assert not (services / "bad").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    refused("entry_script", empty)
    refused("entry_script", _src(tmp_path, "noinit", "def run(raw):\n    return raw\n"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        refused("port", _src(tmp_path, "azure", AZURE_SCORE), port=busy.getsockname()[1])
    with pytest.raises(SpecError, match="host"):
        LocalWebservice.deploy_configuration(host="0.0.0.0")
    with pytest.raises(SpecError, match="max_batch_size"):
        LocalWebservice.deploy_configuration(max_batch_size=0)
    with pytest.raises(NotFoundError, match="no version 7"):
        Model.deploy(ws, "bad", ["bad:7"], InferenceConfig(source_directory=str(_src(tmp_path, "azure", AZURE_SCORE))))
    assert not (services / "bad").exists()
    raising = _src(tmp_path, "raising", "def init():\n    raise RuntimeError('no weights here')\ndef run(raw):\n    return 1\n")
    with pytest.raises(DeploymentError, match="no weights here") as info:
        deploy("bad", [model], raising)
    svc = Webservice(ws, "bad")
    assert svc.state == "Failed"
    assert "RuntimeError: no weights here" in svc.get_logs() and "Traceback" in info.value.logs


def _load(uri: str, stop: threading.Event, results: list[tuple[int, str]], errors: list[str]) -> None:
    with httpx.Client(timeout=20) as client:
        while not stop.is_set():
            try:
                r = client.post(uri, json={"x": [1]})
                results.append((r.status_code, r.json().get("weights", "") if r.status_code == 200 else r.text))
            except httpx.HTTPError as err:
                errors.append(repr(err))


def test_update_drops_nothing_and_crashed_worker_restarts(
    ws: Workspace, tmp_path: Path, deploy: Callable[..., Webservice]
) -> None:
    v1 = _model(ws, tmp_path, "live", "v1")
    v2 = _model(ws, tmp_path, "live", "v2")
    svc = deploy("live", [v1], _src(tmp_path, "azure", AZURE_SCORE), workers=2)
    uri = svc.scoring_uri
    assert uri is not None
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_load, args=(uri, stop, results, errors)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        svc.update(models=[v2])
        time.sleep(0.7)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert {code for code, _ in results} == {200}
    weights = [w for _, w in results]
    assert weights[0] == "v1" and weights[-1] == "v2" and len(results) > 20
    assert svc.models == ["live:2"]
    with pytest.raises(DeploymentError, match="no weights here"):
        svc.update(inference_config=InferenceConfig(source_directory=str(
            _src(tmp_path, "raising", "def init():\n    raise RuntimeError('no weights here')\ndef run(raw):\n    return 1\n"))))
    assert svc.run({"x": [2]})["weights"] == "v2"  # the previous version serves on
    # a worker killed hard is restarted, and the state and logs say so
    pid = svc.run({"x": [1]})["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = svc.get_details()["status"]
        if status.get("restarts") == 1 and svc.state == "Healthy":
            break
        time.sleep(0.05)
    assert svc.get_details()["status"]["restarts"] == 1
    assert "died (signal 9); restarting" in svc.get_logs()
    assert svc.run({"x": [1]})["weights"] == "v2"


def test_service_outlives_the_deploying_process(ws: Workspace, tmp_path: Path) -> None:
    _model(ws, tmp_path, "detached", "w")
    src = _src(tmp_path, "azure", AZURE_SCORE)
    code = textwrap.dedent(f"""
        from torchyard import InferenceConfig, Model, Workspace
        ws = Workspace(path={ws.path!r})
        svc = Model.deploy(ws, "detached", ["detached:1"], InferenceConfig(source_directory={str(src)!r}))
        svc.wait_for_deployment(timeout_sec=60)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=90)
    svc = Webservice(ws, "detached")
    try:
        assert svc.state == "Healthy"
        assert svc.run({"x": [1, 1]})["sum"] == 2
    finally:
        svc.delete()


def test_service_environment_comes_from_the_run_cache(ws: Workspace, tmp_path: Path) -> None:
    from torchyard import Environment
    from torchyard.environments import environment_key
    from torchyard.spec.job import EnvironmentSpec

    pkg = "tomli-w==1.2.0"  # tiny, pure Python, not in the base interpreter (as in test_environments)
    model = _model(ws, tmp_path, "env", "w")
    src = _src(tmp_path, "envsrc", "import sys, tomli_w\ndef init():\n    pass\ndef run(raw):\n"
                                   "    return {'python': sys.executable, 'toml': tomli_w.dumps({'a': 1})}\n")
    svc = Model.deploy(ws, "envsvc", [model],
                       InferenceConfig(source_directory=str(src), environment=Environment("svc", pip=[pkg])))
    try:
        svc.wait_for_deployment(timeout_sec=240)
        answer = svc.run("{}")
        key = environment_key(EnvironmentSpec(pip_packages=(pkg,)))
        assert answer == {"python": os.path.join(ws.path, "envs", key, "bin", "python"), "toml": "a = 1\n"}
        assert svc.get_details()["status"]["environment"]["key"] == key
        assert "environment.txt" in svc.get_logs()
    finally:
        svc.delete()
