"""The dashboard's JSON API against a real ``torchyard ui`` process on a free port, with httpx and
raw HTTP (for paths a client would normalize)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uiserver import XSS, UiServer, log_point, make_run, make_sweep, make_system_run, ui_server

from torchyard.status import RunStatus

N = 5000
SPIKE_AT = 3217


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path]]:
    from torchyard import Workspace

    root = tmp_path_factory.mktemp("uiapi")
    ws = Workspace(path=root / ".torchyard")
    src = root / "src"
    src.mkdir()
    (src / "train.py").write_text("print('training')\n")
    loss = [math.exp(-i / 500) for i in range(N)]
    loss[SPIKE_AT] = 1e6  # one blow-up a strided sampler would lose
    make_run(ws, "done", display_name="finished run", tags={"owner": "ana", "stage": "prod"},
             series={"loss": (loss, list(range(N))), "lr": ([0.1, 0.05], [0, 1])},
             rank_series={1: {"loss": ([2.0, 1.0], [0, 1])}},
             logs={0: "rank zero line\n" * 100, 1: "line from rank 1\nsecond line\n"},
             artifacts={"outputs/model.txt": b"weights", "outputs/page.html": b"<script>alert(1)</script>"},
             source=src)
    make_run(ws, "live", display_name="running run", statuses=(RunStatus.PREPARING, RunStatus.RUNNING),
             tags={"owner": "bo"}, series={"loss": ([3.0, 2.0], [0, 1])}, logs={0: "starting\n"})
    for i in range(7):
        make_run(ws, f"bulk_{i}", experiment="bulk", tags={"i": str(i)},
                 series={"acc": ([i / 10], [0])})
    make_run(ws, "xss", display_name=XSS, tags={XSS: XSS}, logs={0: XSS + "\n"})
    make_sweep(ws, "sw", [({"lr": 0.1, "layers": 2}, [0.5, 0.7, 0.9], "completed"),
                          ({"lr": 0.01, "layers": 3}, [0.4, 0.5], "early"),
                          ({"lr": 0.05, "layers": 4}, [0.6, 0.8], "running")])
    outside = root / "secret.txt"
    outside.write_text("top secret")
    os.symlink(outside, Path(ws.artifacts_dir("done"), "outputs", "link.txt"))
    yield ws, root


@pytest.fixture(scope="module")
def server(workspace: tuple[object, Path]) -> Iterator[UiServer]:
    ws, _root = workspace
    with ui_server(ws.path) as srv:  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def client(server: UiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def raw_get(server: UiServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = server.host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", server.host_port)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---- routes, OpenAPI ---------------------------------------------------------------------------------


def test_every_route_declares_a_permission(workspace: tuple[object, Path]) -> None:
    from starlette.routing import Route

    from torchyard.server.app import PERMISSIONS, create_app

    app = create_app(workspace[0], hosts=None)
    routes = list(app.routes)
    assert len(routes) >= 20
    missing = [r.path for r in routes if not isinstance(r, Route) or getattr(r.endpoint, "permission", None)
               not in PERMISSIONS]
    assert missing == []
    assert {r.endpoint.permission for r in routes if isinstance(r, Route)} >= {"read", "write"}


def test_openapi_documents_every_api_route(client: httpx.Client) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    ops = [(p, m, op) for p, methods in doc["paths"].items() for m, op in methods.items()]
    assert ("/api/v1/runs/{run_id}/cancel", "post") in {(p, m) for p, m, _ in ops}
    assert all(op["x-permission"] in ("read", "write", "admin", "public") for _, _, op in ops)  # public: login only
    assert {q["name"] for q in doc["paths"]["/api/v1/runs/{run_id}/metrics/{name}"]["get"]["parameters"]} >= {
        "x", "from", "to", "points", "rank"}


# ---- runs ------------------------------------------------------------------------------------------------


def test_runs_list_filters(client: httpx.Client) -> None:
    ids = lambda **q: [r["id"] for r in client.get("/api/v1/runs", params=q).json()["runs"]]  # noqa: E731
    assert set(ids(experiment="exp")) == {"done", "live", "xss"}
    assert ids(experiment="exp", status="Running") == ["live"]
    assert set(ids(status="Running,Failed", experiment="exp")) == {"live"}
    assert set(ids(status="Running,Completed", experiment="exp")) == {"done", "live", "xss"}
    assert ids(tag="owner=ana") == ["done"]
    assert set(ids(tag="owner")) == {"done", "live"}
    assert ids(q="finished") == ["done"]
    assert ids(experiment="bulk", metric="acc", metric_min="0.25", metric_max="0.45", sort="id", order="asc") == [
        "bulk_3", "bulk_4"]
    assert set(ids(metric="lr")) == {"done"}
    assert "sw_0" not in ids(experiment="sweeps")  # children are listed under their parent
    assert set(ids(parent="sw")) == {"sw_0", "sw_1", "sw_2"}
    row = client.get("/api/v1/runs", params={"tag": "owner=ana"}).json()["runs"][0]
    assert row["tags"] == {"owner": "ana", "stage": "prod"}
    assert row["metrics"]["loss"]["max"] == 1e6 and row["metrics"]["loss"]["count"] == N


def test_runs_keyset_pagination_and_sorting(client: httpx.Client) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        body = client.get("/api/v1/runs", params={"experiment": "bulk", "limit": 3, "sort": "metric:acc",
                                                    "order": "asc", **({"cursor": cursor} if cursor else {})}).json()
        seen += [r["id"] for r in body["runs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"bulk_{i}" for i in range(7)]
    names = [r["id"] for r in client.get("/api/v1/runs", params={"experiment": "bulk", "sort": "id"}).json()["runs"]]
    assert names == sorted(names, reverse=True)


def test_runs_bad_input_names_the_field(client: httpx.Client) -> None:
    for params, field in (({"sort": "nope"}, "sort"), ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"cursor": "garbage!"}, "cursor"), ({"order": "up"}, "order"),
                          ({"metric_min": "1"}, "metric"), ({"metric": "acc", "metric_max": "x"}, "metric_max")):
        resp = client.get("/api/v1/runs", params=params)
        assert resp.status_code == 400, params
        assert resp.json()["error"]["field"] == field


def test_run_details(client: httpx.Client) -> None:
    body = client.get("/api/v1/runs/done").json()
    assert body["run"]["status"] == "Completed"
    assert [s["status"] for s in body["details"]["statusHistory"]][-3:] == ["Preparing", "Running", "Completed"]
    assert body["details"]["tags"]["owner"] == "ana"
    assert {(k["rank"], k["name"]) for k in body["metric_keys"]} == {(0, "loss"), (0, "lr"), (1, "loss")}
    assert client.get("/api/v1/runs/nope").status_code == 404


# ---- metrics -----------------------------------------------------------------------------------------------


def test_metric_buckets_keep_every_spike(client: httpx.Client) -> None:
    for points in (10, 100, 1000):
        body = client.get("/api/v1/runs/done/metrics/loss", params={"points": points}).json()
        assert body["mode"] == "buckets" and len(body["max"]) <= points
        assert max(body["max"]) == 1e6
        assert sum(body["n"]) == N
        assert body["first"][0] == 1.0 and body["min"][-1] == pytest.approx(math.exp(-(N - 1) / 500), rel=1e-6)


def test_metric_keys_with_the_first_charts_buckets(client: httpx.Client) -> None:
    """One round trip for a run page's first paint: the keys and each rank-0 chart's buckets, sized for
    the page's grid, the same as the per-metric route answers for that many points."""
    from torchyard.server.buckets import chart_points

    body = client.get("/api/v1/runs/done/metrics", params={"charts_width": 1460}).json()
    names = sorted({k["name"] for k in body["metrics"] if k["rank"] == 0})
    assert sorted(body["charts"]) == names and body["points"] == chart_points(1460, len(names))
    alone = client.get("/api/v1/runs/done/metrics/loss", params={"points": body["points"]}).json()
    assert body["charts"]["loss"] == alone and max(alone["max"]) == 1e6
    assert "charts" not in client.get("/api/v1/runs/done/metrics").json()
    bad = client.get("/api/v1/runs/done/metrics", params={"charts_width": "wide"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "charts_width"
    assert chart_points(1460, 1) == 1382 and chart_points(1460, 3) == chart_points(1460, 9) == 401


def test_metric_zoom_returns_detail(client: httpx.Client) -> None:
    body = client.get("/api/v1/runs/done/metrics/loss", params={"from": 3200, "to": 3230, "points": 100}).json()
    assert body["mode"] == "raw"
    assert body["x"] == list(range(3200, 3231))
    assert body["y"][SPIKE_AT - 3200] == 1e6
    assert body["y"][0] == math.exp(-3200 / 500)  # raw points keep full precision


def test_metric_time_axis_and_rank(client: httpx.Client) -> None:
    body = client.get("/api/v1/runs/done/metrics/loss", params={"x": "time", "points": 50}).json()
    assert body["x_axis"] == "time" and body["x_min"] > 1.7e9 and max(body["max"]) == 1e6
    rank1 = client.get("/api/v1/runs/done/metrics/loss", params={"rank": 1}).json()
    assert rank1["y"] == [2.0, 1.0]
    for params, field in (({"x": "epoch"}, "x"), ({"points": "0"}, "points"), ({"from": "nan"}, "from")):
        resp = client.get("/api/v1/runs/done/metrics/loss", params=params)
        assert resp.status_code == 400 and resp.json()["error"]["field"] == field
    assert client.get("/api/v1/runs/done/metrics/nothing").status_code == 404


# ---- logs ----------------------------------------------------------------------------------------------------


def test_logs_per_rank_with_byte_ranges(client: httpx.Client) -> None:
    files = client.get("/api/v1/runs/done/logs").json()["logs"]
    assert [(f["name"], f["rank"]) for f in files] == [("rank_0.txt", 0), ("rank_1.txt", 1)]
    one = client.get("/api/v1/runs/done/logs/1").json()
    assert one["text"] == "line from rank 1\nsecond line\n" and one["next_offset"] == one["size"]
    part = client.get("/api/v1/runs/done/logs/0", params={"offset": 15, "limit": 40}).json()
    assert part["offset"] == 15 and part["text"] == "rank zero line\n" * 2  # cut at the last full line
    tail = client.get("/api/v1/runs/done/logs/0", params={"tail": 20}).json()
    assert tail["text"] == "rank zero line\n" and tail["next_offset"] == tail["size"] == 1500
    assert client.get("/api/v1/runs/done/logs/7").status_code == 404


def _sse_events(server: UiServer, path: str, want: str, until: float) -> list[dict[str, object]]:
    got: list[dict[str, object]] = []
    with httpx.Client(base_url=server.url, timeout=10) as c, c.stream("GET", path) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == want:
                got.append(json.loads(line[6:]))
                return got
            if time.time() > until:
                break
    return got


def test_log_follow_streams_new_text(server: UiServer, workspace: tuple[object, Path]) -> None:
    ws = workspace[0]
    path = Path(ws.run_dir("live"), "logs", "rank_0.txt")  # type: ignore[attr-defined]
    size = path.stat().st_size

    def append() -> None:
        time.sleep(0.5)
        with path.open("a") as fh:
            fh.write("a new line\n")

    threading.Thread(target=append).start()
    events = _sse_events(server, f"/api/v1/runs/live/logs/0?follow=1&offset={size}", "log", time.time() + 10)
    assert events and events[0]["text"] == "a new line\n" and events[0]["offset"] == size


def test_run_events_stream_new_points(server: UiServer, workspace: tuple[object, Path]) -> None:
    ws = workspace[0]
    threading.Timer(0.5, log_point, args=(ws, "live", "loss", 1.5, 2)).start()
    events = _sse_events(server, "/api/v1/runs/live/events", "points", time.time() + 10)
    assert events and events[0]["name"] == "loss" and events[0]["vals"] == [1.5] and events[0]["steps"] == [2]


def test_runs_events_stream_status(server: UiServer) -> None:
    events = _sse_events(server, "/api/v1/events", "status", time.time() + 10)
    assert events and events[0]["status"] in {s.value for s in RunStatus}


# ---- files -----------------------------------------------------------------------------------------------------


def test_artifacts_listing_and_download(client: httpx.Client) -> None:
    names = {a["name"] for a in client.get("/api/v1/runs/done/artifacts").json()["artifacts"]}
    assert {"outputs/model.txt", "outputs/page.html"} <= names
    resp = client.get("/api/v1/runs/done/artifacts/outputs/page.html")
    assert resp.status_code == 200 and resp.content == b"<script>alert(1)</script>"
    assert resp.headers["content-disposition"].startswith("attachment")
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["x-content-type-options"] == "nosniff"


TRAVERSAL = [
    "/api/v1/runs/done/artifacts/../../../secret.txt",
    "/api/v1/runs/done/artifacts/outputs/../../../../secret.txt",
    "/api/v1/runs/done/artifacts/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/api/v1/runs/done/artifacts/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/api/v1/runs/done/artifacts/%252e%252e/%252e%252e/%252e%252e/secret.txt",
    "/api/v1/runs/done/artifacts/..%2f..%2f..%2fsecret.txt",
    "/api/v1/runs/done/artifacts//etc/passwd",
    "/api/v1/runs/done/artifacts/%2Fetc%2Fpasswd",
    "/api/v1/runs/done/artifacts/..%5c..%5c..%5csecret.txt",
    "/api/v1/runs/done/artifacts/outputs/link.txt",
    "/api/v1/runs/done/artifacts/outputs/model.txt%00.png",
    "/api/v1/runs/done/snapshot/../../../secret.txt",
    "/api/v1/runs/done/snapshot/%2e%2e/%2e%2e/secret.txt",
    "/static/..%2f..%2fapp.py",
    "/static/%2e%2e%2fapp.py",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_no_path_outside_a_run_folder(server: UiServer, path: str) -> None:
    status, body = raw_get(server, path)
    assert status in (400, 404), (path, status)
    assert b"top secret" not in body and b"root:" not in body and b"import" not in body


def test_snapshot_files(client: httpx.Client) -> None:
    files = client.get("/api/v1/runs/done/snapshot").json()["files"]
    assert [f["path"] for f in files] == ["train.py"]
    resp = client.get("/api/v1/runs/done/snapshot/train.py")
    assert resp.text == "print('training')\n" and resp.headers["content-disposition"].startswith("attachment")
    assert client.get("/api/v1/runs/live/snapshot").status_code == 404


# ---- sweeps and cancel --------------------------------------------------------------------------------------------


def test_sweep_children_ranked(client: httpx.Client) -> None:
    body = client.get("/api/v1/runs/sw/children").json()
    assert body["primary_metric"] == {"name": "accuracy", "goal": "MAXIMIZE"}
    assert body["parameters"] == ["layers", "lr"]
    assert [c["run_id"] for c in body["children"]] == ["sw_0", "sw_2", "sw_1"]
    assert [c["early_terminated"] for c in body["children"]] == [False, False, True]
    assert body["children"][0]["hyperparameters"] == {"lr": 0.1, "layers": 2}
    series = client.get("/api/v1/runs/sw/children/metric").json()
    assert series["series"]["sw_0"]["y"] == [0.5, 0.7, 0.9]
    assert client.get("/api/v1/runs/done/children").status_code == 404


def test_cancel_checks_origin_type_and_size(server: UiServer, client: httpx.Client,
                                            workspace: tuple[object, Path]) -> None:
    ws = workspace[0]
    make_run(ws, "to_cancel", statuses=(RunStatus.RUNNING,))
    url = "/api/v1/runs/to_cancel/cancel"
    assert client.post(url, json={}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post(url, json={}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post(url, content=b"reason=x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post(url, json={"reason": "x" * 70_000}).status_code == 413
    assert ws.store.get_status("to_cancel") == "Running"  # type: ignore[attr-defined]
    resp = client.post(url, json={"reason": "from the API"}, headers={"Origin": server.url.rstrip("/")})
    assert resp.status_code == 200 and resp.json()["status"] == "CancelRequested"
    assert ws.store.cancel_reason("to_cancel") == "from the API"  # type: ignore[attr-defined]
    assert client.get(url).status_code == 405


# ---- the server itself ---------------------------------------------------------------------------------------------


def test_host_header_is_checked(server: UiServer) -> None:
    assert raw_get(server, "/api/v1/runs")[0] == 200
    host, port = server.host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/v1/runs", headers={"Host": f"attacker.example:{port}"})
    assert conn.getresponse().status == 421
    conn.close()


def test_pages_and_static_are_served(client: httpx.Client) -> None:
    for path in ("/", "/runs/done", "/sweeps/sw", "/compare?runs=done,live"):
        resp = client.get(path)
        assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        # the page's own scripts and style are inlined, each named in the CSP by its sha256
        assert 'src="/static/' not in resp.text and 'href="/static/' not in resp.text
        for kind, name in (("script", "app.js"), ("script", "chart.js"), ("script", "boot.js"), ("style", "style.css")):
            text = client.get(f"/static/{name}").text
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            assert f"<{kind}>{text}</{kind}>" in resp.text and f"'sha256-{digest}'" in csp.split(f"{kind}-src")[1].split(";")[0]
        assert resp.text.index("tyBoot") < resp.text.index("<main") < resp.text.index("function route()")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert "sha256" not in client.get("/api/v1/runs").headers["content-security-policy"]
    assert client.get("/static/nothing.js").status_code == 404


def test_non_loopback_host_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TORCHYARD_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "torchyard", "ui", "--host", "0.0.0.0", "--port", "0",
                           "--workspace", str(tmp_path / ".torchyard")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--host" in proc.stderr and "token" in proc.stderr


def test_token_is_required_when_configured(workspace: tuple[object, Path]) -> None:
    ws = workspace[0]
    with ui_server(ws.path, "--host", "0.0.0.0", env={"TORCHYARD_TOKEN": "s3cret-token"}) as srv:  # type: ignore[attr-defined]
        assert srv.login_url.endswith("?token=s3cret-token")
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/api/v1/runs").status_code == 401
            assert c.get("/").status_code == 401
            assert c.get("/api/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
            login = c.get("/?token=s3cret-token", follow_redirects=True)  # sets the cookie, then the page loads
            assert login.status_code == 200 and "torchyard_token" in c.cookies
            assert c.get("/api/v1/runs").status_code == 200


def test_system_metrics_of_every_node_in_one_answer(client: httpx.Client, workspace: tuple[object, Path]) -> None:
    ws = workspace[0]
    make_system_run(ws, "sysrun", nodes=2, per_node=2, gpus=2, samples=300)
    body = client.get("/api/v1/runs/sysrun/system", params={"points": 100}).json()
    assert body["x_axis"] == "time"
    assert [(n["rank"], n["node"], n["label"]) for n in body["nodes"]] == [(0, 0, "node 0"), (2, 1, "node 1")]
    got = {(s["name"], s["rank"]) for s in body["series"]}
    assert ("system/cpu_percent", 0) in got and ("system/cpu_percent", 2) in got
    assert ("system/gpu_1/power_w", 2) in got and not any(n == "loss" for n, _r in got)  # only system/...
    assert len(got) == 2 * (4 + 2 * 2)
    cpu = next(s for s in body["series"] if s["name"] == "system/cpu_percent" and s["rank"] == 2)
    assert cpu["mode"] == "buckets" and len(cpu["x"]) <= 100 and cpu["total"] == 300
    assert cpu["x"][0] > 1e9  # seconds since the epoch: the time axis
    # one chart's zoom: only its series, within the range
    lo, hi = cpu["x_min"] + 100, cpu["x_min"] + 400
    zoom = client.get("/api/v1/runs/sysrun/system", params=[("name", "system/cpu_percent"), ("from", lo),
                                                             ("to", hi), ("points", 500)]).json()
    assert {(s["name"], s["rank"]) for s in zoom["series"]} == {("system/cpu_percent", 0), ("system/cpu_percent", 2)}
    assert all(s["mode"] == "raw" and lo <= min(s["x"]) and max(s["x"]) <= hi for s in zoom["series"])
    # the Metrics tab's first charts (charts_width) are the script's own
    first = client.get("/api/v1/runs/sysrun/metrics", params={"charts_width": 1400}).json()
    assert list(first["charts"]) == ["loss"]
    assert client.get("/api/v1/runs/done/system").json()["series"] == []  # none: an empty answer
    bad = client.get("/api/v1/runs/sysrun/system", params={"name": "loss"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "name"
    assert client.get("/api/v1/runs/sysrun/system", params={"points": "many"}).json()["error"]["field"] == "points"
    assert client.get("/api/v1/runs/nosuch/system").status_code == 404


def test_rerun_route_refuses_bad_bodies_and_unknown_runs(client: httpx.Client) -> None:
    def post(path: str, body: object) -> httpx.Response:
        return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})

    for body, field in (({"set": "lr=0.1"}, "set"), ({"set": {"lr": [1]}}, "set[...]"), ([], "body"),
                        ({"set": {"node_count": "two"}}, "set.node_count"), ({"set": {"": "1"}}, "set"),
                        ({"set": {"use_gpu": "maybe"}}, "set.use_gpu")):
        resp = post("/api/v1/runs/done/rerun", body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["field"] == field, (body, resp.text)
    resp = client.post("/api/v1/runs/done/rerun", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "body"
    missing = post("/api/v1/runs/no_such_run/rerun", {})
    assert missing.status_code == 404 and "no_such_run" in missing.json()["error"]["message"]
    sweep = post("/api/v1/runs/sw/rerun", {})
    assert sweep.status_code == 400 and "sweep" in sweep.json()["error"]["message"]
    nosnap = post("/api/v1/runs/live/rerun", {})  # recorded without a code snapshot: a clear 409
    assert nosnap.status_code == 409 and "snapshot" in nosnap.json()["error"]["message"]
    assert client.get("/api/v1/runs/done").json()["can_edit"] is True  # torchyard ui: the local admin
    doc = client.get("/api/v1/openapi.json").json()
    op = doc["paths"]["/api/v1/runs/{run_id}/rerun"]["post"]
    assert op["x-permission"] == "write" and "201" in op["responses"]
    assert doc["components"]["schemas"]["RerunRun"]["properties"]["set"]
