"""In-job reporting through the team server: a node that cannot reach the database ships its rank's
journal over HTTP with the run's own token; the server is SIGKILLed mid-run and started again; the
shipper retries with back-off, the run completes and no value is lost (real server, real PostgreSQL,
a real run whose supervisor ingests the shipped journal)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pgserver
import pytest
from teamserver import access_store, make_users, team_server

N = 6000
SCRIPT = """\
import os, sys, time
marker = sys.argv[1]
deadline = time.time() + 120
while not os.path.exists(marker) and time.time() < deadline:
    time.sleep(0.1)
print("node work done", flush=True)
"""
NODE = """\
import sys, threading, time
from torchyard.tracking import journal as j
from torchyard.tracking.shipper import JournalShipper
url, token, run_id, path, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
shipper = JournalShipper(url, token, run_id, 1, path)
stop = threading.Event()
thread = threading.Thread(target=shipper.run, args=(stop, 0.05, 0.5))
thread.start()
with open(path, "ab") as fh:
    for start in range(0, n, 100):
        now = time.time()
        series, records = j.pack([(j.SCALAR, "m", float(i), i, now) for i in range(start, start + 100)])
        fh.write(j.encode_frame(series, records))
        fh.flush()
        time.sleep(0.05)
stop.set()
thread.join(120)
print(f"acked={shipper.acked} attempts={shipper.attempts} failures={shipper.failures}", flush=True)
sys.exit(0 if not thread.is_alive() else 1)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_killed_mid_run_loses_no_metric(tmp_path: Path, monkeypatch) -> None:
    from torchyard import Experiment, PyTorch, Workspace

    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "wait.py").write_text(SCRIPT)
    marker = tmp_path / "marker"
    folder = str(tmp_path / "server" / ".torchyard")
    port = _free_port()
    node: subprocess.Popen[str] | None = None
    with pgserver.PgServer() as pg:
        make_users(folder, pg.url)
        ws, access = access_store(folder, pg.url)
        member = access.create_token("member", scope="write")[1]
        try:
            with team_server(folder, pg.url, port=port) as first:
                client = Workspace(url=first.url, token=member)
                run = Experiment(client, "remote-nodes").submit(
                    PyTorch(source_directory=str(src), entry_script="wait.py", compute_target="local",
                            script_params={str(marker): ""}))
                deadline = time.time() + 60
                while run.get_status() != "Running" and time.time() < deadline:
                    time.sleep(0.1)
                assert run.get_status() == "Running"
                made: dict[str, Any] = client.client.post(f"/api/v1/runs/{run.id}/token", {"hours": 1})
                token = made["token"]
                # the run's token reaches its journal only: not another route, not another run
                with httpx.Client(base_url=first.url, timeout=10) as h:
                    bearer = {"Authorization": f"Bearer {token}"}
                    assert h.get(f"/api/v1/runs/{run.id}", headers=bearer).status_code == 404
                    assert h.get("/api/v1/runs", headers=bearer).status_code == 404
                node_journal = tmp_path / "node" / "rank_1.journal"
                node_journal.parent.mkdir()
                node = subprocess.Popen(
                    [sys.executable, "-c", NODE, first.url, token, run.id, str(node_journal), str(N)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    env={k: v for k, v in os.environ.items() if k != "TORCHYARD_RUN_TOKEN"})
                time.sleep(1.0)
                first.proc.kill()  # SIGKILL, mid-stream
                first.proc.wait(10)
            time.sleep(1.0)
            with team_server(folder, pg.url, port=port):
                out, _ = node.communicate(timeout=120)
                assert node.returncode == 0, out
                assert "failures=0" not in out, f"the shipper never saw the server down: {out}"
                marker.write_text("go")
                details = run.wait_for_completion(timeout=120)
                assert details["status"] == "Completed"
                values = run.get_metrics(rank=1)["m"]
                assert values == [float(i) for i in range(N)], (len(values), out)
                assert token not in Path(ws.run_dir(run.id), "logs", "rank_0.txt").read_text()
                with httpx.Client(base_url=first.url, timeout=10) as h:  # it expired with the run
                    put = h.put(f"/api/v1/runs/{run.id}/journal/1?offset=0", content=b"",
                                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
                    assert put.status_code == 401
        finally:
            if node is not None and node.poll() is None:
                node.kill()
                node.wait(10)
            marker.write_text("go")
            ws.store.dispose()
