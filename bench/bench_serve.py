"""Model serving: torchyard's local service against `mlflow models serve`, a minimal FastAPI app and
LitServe, in one run, on this machine, with the same pinned model.

The model: an MLP 784→1024→1024→10, float32, CPU, seed 0; one 784-float sample per request as JSON;
torch threads = 1 per worker; one worker each; loopback only; bounded request counts. Every server
that runs our code (torchyard's score.py, the FastAPI app, LitServe's decode_request) turns the
decoded list into a tensor the same way, ``torch.from_numpy(numpy.array(x, dtype=numpy.float32))``
(about half the cost of ``torch.tensor(x)``); mlflow's pyfunc converts in its own code.

The load generator is a small asyncio HTTP/1.1 client (one keep-alive connection per concurrent
slot, requests pre-encoded), the same for every server, so client overhead is small and equal.

Reported: req/s, p50 and p99 at concurrency 1 and 32; torchyard with dynamic batching at 32 and 64
against itself unbatched at 64 (the batching gain); cold start (process start or ``Model.deploy`` to
the first 200); failed requests while ``service.update`` swaps the model under load.

    python bench/bench_serve.py [--requests 400] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _table import print_table  # noqa: E402

MODEL_CODE = """
import torch
class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                       torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    def forward(self, x):
        return self.net(x)
def load(path):
    torch.set_num_threads(1)
    model = MLP()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()
"""

TORCHYARD_SCORE = """
import os, numpy, torch
from mlp import load
class Scorer:
    def load(self, model_dir):
        self.model = load(os.path.join(model_dir, "mlp.pt"))
    def predict(self, batch):
        with torch.inference_mode():
            return self.model(torch.from_numpy(numpy.array(batch, dtype=numpy.float32))).tolist()
"""

FASTAPI_APP = """
import json, sys, numpy, torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlp import load
model = load(sys.argv[-1] if sys.argv[-1].endswith(".pt") else "mlp.pt")
app = FastAPI()
@app.post("/predict")
async def predict(request: Request):
    x = torch.from_numpy(numpy.array(json.loads(await request.body()), dtype=numpy.float32)).unsqueeze(0)
    with torch.inference_mode():
        return JSONResponse(model(x)[0].tolist())
"""

LITSERVE_APP = """
import sys, numpy, torch
import litserve as ls
from mlp import load
class API(ls.LitAPI):
    def setup(self, device):
        self.model = load("mlp.pt")
    def decode_request(self, request):
        return torch.from_numpy(numpy.array(request["input"], dtype=numpy.float32))
    def predict(self, x):
        with torch.inference_mode():
            return self.model(x.unsqueeze(0))[0]
    def encode_response(self, output):
        return {"output": output.tolist()}
if __name__ == "__main__":
    ls.LitServer(API(), accelerator="cpu", workers_per_device=1, timeout=30).run(
        host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning",
        num_api_servers=1)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the load generator -------------------------------------------------------------------------


