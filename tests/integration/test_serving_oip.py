"""The Open Inference Protocol (V2) endpoint of a local model service, called by the real Triton
client (``tritonclient.http``): binary tensors (the client's default) and JSON tensors, both ways;
the request's ``id`` comes back; the answer is the model's own forward pass."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from torchyard import InferenceConfig, LocalWebservice, Model, Webservice, Workspace
from torchyard.errors import NotFoundError

tritonhttp = pytest.importorskip("tritonclient.http")

LINEAR_SCORE = """
import os
import torch

class Scorer:
    def load(self, model_dir):
        self.net = torch.nn.Linear(4, 3)
        self.net.load_state_dict(torch.load(os.path.join(model_dir, "linear.pt")))
        self.net.eval()

    def predict(self, batch):
        x = torch.tensor(batch, dtype=torch.float32).reshape(len(batch), 4)
        with torch.no_grad():
            return self.net(x).tolist()
"""


def _linear(ws: Workspace, tmp_path: Path) -> tuple[Model, InferenceConfig, torch.nn.Linear]:
    """A torch Linear(4, 3) registered as ``linear``, its typed scoring code, and the net itself."""
    torch.manual_seed(7)
    net = torch.nn.Linear(4, 3).eval()
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "linear.pt")
    model = Model.register(ws, folder / "linear.pt", "linear")
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text(textwrap.dedent(LINEAR_SCORE))
    return model, InferenceConfig(entry_script="score.py", source_directory=str(src)), net


@pytest.fixture
def served(ws: Workspace, tmp_path: Path) -> Iterator[tuple[str, torch.nn.Linear]]:
    """The Linear served as ``linear`` (typed API): the service's host:port and the net."""
    model, inference, net = _linear(ws, tmp_path)
    svc = Model.deploy(ws, "linear", [model], inference, LocalWebservice.deploy_configuration())
    try:
        svc.wait_for_deployment(timeout_sec=90)
        uri = svc.scoring_uri
        assert uri is not None
        yield uri.removeprefix("http://").rsplit("/", 1)[0], net
    finally:
        try:
            Webservice(ws, "linear").delete()
        except NotFoundError:
            pass


def _forward(net: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x.reshape(1, 4))).numpy().reshape(3)


def _infer(client: object, x: np.ndarray, *, binary_in: bool, binary_out: bool | None, request_id: str,
           model: str = "linear") -> object:
    inp = tritonhttp.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x.reshape(1, 4), binary_data=binary_in)
    outputs = None if binary_out is None else [tritonhttp.InferRequestedOutput("y", binary_data=binary_out)]
    return client.infer(model, [inp], outputs=outputs, request_id=request_id)  # type: ignore[attr-defined]


def test_triton_client_binary_and_json_tensors(served: tuple[str, torch.nn.Linear]) -> None:
    address, net = served
    x = np.array([0.5, -1.25, 3.0, 2.0], dtype=np.float32)
    want = _forward(net, x)
    client = tritonhttp.InferenceServerClient(url=address, network_timeout=30.0)
    try:
        for binary_in in (True, False):
            # no outputs named: the client asks binary_data_output; the output is output-0
            result = _infer(client, x, binary_in=binary_in, binary_out=None, request_id=f"req-{binary_in}")
            assert result.get_response()["id"] == f"req-{binary_in}"  # type: ignore[attr-defined]
            got = result.as_numpy("output-0")  # type: ignore[attr-defined]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            assert result.get_output("output-0")["parameters"]["binary_data_size"] == 12  # type: ignore[attr-defined]
            for binary_out in (True, False):  # a named output, binary or JSON as asked
                result = _infer(client, x, binary_in=binary_in, binary_out=binary_out, request_id="named-1")
                assert result.get_response()["id"] == "named-1"  # type: ignore[attr-defined]
                np.testing.assert_allclose(result.as_numpy("y"), want, rtol=1e-6, atol=1e-6)  # type: ignore[attr-defined]
                assert ("data" in result.get_output("y")) is not binary_out  # type: ignore[attr-defined]
    finally:
        client.close()
    with httpx.Client(timeout=10) as http:
        base = f"http://{address}/v2/models/linear/infer"
        plain = http.post(base, json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                                  "data": x.tolist()}]})
        assert plain.status_code == 200 and len(plain.json()["id"]) == 32  # no id asked: the request id
        # broken binary framing: 400 naming the problem, never a 500
        head = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}'
        for body, length in ((head + b"\0" * 8, len(head)), (head + b"\0" * 20, len(head)), (head, len(head) + 5),
                             (head + b"\0" * 16, "twelve")):
            bad = http.post(base, content=body, headers={"Inference-Header-Content-Length": str(length)})
            assert bad.status_code == 400, (bad.status_code, bad.text)
            assert bad.json()["error"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=arrays(np.float32, 4, elements=st.floats(-1e3, 1e3, width=32)), binary=st.booleans(),
       request_id=st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=40))
