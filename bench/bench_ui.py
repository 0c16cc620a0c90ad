"""The dashboard: a 1,000,000-value metric charted through the API and in headless Chromium, and the
runs table over 10,000 runs × 20 metrics, against an MLflow server holding the same series in the
same run (its full get-history, its sampled get-history-bulk-interval and its UI's chart).

    python bench/bench_ui.py [--values 1000000] [--runs 10000] [--metrics 20] [--repeat 11]
                             [--no-mlflow] [--no-browser]

Needs ``pip install -e ".[ui,bench]"`` and Debian's ``chromium``; MLflow runs in the same venv.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _table import print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "src" / "torchyard" / "server" / "static"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPIKE_AT, SPIKE = 777_777, 100.0
LOGGER = """\
import math, random
from torchyard import Run
run = Run.get_context()
random.seed(0)
for i in range({n}):
    v = 2.0 * math.exp(-i / ({n} / 5)) + 0.01 * random.random()
    run.log("loss", {spike} if i == {at} else v, step=i)
"""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# records when SELECTOR first matches, in ms since navigation start (same method for both UIs)
WATCH = """(() => { const sel = %s; const tick = () => { if (document.querySelector(sel)) {
  window.__drawnAt = performance.now(); } else { requestAnimationFrame(tick); } };
  requestAnimationFrame(tick); })();"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