def request_bytes(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(length or 0)
    return status, body, close


async def load(port: int, payload: bytes, concurrency: int, total: int) -> dict[str, Any]:
    """``total`` requests over ``concurrency`` keep-alive connections; latencies in ms."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors = 0
    left = total

    async def conn() -> None:
        nonlocal left, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                try:
                    writer.write(payload)
                    status, _body, close = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                codes[status] = codes.get(status, 0) + 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "rps": len(latencies) / wall,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "codes": codes,
        "errors": errors,
    }


def wait_200(port: int, payload: bytes, deadline_s: float = 120.0, proc: Any = None) -> float:
    """Poll until one request gets a 200; returns the moment it did (perf_counter)."""

    async def once() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            return (await read_response(reader))[0]
        finally:
            writer.close()

    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited {proc.proc.returncode} (see its log)")
        try:
            if asyncio.run(once()) == 200:
                return time.perf_counter()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"no 200 from port {port} within {deadline_s} s")


# ---- the peers ----------------------------------------------------------------------------------


class Proc:
    def __init__(self, argv: list[str], cwd: str, log: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": cwd,
               "MLFLOW_TRACKING_URI": f"file://{cwd}/mlruns", "LITSERVE_DISABLE_TELEMETRY": "1",
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        self.log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        import signal  # noqa: PLC0415

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.log.close()


HTTP_FLOOR_APP = """
import sys, uvicorn
ANSWER = b"[" + b",".join(b"0.123456789" for _ in range(10)) + b"]"
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ANSWER})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _p50_us(fn: Any, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def c1_profile(work: Path, body: bytes, sample: list[float], model: Any, n1: int, rounds: int) -> int:
    """Where the time of one request at concurrency 1 goes: the in-process pieces of the scoring
    path (msgspec decode, tensor, forward, tolist + encode), an HTTP round trip on the same stack
    (uvicorn + uvloop + httptools, this client) with no model, and torchyard's service with the
    event-loop fast path on and off (``TORCHYARD_INLINE_MAX_MS=0``), interleaved round by round."""
    import msgspec  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    decode, encode = msgspec.json.decode, msgspec.json.encode
    parsed = decode(body)
    x = torch.tensor([parsed], dtype=torch.float32)
    with torch.inference_mode():
        out = model(x)
        pieces = {
            "msgspec decode of the 784-float body": _p50_us(lambda: decode(body)),
            "torch.tensor([sample]) from the list (for comparison)": _p50_us(
                lambda: torch.tensor([parsed], dtype=torch.float32)),
            "torch.from_numpy(numpy.array([sample], float32)) (what the servers do)": _p50_us(
                lambda: torch.from_numpy(np.array([parsed], dtype=np.float32))),
            "forward pass": _p50_us(lambda: model(x)),
            "tolist() + msgspec encode of the answer": _p50_us(lambda: encode(out.tolist()[0])),
            "all of the above (the scoring path in-process)": _p50_us(
                lambda: encode(model(torch.from_numpy(np.array([decode(body)], dtype=np.float32))).tolist()[0])),
        }
    print_table(["in-process piece (p50 of 2,000)", "µs"], [[k, f"{v:.0f}"] for k, v in pieces.items()])

    from torchyard import InferenceConfig, LocalWebservice, Model, Workspace  # noqa: PLC0415

    src = work / "ty_src"
    src.mkdir(exist_ok=True)
    (src / "score.py").write_text(textwrap.dedent(TORCHYARD_SCORE))
    shutil.copy(work / "mlp.py", src / "mlp.py")
    ws = Workspace(path=work / ".torchyard")
    registered = Model.register(ws, work / "mlp.pt", "mlp")
    ty_payload = request_bytes("/score", body)
    (work / "floor.py").write_text(textwrap.dedent(HTTP_FLOOR_APP))
    floor_port = free_port()
    floor = Proc([sys.executable, str(work / "floor.py"), str(floor_port)], str(work), str(work / "floor.log"))
    services = []
    p50s: dict[str, list[float]] = {"HTTP round trip, no model (uvicorn floor)": [],
                                    "torchyard, fast path off (thread hand-off)": [],
                                    "torchyard, fast path on (default)": []}
    try:
        ports = {}
        for label, env in (("torchyard, fast path off (thread hand-off)", {"TORCHYARD_INLINE_MAX_MS": "0"}),
                           ("torchyard, fast path on (default)", {})):
            port = free_port()
            ic = InferenceConfig(entry_script="score.py", source_directory=str(src), environment_variables=env)
            svc = Model.deploy(ws, f"mlp-{len(services)}", [registered], ic,
                               LocalWebservice.deploy_configuration(port=port))
            services.append(svc)
            svc.wait_for_deployment()
            ports[label] = port
        ports["HTTP round trip, no model (uvicorn floor)"] = floor_port
        wait_200(floor_port, request_bytes("/", body), proc=floor)
        for port in ports.values():
            asyncio.run(load(port, ty_payload, 1, 100))  # warm-up
        for _ in range(rounds):
            for label, port in ports.items():
                res = asyncio.run(load(port, ty_payload, 1, n1))
                assert res["errors"] == 0 and set(res["codes"]) == {200}, res
                p50s[label].append(res["p50"])
    finally:
        for svc in services:
            svc.delete()
        floor.stop()
    rows = [[label, " ".join(f"{v:.3f}" for v in vals), f"{statistics.median(vals):.3f}"]
            for label, vals in p50s.items()]
    print_table([f"c=1 over HTTP ({n1} requests a round)", "p50 ms by round", "median p50 ms"], rows)
    forward = pieces["forward pass"] / 1000
    for label, vals in p50s.items():
        print(f"{label}: +{statistics.median(vals) - forward:.3f} ms over the in-process forward pass "
              f"({forward:.3f} ms)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


def batch_totals(port: int) -> tuple[float, float]:
    """(inputs, model calls) so far, from the service's /metrics."""
    import urllib.request  # noqa: PLC0415

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in total:
            if line.startswith(f"torchyard_batch_size_{kind}"):
                total[kind] += float(line.rsplit(" ", 1)[1])
    return total["sum"], total["count"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency-1 cell (x4 at 32/64)")
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--skip", default="", help="comma-separated peers to leave out: mlflow,fastapi,litserve")
    ap.add_argument("--c1-profile", action="store_true",
                    help="only the concurrency-1 breakdown: the in-process pieces, an HTTP floor without a model, "
                    "and torchyard with and without the event-loop fast path, interleaved")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --c1-profile")
    args = ap.parse_args()
    n1 = 60 if args.quick else args.requests
    nbig = 4 * n1
    skip = set(filter(None, args.skip.split(",")))

    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    (work / "mlp.py").write_text(textwrap.dedent(MODEL_CODE))
    sys.path.insert(0, str(work))
    from mlp import MLP  # noqa: PLC0415
    from mlp import load as load_mlp

    torch.save(MLP().state_dict(), work / "mlp.pt")
    rng = random.Random(0)
    sample = [round(rng.random(), 6) for _ in range(784)]
    body = json.dumps(sample).encode()

    # in-process forward pass: the floor for latency
    model = load_mlp(str(work / "mlp.pt"))
    x = torch.tensor([sample])
    times = []
    with torch.inference_mode():
        for _ in range(30):
            model(x)
        for _ in range(300):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    forward_ms = statistics.median(times)
    t_json = []
    for _ in range(300):
        t0 = time.perf_counter()
        with torch.inference_mode():
            json.dumps(model(torch.from_numpy(np.array([json.loads(body)], dtype=np.float32)))[0].tolist())
        t_json.append((time.perf_counter() - t0) * 1000)
    forward_json_ms = statistics.median(t_json)

    if args.c1_profile:
        return c1_profile(work, body, sample, model, n1, args.rounds)

    rows: list[list[Any]] = []
    results: dict[str, dict[str, Any]] = {}
    cold: dict[str, float] = {}

    def measure(name: str, port: int, payload: bytes, cells: list[tuple[int, int]]) -> None:
        asyncio.run(load(port, payload, 4, 40))  # warm-up
        for conc, total in cells:
            res = asyncio.run(load(port, payload, conc, total))
            results[f"{name}@{conc}"] = res
            bad = res["errors"] + sum(v for k, v in res["codes"].items() if k != 200)
            rows.append([name, conc, total, f"{res['rps']:.0f}", f"{res['p50']:.2f}", f"{res['p99']:.2f}", bad])

    # ---- torchyard ----
    from torchyard import InferenceConfig, LocalWebservice, Model, Webservice, Workspace  # noqa: PLC0415

    src = work / "ty_src"
    src.mkdir()
    (src / "score.py").write_text(textwrap.dedent(TORCHYARD_SCORE))
    shutil.copy(work / "mlp.py", src / "mlp.py")
    ws = Workspace(path=work / ".torchyard")
    registered = Model.register(ws, work / "mlp.pt", "mlp")
    ic = InferenceConfig(entry_script="score.py", source_directory=str(src))
    ty_payload = request_bytes("/score", body)
    services = []
    try:
        port = free_port()
        t0 = time.perf_counter()
        svc = Model.deploy(ws, "mlp-unbatched", [registered], ic,
                           LocalWebservice.deploy_configuration(port=port, max_batch_size=1))
        services.append(svc)
        cold["torchyard"] = wait_200(port, ty_payload) - t0
        measure("torchyard (unbatched)", port, ty_payload, [(1, n1), (32, nbig), (64, nbig)])
        svc.delete()
        port = free_port()
        svc = Model.deploy(ws, "mlp-batched", [registered], ic,
                           LocalWebservice.deploy_configuration(port=port, max_batch_size=64, max_batch_delay_ms=2))
        services.append(svc)
        svc.wait_for_deployment()
        for conc, total in ((1, n1), (32, nbig), (64, nbig)):
            before = batch_totals(port)
            measure("torchyard (batching 64, 2 ms)", port, ty_payload, [(conc, total)])
            after = batch_totals(port)
            calls = after[1] - before[1]
            print(f"  batching at c={conc}: {calls} model calls, mean batch {(after[0] - before[0]) / max(calls, 1):.1f} "
                  "(the warm-up's included)", flush=True)

        # zero failed requests while service.update swaps the model under load
        second = Model.register(ws, work / "mlp.pt", "mlp")
        box: dict[str, Any] = {}

        def under_load() -> None:
            box["res"] = asyncio.run(load(port, ty_payload, 16, 6 * n1))

        thread = threading.Thread(target=under_load)
        thread.start()
        time.sleep(0.3)
        t_up = time.perf_counter()
        svc.update(models=[second])
        box["update_s"] = time.perf_counter() - t_up
        thread.join()
        res = box["res"]
        update_failed = res["errors"] + sum(v for k, v in res["codes"].items() if k != 200)
        update_line = (f"service.update under load (c=16, {sum(res['codes'].values()) + res['errors']} requests, "
                       f"swap took {box['update_s']:.2f} s): {update_failed} failed")
        svc.delete()

        # an endpoint (router) in front of two deployments: its cost, and a traffic shift under load
        from torchyard import Endpoint  # noqa: PLC0415

        endpoint = Endpoint.create(ws, "mlp")
        try:
            cfg = LocalWebservice.deploy_configuration(max_batch_size=64, max_batch_delay_ms=2)
            endpoint.deploy("blue", [registered], ic, cfg)
            endpoint.deploy("green", [second], ic, cfg)
            eport = int(endpoint.scoring_uri.rsplit(":", 1)[1].split("/")[0])
            measure("torchyard endpoint (router + batching)", eport, ty_payload, [(1, n1), (32, nbig)])

            def shifting() -> None:
                box["shift"] = asyncio.run(load(eport, ty_payload, 16, 6 * n1))

            thread = threading.Thread(target=shifting)
            thread.start()
            for blue in (75, 50, 25, 0, 100):
                time.sleep(0.15)
                endpoint.set_traffic({"blue": blue, "green": 100 - blue})
            thread.join()
            res = box["shift"]
            shift_failed = res["errors"] + sum(v for k, v in res["codes"].items() if k != 200)
            shift_line = (f"traffic shift under load (c=16, {sum(res['codes'].values()) + res['errors']} requests, "
                          f"5 shifts): {shift_failed} failed")
        finally:
            endpoint.delete()
    finally:
        for s in Webservice.list(ws):
            s.delete()

    # ---- FastAPI floor ----
    if "fastapi" not in skip:
        (work / "fastapi_app.py").write_text(textwrap.dedent(FASTAPI_APP))
        port = free_port()
        t0 = time.perf_counter()
        p = Proc([sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port), "--host", "127.0.0.1",
                  "--log-level", "warning", "--no-access-log"], str(work), str(work / "fastapi.log"))
        try:
            payload = request_bytes("/predict", body)
            cold["fastapi"] = wait_200(port, payload, proc=p) - t0
            measure("FastAPI + uvicorn (floor)", port, payload, [(1, n1), (32, nbig)])
        finally:
            p.stop()

    # ---- mlflow models serve ----
    if "mlflow" not in skip:
        import mlflow.pytorch  # noqa: PLC0415

        mdir = work / "mlflow_model"
        import numpy as np  # noqa: PLC0415

        # mlflow's default format (pt2, a traced graph) needs an input example
        mlflow.pytorch.save_model(model, str(mdir), code_paths=[str(work / "mlp.py")],
                                  input_example=np.asarray([sample], dtype=np.float32))
        port = free_port()
        mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
        if not os.path.exists(mlflow_bin):  # a venv that sees the system's packages but not their scripts
            mlflow_bin = shutil.which("mlflow") or mlflow_bin
        t0 = time.perf_counter()
        p = Proc([mlflow_bin, "models", "serve", "-m", str(mdir), "--env-manager", "local", "-p", str(port),
                  "-h", "127.0.0.1", "-w", "1"], str(work), str(work / "mlflow.log"))
        try:
            payload = request_bytes("/invocations", json.dumps({"inputs": [sample]}).encode())
            cold["mlflow"] = wait_200(port, payload, proc=p) - t0
            measure("mlflow models serve", port, payload, [(1, n1), (32, nbig)])
        finally:
            p.stop()

    # ---- LitServe ----
    if "litserve" not in skip:
        (work / "litserve_app.py").write_text(textwrap.dedent(LITSERVE_APP))
        port = free_port()
        t0 = time.perf_counter()
        p = Proc([sys.executable, "litserve_app.py", str(port)], str(work), str(work / "litserve.log"))
        try:
            payload = request_bytes("/predict", json.dumps({"input": sample}).encode())
            cold["litserve"] = wait_200(port, payload, proc=p) - t0
            measure("LitServe", port, payload, [(1, n1), (32, nbig)])
        finally:
            p.stop()

    print(f"in-process forward pass (1 sample, 1 thread): p50 {forward_ms:.3f} ms; "
          f"with JSON decode/encode: {forward_json_ms:.3f} ms")
    print_table(["server", "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "failed"], rows)
    print()
    print("cold start to the first 200: " + ", ".join(f"{k} {v:.2f} s" for k, v in cold.items()))
    print(update_line)
    print(shift_line)
    ub, bt = results["torchyard (unbatched)@64"], results["torchyard (batching 64, 2 ms)@64"]
    print(f"batching gain at c=64: {bt['rps'] / ub['rps']:.2f}x ({bt['rps']:.0f} vs {ub['rps']:.0f} req/s)")
    if "mlflow models serve@32" in results:
        m32 = results["mlflow models serve@32"]["rps"]
        print(f"c=32 vs mlflow: unbatched {results['torchyard (unbatched)@32']['rps'] / m32:.2f}x, "
              f"batched {results['torchyard (batching 64, 2 ms)@32']['rps'] / m32:.2f}x")
    print(f"p50 at c=1 minus the in-process forward pass: "
          f"{results['torchyard (unbatched)@1']['p50'] - forward_ms:.3f} ms (target ≤ 0.5)")
    if "FastAPI + uvicorn (floor)@1" in results:
        print(f"  (the FastAPI floor: {results['FastAPI + uvicorn (floor)@1']['p50'] - forward_ms:.3f} ms)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