def test_any_tensor_round_trips_as_the_forward_pass(served: tuple[str, torch.nn.Linear], x: np.ndarray,
                                                    binary: bool, request_id: str) -> None:
    address, net = served
    client = tritonhttp.InferenceServerClient(url=address, network_timeout=30.0)
    try:
        result = _infer(client, x, binary_in=binary, binary_out=None, request_id=request_id)
    finally:
        client.close()
    assert result.get_response()["id"] == request_id  # type: ignore[attr-defined]
    np.testing.assert_allclose(result.as_numpy("output-0"), _forward(net, x), rtol=1e-5, atol=1e-4)  # type: ignore[attr-defined]


def test_binary_tensors_pass_through_an_endpoint_router(ws: Workspace, tmp_path: Path) -> None:
    from torchyard import Endpoint

    model, inference, net = _linear(ws, tmp_path)
    endpoint = Endpoint.create(ws, "linear-ep")
    try:
        endpoint.deploy("blue", [model], inference)
        uri = endpoint.scoring_uri
        assert uri is not None
        client = tritonhttp.InferenceServerClient(url=uri.removeprefix("http://").rsplit("/", 1)[0],
                                                  network_timeout=30.0)
        x = np.array([1.0, 2.0, -3.0, 0.25], dtype=np.float32)
        try:
            # behind a router the deployment's service serves the model as its own name
            result = _infer(client, x, binary_in=True, binary_out=None, request_id="through-router",
                            model="linear-ep.blue")
        finally:
            client.close()
        assert result.get_response()["id"] == "through-router"  # type: ignore[attr-defined]
        np.testing.assert_allclose(result.as_numpy("output-0"), _forward(net, x), rtol=1e-6, atol=1e-6)  # type: ignore[attr-defined]
    finally:
        endpoint.delete()
        for svc in Webservice.list(ws):
            svc.delete()


def test_bytes_and_several_binary_inputs_decode() -> None:
    """The binary decoding itself (BYTES elements, INT64, several inputs in order), in-process."""
    from torchyard.runtime.serving.app import _decode_oip

    head = (b'{"id": "b1", "inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], '
            b'"parameters": {"binary_data_size": 11}}, {"name": "n", "datatype": "INT64", "shape": [2], '
            b'"parameters": {"binary_data_size": 16}}], "outputs": [{"name": "o", "parameters": {"binary_data": true}}]}')
    tail = (2).to_bytes(4, "little") + b"hi" + (1).to_bytes(4, "little") + b"\xff"
    tail += np.array([5, -6], dtype="<i8").tobytes()
    scope = {"headers": [(b"inference-header-content-length", str(len(head)).encode())]}
    body, ask = _decode_oip(head + tail, scope)
    assert body == {"s": ["hi", b"\xff"], "n": [5, -6]}
    assert (ask.id, ask.binary, ask.output_name) == ("b1", True, "o")