@contextmanager
def process(cmd: list[str], ready: Callable[[], bool], env: dict[str, str] | None = None,
            timeout: float = 120) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.time() + timeout
        while not ready():
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise RuntimeError(f"{cmd[0]} did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False
    return check


def timed_get(client: httpx.Client, url: str, **params: Any) -> tuple[float, float | None, httpx.Response]:
    t = time.perf_counter()
    resp = client.get(url, params=params)
    wall = (time.perf_counter() - t) * 1000
    resp.raise_for_status()
    m = re.search(r"dur=([\d.]+)", resp.headers.get("server-timing", ""))
    return wall, float(m.group(1)) if m else None, resp


def torchyard_ui(ws: str) -> Any:
    port = free_port()
    cmd = [sys.executable, "-m", "torchyard", "ui", "--port", str(port), "--workspace", ws]
    return process(cmd, answers(f"http://127.0.0.1:{port}/api/v1/experiments")), f"http://127.0.0.1:{port}"


# ---- 1M values -----------------------------------------------------------------------------------


def make_series_run(root: Path, n: int) -> tuple[str, str]:
    ws = str(root / ".torchyard")
    src = root / "src"
    src.mkdir()
    (src / "log.py").write_text(LOGGER.format(n=n, spike=SPIKE, at=min(SPIKE_AT, n - 1)))
    out = subprocess.run([sys.executable, "-m", "torchyard", "-w", ws, "run", "-s", str(src), "-e", "log.py",
                          "-x", "bench", "--json", "--wait"], capture_output=True, text=True, check=True)
    return ws, str(json.loads(out.stdout)["runId"])


def bench_api(base: str, run_id: str, repeat: int, n: int, rows: list[list[object]]) -> dict[str, Any]:
    url = f"{base}/api/v1/runs/{run_id}/metrics/loss"
    with httpx.Client(timeout=60, headers={"Accept-Encoding": "identity"}) as c:
        cold_wall, cold_server, first = timed_get(c, url, points=2000)
        walls, servers = [], []
        for _ in range(repeat):
            wall, server, resp = timed_get(c, url, points=2000)
            walls.append(wall)
            servers.append(server or 0.0)
        body = resp.json()
        zoom_w, zoom_s = [], []
        for i in range(repeat):
            lo = (n // 10) * (i % 9)
            wall, server, _ = timed_get(c, url, points=2000, **{"from": lo, "to": lo + n // 10})
            zoom_w.append(wall)
            zoom_s.append(server or 0.0)
    raw_bytes = len(first.content)
    gz_bytes = len(gzip.compress(first.content, 6))
    kept = max(body["max"]) == SPIKE
    rows.append([f"torchyard API, 2,000-px chart of {n:,} values: first request (server / wall)",
                 f"{cold_server:.0f} / {cold_wall:.0f} ms", "", ""])
    rows.append(["torchyard API, same, repeated (median server / wall)",
                 f"{median(servers):.1f} / {median(walls):.1f} ms", "", "≤ 50 ms " + ("✔" if median(walls) <= 50 else "✘")])
    rows.append([f"torchyard API, zoomed to {n // 10:,} steps (median server / wall)",
                 f"{median(zoom_s):.1f} / {median(zoom_w):.1f} ms", "", ""])
    rows.append(["torchyard API response size (raw / gzip)", f"{raw_bytes / 1024:.0f} / {gz_bytes / 1024:.0f} KiB", "",
                 "≤ 128 KB " + ("✔" if raw_bytes <= 128_000 else "✘")])
    rows.append([f"the one spike (step {min(SPIKE_AT, n - 1):,}) in the 2,000-px response", "kept" if kept else "LOST", "", ""])
    return {"cold": cold_wall, "warm": median(walls), "bytes": raw_bytes, "kept": kept}


def mlflow_side(root: Path, run_ws: str, run_id: str, repeat: int, rows: list[list[object]],
                browser: Any) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from torchyard import Workspace

    ws = Workspace(path=run_ws)
    (vals, steps, ts), = ws.store.get_series(run_id, rank=0, name="loss").values()
    db = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=db)
    exp = client.create_experiment("bench", artifact_location=str(root / "mlruns"))
    run = client.create_run(exp)
    rid = run.info.run_id
    t = time.perf_counter()
    for i in range(0, len(vals), 1000):
        client.log_batch(rid, metrics=[Metric("loss", vals[j], int(ts[j] * 1000), steps[j] or 0)
                                       for j in range(i, min(i + 1000, len(vals)))])
    client.set_terminated(rid)
    load_s = time.perf_counter() - t
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--default-artifact-root", str(root / "mlruns")]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with process(cmd, answers(f"{base}/health"), env=env, timeout=180), httpx.Client(timeout=600) as c:
        walls, sizes, counts = [], [], []
        for _ in range(1):  # one full read: at 1M values it takes minutes
            t = time.perf_counter()
            got, size, token = 0, 0, None
            while True:
                params = {"run_id": rid, "metric_key": "loss", **({"page_token": token} if token else {})}
                resp = c.get(f"{base}/api/2.0/mlflow/metrics/get-history", params=params)
                resp.raise_for_status()
                size += len(resp.content)
                doc = resp.json()
                got += len(doc.get("metrics", []))
                token = doc.get("next_page_token")
                if not token:
                    break
            walls.append((time.perf_counter() - t) * 1000)
            sizes.append(size)
            counts.append(got)
        rows.append(["MLflow get-history, all values (one read, wall)", "", f"{median(walls):.0f} ms, "
                     f"{sizes[0] / 1024 / 1024:.1f} MiB, {counts[0]:,} values", ""])
        bw, bsize, kept = [], 0, False
        for _ in range(repeat):
            t = time.perf_counter()
            resp = c.get(f"{base}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                         params={"run_ids": rid, "metric_key": "loss", "max_results": 2000})
            bw.append((time.perf_counter() - t) * 1000)
            resp.raise_for_status()
            bsize = len(resp.content)
            pts = resp.json().get("metrics", [])
            kept = any(m["value"] == SPIKE for m in pts)
        rows.append(["MLflow get-history-bulk-interval, max_results=2000 (median wall)", "",
                     f"{median(bw):.0f} ms, {bsize / 1024:.0f} KiB, {len(pts):,} values", ""])
        rows.append(["the one spike in MLflow's sampled response", "", "kept" if kept else "LOST", ""])
        rows.append([f"(loading {len(vals):,} values into MLflow's store with log_batch, for scale)", "", f"{load_s:.0f} s", ""])
        if browser is not None:
            url = f"{base}/#/experiments/{exp}/runs/{rid}/model-metrics"
            times = first_paint(browser, url, ".js-plotly-plot .scatterlayer path, .js-plotly-plot .plot path",
                                max(1, repeat // 4), shot=root / "mlflow-chart.png")
            rows.append(["MLflow UI, run page's metric chart: first paint (median of "
                         f"{len(times)}, nav start → chart path in DOM)", "",
                         f"{median(times):.0f} ms" if times else "chart not found", ""])


STAGES = """() => { const n = performance.getEntriesByType('navigation')[0];
  const r = performance.getEntriesByType('resource');
  const end = (part) => Math.max(0, ...r.filter(e => e.name.includes(part)).map(e => e.responseEnd));
  return {html: n.responseEnd, scripts: n.domContentLoadedEventEnd, details: end('/api/v1/runs/') &&
    Math.min(...r.filter(e => /\\/api\\/v1\\/runs\\/[^/]+$/.test(e.name)).map(e => e.responseEnd)),
    buckets: end('/metrics')}; }"""


def first_paint(browser: Any, url: str, selector: str, repeat: int, shot: Path | None = None,
                timeout_ms: int = 60000, stages: list[dict[str, float]] | None = None) -> list[float]:
    times = []
    for i in range(repeat):
        # bypass_csp: Playwright's wait_for_function evaluates a string, which our CSP forbids (same for both UIs)
        ctx = browser.new_context(viewport={"width": 2100, "height": 900}, bypass_csp=True)
        ctx.add_init_script(WATCH % json.dumps(selector))
        page = ctx.new_page()
        try:
            page.goto(url)
            page.wait_for_function("window.__drawnAt !== undefined", timeout=timeout_ms)
            times.append(float(page.evaluate("window.__drawnAt")))
            if stages is not None:
                stages.append(page.evaluate(STAGES))
            if shot is not None and i == 0:
                page.wait_for_timeout(500)
                page.screenshot(path=str(shot))
        except Exception as err:  # noqa: BLE001 - a peer's page that never draws is reported, not fatal
            print(f"  {url}: {type(err).__name__}: {str(err).splitlines()[0]}", file=sys.stderr)
            if shot is not None:
                page.screenshot(path=str(shot))
            break
        finally:
            ctx.close()
    return times


# ---- 10,000 runs × 20 metrics --------------------------------------------------------------------


def make_many_runs(root: Path, n_runs: int, n_metrics: int) -> str:
    """Record the runs straight into the store's tables in bulk (creating them one by one through the
    SDK would take most of the benchmark's time and measure nothing the dashboard does)."""
    from array import array

    from sqlalchemy import insert

    from torchyard import Workspace
    from torchyard.workspace.schema import metric_chunks, run_metric_summary, run_tags, runs, status_events

    ws = Workspace(path=root / ".torchyard")
    store = ws.store
    now = time.time() - n_runs
    run_rows, events, tags, chunks, summary = [], [], [], [], []
    for i in range(n_runs):
        rid = f"run_{i:06d}"
        created = now + i
        run_rows.append({"id": rid, "experiment": f"exp{i % 10}", "status": "Completed", "display_name": f"trial {i}",
                         "compute_target": "local", "created_at": created, "started_at": created + 0.1,
                         "ended_at": created + 0.5, "spec": "{}", "details": "{}", "run_dir": ws.run_dir(rid),
                         "exit_code": 0})
        for status in ("NotStarted", "Queued", "Running", "Completed"):
            events.append({"run_id": rid, "status": status, "ts": created})
        tags.append({"run_id": rid, "key": "group", "value": str(i % 7)})
        for m in range(n_metrics):
            values = [((i * 31 + m * 17 + k) % 1000) / 1000 for k in range(10)]
            chunks.append({"run_id": rid, "name": f"m{m:02d}", "rank": 0, "count": 10,
                           "vals": array("d", values).tobytes(), "steps": array("q", range(10)).tobytes(),
                           "ts": array("d", [created] * 10).tobytes()})
            summary.append({"run_id": rid, "name": f"m{m:02d}", "count": 10, "last": values[-1], "min": min(values),
                            "max": max(values), "last_step": 9, "last_ts": created})
    with store.engine.begin() as conn:
        conn.execute(insert(runs), run_rows)
        conn.execute(insert(status_events), events)
        conn.execute(insert(run_tags), tags)
        for k in range(0, len(chunks), 20000):
            conn.execute(insert(metric_chunks), chunks[k:k + 20000])
        conn.execute(insert(run_metric_summary), summary)
    store.dispose()
    return ws.path


def bench_runs_table(ws: str, repeat: int, n_runs: int, rows: list[list[object]]) -> None:
    handle, base = torchyard_ui(ws)
    with handle, httpx.Client(timeout=60, base_url=base) as c:
        for label, params in (("newest first", {}), ("sorted by a metric", {"sort": "metric:m07", "order": "asc"}),
                              ("filtered by a tag", {"tag": "group=3"})):
            timed_get(c, "/api/v1/runs", limit=50, **params)  # warm
            cursor, page = None, 1
            while page < 100:
                _, _, resp = timed_get(c, "/api/v1/runs", limit=50, **params, **({"cursor": cursor} if cursor else {}))
                cursor = resp.json()["next_cursor"]
                page += 1
                if cursor is None:
                    break
            firsts, hundredth = [], []
            for _ in range(repeat):  # interleaved, so the machine's load drifts over both alike
                firsts.append(timed_get(c, "/api/v1/runs", limit=50, **params))
                if cursor:
                    hundredth.append(timed_get(c, "/api/v1/runs", limit=50, cursor=cursor, **params))
            s1, w1 = median([f[1] or 0 for f in firsts]), median([f[0] for f in firsts])
            if hundredth:
                s100, w100 = median([f[1] or 0 for f in hundredth]), median([f[0] for f in hundredth])
                ratio = s100 / s1 if s1 else float("nan")
                rows.append([f"runs table, {n_runs:,} runs, {label}: page 1 / page 100 (median server time; wall)",
                             f"{s1:.1f} / {s100:.1f} ms ({w1:.0f} / {w100:.0f} ms)", "",
                             f"≤ 300 ms {'✔' if s1 <= 300 else '✘'}; p100 ≤ 1.5× p1: {ratio:.2f}× "
                             f"{'✔' if ratio <= 1.5 else '✘'}"])
            else:
                rows.append([f"runs table, {n_runs:,} runs, {label}: page 1 (fewer than 100 pages)",
                             f"{s1:.1f} ms ({w1:.0f} ms)", "", f"≤ 300 ms {'✔' if s1 <= 300 else '✘'}"])


def startup(root: Path, repeat: int, rows: list[list[object]]) -> None:
    """From starting `torchyard ui` to the first answered API request, with torchyard's bytecode
    compiled first (as a normal install has it; these machines set PYTHONDONTWRITEBYTECODE=1)."""
    import torchyard

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(torchyard.__file__)], check=True)
    ws = str(root / ".torchyard")
    subprocess.run([sys.executable, "-m", "torchyard", "-w", ws, "runs", "list"], capture_output=True, check=True)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "torchyard", "ui", "--port", "0", "--workspace", ws],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            url = next(line.strip() for line in proc.stdout if line.startswith("http://"))
            httpx.get(url + "api/v1/runs?limit=5", timeout=30).raise_for_status()
            times.append((time.perf_counter() - t) * 1000)
        finally:
            proc.terminate()
            proc.wait(15)
            if proc.stdout is not None:
                proc.stdout.close()
    rows.append([f"`torchyard ui` start → first API answer (median of {repeat})", f"{median(times):.0f} ms", "",
                 f"< 1 s {'✔' if median(times) < 1000 else '✘'}"])


def summary_cost(root: Path, rows: list[list[object]]) -> None:
    """What keeping the per-run summary at ingest costs next to storing the values, and what
    rebuilding it from the packed arrays costs instead."""
    import random

    from torchyard import Workspace
    from torchyard.workspace.summary import rebuild_summary, update_summary

    store = Workspace(path=root / ".torchyard").store
    store.create_run(run_id="r", experiment="e", spec_json="{}", compute_target="local", run_dir=str(root), tags={})
    now = time.time()
    big = [("loss", [random.random() for _ in range(250_000)], list(range(250_000)), [now] * 250_000)]
    small = [(f"m{i}", [random.random() for _ in range(50)], list(range(50)), [now] * 50) for i in range(20)]
    cost: dict[str, list[float]] = {"ib": [], "ub": [], "is": [], "us": [], "rb": []}
    for batch, ins, upd, times in ((big, "ib", "ub", 4), (small, "is", "us", 20)):
        for _ in range(times):
            t = time.perf_counter()
            store.insert_series("r", 0, batch)
            cost[ins].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            update_summary(store.engine, "r", 0, batch)
            cost[upd].append((time.perf_counter() - t) * 1000)
    for _ in range(3):
        t = time.perf_counter()
        rebuild_summary(store.engine, "r")
        cost["rb"].append((time.perf_counter() - t) * 1000)
    store.dispose()
    rows.append(["summary at ingest: a 250,000-value flush, insert_series / + update_summary (median)",
                 f"{median(cost['ib']):.0f} / +{median(cost['ub']):.0f} ms", "", ""])
    rows.append(["summary at ingest: a 20-metric × 50-value flush, insert_series / + update_summary (median)",
                 f"{median(cost['is']):.2f} / +{median(cost['us']):.2f} ms", "", ""])
    rows.append(["summary rebuilt from 1,000,000 packed values instead (numpy, median of 3)",
                 f"{median(cost['rb']):.0f} ms", "", ""])


def page_weight(rows: list[list[object]]) -> None:
    files = ["index.html", "boot.js", "app.js", "chart.js", "style.css"]
    raw = sum((STATIC / f).stat().st_size for f in files)
    gz = sum(len(gzip.compress((STATIC / f).read_bytes(), 6)) for f in files)
    rows.append(["page weight: HTML + JS + CSS, no third-party code (raw / gzip)",
                 f"{raw / 1024:.0f} / {gz / 1024:.0f} KiB", "", ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-series", action="store_true", help="skip the 1M-value part (and MLflow)")
    ap.add_argument("--keep", help="write screenshots here")
    args = ap.parse_args()
    rows: list[list[object]] = []
    root = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    shots = Path(args.keep) if args.keep else root
    pw = browser = None
    try:
        if not args.no_browser:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page_weight(rows)
        (root / "start").mkdir()
        startup(root / "start", 5, rows)
        (root / "summary").mkdir()
        summary_cost(root / "summary", rows)
        if not args.no_series:
            series_part(root, args, browser, shots, rows)
        if args.runs:
            (root / "many").mkdir()
            t = time.perf_counter()
            many = make_many_runs(root / "many", args.runs, args.metrics)
            print(f"(recorded {args.runs:,} runs × {args.metrics} metrics in {time.perf_counter() - t:.0f} s)")
            bench_runs_table(many, args.repeat, args.runs, rows)
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        shutil.rmtree(root, ignore_errors=True)
    print_table(["what", "torchyard", "MLflow, same run", "target"], rows)
    return 0


def series_part(root: Path, args: argparse.Namespace, browser: Any, shots: Path, rows: list[list[object]]) -> None:
    """The 1M-value series: torchyard's API and page, then the same series in MLflow."""
    (root / "one").mkdir()
    ws, run_id = make_series_run(root / "one", args.values)
    handle, base = torchyard_ui(ws)
    with handle:
        bench_api(base, run_id, args.repeat, args.values, rows)
        if browser is not None:
            stages: list[dict[str, float]] = []
            times = first_paint(browser, f"{base}/runs/{run_id}#metrics", "canvas[data-drawn='1']",
                                max(1, args.repeat // 2), shot=shots / "torchyard-chart.png", stages=stages)
            rows.append([f"torchyard UI, run page's chart: first paint (median of {len(times)}, "
                         "nav start → chart drawn)", f"{median(times):.0f} ms", "",
                         f"≤ 300 ms {'✔' if times and median(times) <= 300 else '✘'}"])
            rows.append(["  of which (medians, ms since nav start): HTML received / scripts run / run details "
                         "received / buckets received",
                         " / ".join(f"{median([st[k] for st in stages]):.0f}" for k in ("html", "scripts", "details",
                                                                                        "buckets")), "", ""])
    if not args.no_mlflow:
        (root / "mlflow").mkdir()
        mlflow_side(root / "mlflow", ws, run_id, args.repeat, rows, browser)
        if args.keep and (root / "mlflow" / "mlflow-chart.png").exists():
            shutil.copy(root / "mlflow" / "mlflow-chart.png", shots / "mlflow-chart.png")


if __name__ == "__main__":
    sys.exit(main())
