"""The team server (issue 15) against an MLflow tracking server on the same PostgreSQL. One table.

Both servers run on this machine, each on its own database of ONE throwaway PostgreSQL 15
(tests/integration/pgserver.py), measured in the same run:

1. Logging, values/s stored, one client, sequential:
   - torchyard ``Run.log_batch`` (``POST /api/v1/runs/ID/log``, 1,000 values a request, stored
     synchronously in the store and its summary) and the in-job path of nodes that report over HTTP:
     a rank's journal pushed by ``torchyard.compute.mirror_push`` (``PUT /api/v1/runs/ID/mirror/NODE``)
     until acknowledged, and until the run's supervisor has the values in the store (end-to-end
     delay: first byte pushed → every value readable);
   - MLflow ``MlflowClient.log_batch`` (1,000 metrics a request: MLflow's own per-request maximum).
2. Submit of a 2,000-file tree through the server: first time, and unchanged (bytes uploaded, seconds
   for the upload and for the whole submit). MLflow has no code snapshot to compare with.
3. Runs table with 10,000 runs: the first page of 50 (newest first), median of 20 requests:
   ``GET /api/v1/runs?limit=50`` vs MLflow ``search_runs(max_results=50)``.

Usage: python bench/bench_server.py [--values N] [--runs R] [--files F]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import pgserver  # noqa: E402
from _table import print_table  # noqa: E402
from teamserver import access_store, make_users, team_server  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def create_database(url: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def median_ms(fn: Any, repeat: int = 20) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bulk_runs(ws: Any, count: int) -> None:
    """``count`` finished runs in one experiment, straight into the server's store (the supervisor's
    boundary), each with a loss summary so the table has a metric to show."""
    from sqlalchemy import insert

    from torchyard.workspace.schema import experiments, run_metric_summary, runs

    now = time.time() - count
    with ws.store.engine.begin() as conn:
        conn.execute(insert(experiments).values(name="table", created_at=now, created_by="member"))
        rows = [{"id": f"table_{i:06d}", "experiment": "table", "kind": "run", "status": "Completed",
                 "compute_target": "local", "created_at": now + i, "started_at": now + i, "ended_at": now + i + 1,
                 "spec": "{}", "details": "{}", "run_dir": "/nonexistent", "exit_code": 0, "created_by": "member"}
                for i in range(count)]
        conn.execute(insert(runs), rows)
        conn.execute(insert(run_metric_summary), [
            {"run_id": r["id"], "name": "loss", "count": 10, "last": 1.0 / (i + 1), "min": 0.0, "max": 1.0,
             "last_step": 9, "last_ts": now + i} for i, r in enumerate(rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=200_000, help="values logged per method")
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the table")
    parser.add_argument("--files", type=int, default=2_000, help="files in the submitted tree")
    args = parser.parse_args()
    reason = pgserver.unavailable_reason()
    if reason:
        print(f"bench_server: {reason}")
        return 2
    rows: list[list[Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-server-"))
    os.environ["TORCHYARD_CACHE_DIR"] = str(scratch / "client-cache")
    with pgserver.PgServer() as pg:
        ty_db = create_database(pg.url, "torchyard")
        ml_db = create_database(pg.url, "mlflow")
        folder = str(scratch / "server" / ".torchyard")
        make_users(folder, ty_db)
        ws, access = access_store(folder, ty_db)
        token = access.create_token("member", scope="write")[1]
        ml_port = free_port()
        mlflow_proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", ml_db, "--host", "127.0.0.1",
             "--port", str(ml_port), "--default-artifact-root", str(scratch / "mlartifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            with team_server(folder, ty_db) as server:
                rows += bench_logging(server.url, token, args.values, scratch, ws)
                wait_http(f"http://127.0.0.1:{ml_port}/health")
                ml_rows = bench_mlflow_logging(f"http://127.0.0.1:{ml_port}", args.values)
                rate = ml_rows.pop()[1]
                rows = [[("-" if c is None else rate if c == "MLFLOW_RATE" else c) for c in r] for r in rows] + ml_rows
                rows += bench_submit(server.url, token, args.files, scratch)
                rows += bench_table(server.url, token, ws, args.runs, f"http://127.0.0.1:{ml_port}")
        finally:
            os.killpg(mlflow_proc.pid, 15)
            mlflow_proc.wait(20)
            ws.store.dispose()
    print_table(["what", "torchyard server", "MLflow server", "note"], rows)
    return 0


def _wait_running(run: Any) -> None:
    deadline = time.time() + 60
    while run.get_status() != "Running" and time.time() < deadline:
        time.sleep(0.1)


def bench_logging(url: str, token: str, n: int, scratch: Path, ws: Any) -> list[list[Any]]:
    from torchyard import Experiment, PyTorch, Workspace
    from torchyard.compute.mirror_push import Pusher
    from torchyard.paths import RunPaths
    from torchyard.tracking import journal as j

    src = scratch / "wait"
    src.mkdir()
    marker = scratch / "marker"
    (src / "wait.py").write_text("import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\n")
    client = Workspace(url=url, token=token)
    run = Experiment(client, "bench").submit(PyTorch(source_directory=str(src), entry_script="wait.py",
                                                     compute_target="local", script_params={str(marker): ""}))
    _wait_running(run)
    batch = 1000
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        run.log_batch({"batched": ([float(i) for i in range(start, start + batch)], list(range(start, start + batch)))})
    log_batch_rate = n / (time.perf_counter() - t0)

    run_token = client.client.post(f"/api/v1/runs/{run.id}/token", {"hours": 1})["token"]
    node = scratch / "node"  # node 1's copy of the run folder, as a node that reports over HTTP has it
    path = Path(RunPaths(str(node)).rank_journal(1))
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:  # what a rank writes in n/1000 flushes
        for start in range(0, n, 1000):
            now = time.time()
            fh.write(j.encode_frame(*j.pack([(j.SCALAR, "shipped", float(i), i, now) for i in range(start, start + 1000)])))
    pusher = Pusher(url, run_token, run.id, 1, str(node))
    t0 = time.perf_counter()
    done = threading.Event()
    done.set()
    pusher.run(done)
    acked = time.perf_counter() - t0
    while True:  # until the supervisor has ingested the last value
        series = ws.store.get_series(run.id, 1, "shipped")
        if len(series.get((1, "shipped"), ([],))[0]) >= n:
            break
        time.sleep(0.05)
    end_to_end = time.perf_counter() - t0
    marker.write_text("go")
    run.wait_for_completion()
    return [
        ["log_batch, 1,000 values a request: values/s stored", f"{log_batch_rate:,.0f}", "MLFLOW_RATE",
         f"{n:,} values, one client, sequential requests"],
        ["in-job journal pushed: values/s acknowledged", f"{n / acked:,.0f}", "-",
         f"{n:,} values in {n // 1000} journal frames; mirror frames of up to 4 MiB ({pusher.requests} requests)"],
        ["in-job journal: all values readable in the store after", f"{end_to_end:.2f} s", "-",
         "includes the supervisor's ingest interval"],
    ]


def bench_mlflow_logging(url: str, n: int) -> list[list[Any]]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.create_experiment("bench")
    run = client.create_run(exp)
    batch = 1000
    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        client.log_batch(run.info.run_id, metrics=[Metric("batched", float(i), now, i) for i in range(start, start + batch)])
    rate = n / (time.perf_counter() - t0)
    got = len(client.get_metric_history(run.info.run_id, "batched"))
    return [["(MLflow's values read back)", "-", f"{got:,}", "MLflow server with its default workers"],
            ["MLFLOW_RATE", f"{rate:,.0f}"]]


def bench_submit(url: str, token: str, files: int, scratch: Path) -> list[list[Any]]:
    from torchyard import Experiment, PyTorch, Workspace

    src = scratch / "tree"
    for i in range(files - 1):  # with train.py: ``files`` files, the snapshot's default limit
        sub = src / f"pkg_{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod_{i:04d}.py").write_text(f"# module {i}\nVALUE = {i}\n" + "x = 1\n" * 20)
    (src / "train.py").write_text("print('ok')\n")
    client = Workspace(url=url, token=token)
    exp = Experiment(client, "bench-submit")
    est = PyTorch(source_directory=str(src), entry_script="train.py", compute_target="local")
    out = []
    for label in ("first time", "unchanged"):
        t0 = time.perf_counter()
        run = exp.submit(est)  # snapshot, upload what the server lacks, record, start the supervisor
        submit = time.perf_counter() - t0
        sent = client.last_upload_bytes
        run.wait_for_completion()
        t0 = time.perf_counter()
        _snapshot, again = client.upload_snapshot(str(src))  # the upload step alone, tree now known
        upload = time.perf_counter() - t0
        out.append([f"submit {files:,}-file tree, {label}: bytes uploaded / whole submit",
                    f"{sent:,} B / {submit:.3f} s", "-",
                    "target: unchanged 0 B in <= 0.5 s" if label == "unchanged" else "no MLflow equivalent"])
        if label == "unchanged":
            out.append(["... the snapshot + upload step alone, unchanged", f"{again:,} B / {upload:.3f} s", "-", ""])
    return out


def bench_table(url: str, token: str, ws: Any, count: int, ml_url: str) -> list[list[Any]]:
    import httpx
    from mlflow.tracking import MlflowClient

    bulk_runs(ws, count)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as h:
        first = median_ms(lambda: h.get("/api/v1/runs", params={"limit": 50}).raise_for_status())
        by_metric = median_ms(lambda: h.get("/api/v1/runs", params={"limit": 50, "sort": "metric:loss"}).raise_for_status())
        total = 0
        cursor = None
        while True:
            page = h.get("/api/v1/runs", params={"limit": 500, "experiment": "table", **({"cursor": cursor} if cursor else {})}).json()
            total += len(page["runs"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    client = MlflowClient(tracking_uri=ml_url)
    exp = client.create_experiment("table")
    t0 = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    def make(i: int) -> None:
        r = client.create_run(exp)
        client.log_metric(r.info.run_id, "loss", 1.0 / (i + 1))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(count)))
    made = time.perf_counter() - t0
    ml_first = median_ms(lambda: client.search_runs([exp], max_results=50))
    ml_metric = median_ms(lambda: client.search_runs([exp], max_results=50, order_by=["metrics.loss DESC"]))
    return [
        [f"runs table, {count:,} runs: first page of 50 (median of 20)", f"{first:.1f} ms", f"{ml_first:.1f} ms",
         "GET /api/v1/runs?limit=50 vs search_runs(max_results=50)"],
        ["... sorted by a metric", f"{by_metric:.1f} ms", f"{ml_metric:.1f} ms", "sort=metric:loss vs order_by metrics.loss"],
        [f"(setup) {count:,} runs created", "bulk insert", f"{made:.0f} s via the API, 8 threads",
         f"torchyard listed {total:,} through the API"],
    ]


if __name__ == "__main__":
    sys.exit(main())
