"""Nodes that reach only the team server report through it: a 2-node job on a target whose nodes
send their logs, metric journals and reports over HTTP with the run's own token
(``ComputeTarget.reports_over_http``; the suite's toy target with ``report="server"``, which moves
nothing itself while the job runs). The server is SIGKILLed mid-run and started again on the same
port; the pushers retry, the run completes, and every value and log line of both nodes is there.
The token is in the pushers' environment only: not the ranks', not a file, and it dies with the run."""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from pathlib import Path

import httpx
import pgserver
import psutil
import pytest
from teamserver import access_store, make_users, team_server

pytestmark = pytest.mark.skipif(importlib.util.find_spec("toytarget") is None,
                                reason="tests/toytarget is not installed (scripts/test.sh installs it)")
N = 40
SCRIPT = f"""\
import os, sys, time
from torchyard import Run
run = Run.get_context()
rank = int(os.environ["RANK"])
for i in range({N}):
    run.log("m", float(rank * 1000 + i), step=i)
    print(f"rank {{rank}} line {{i}}", flush=True)
    time.sleep(0.1)
with open(os.path.join("outputs", f"done_{{rank}}.txt"), "w") as fh:
    fh.write(str(rank))
print("token in my env:", "TORCHYARD_RUN_TOKEN" in os.environ, flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pushers(run_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "torchyard.compute.mirror_push" in cmd and run_id in cmd:
            found.append(p)
    return found


def test_nodes_report_through_the_server_across_a_server_restart(tmp_path: Path, monkeypatch) -> None:
    from torchyard import ComputeTarget, Experiment, PyTorch, Workspace
    from torchyard.compute.registry import target_class

    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("TORCHYARD_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    folder = str(tmp_path / "server" / ".torchyard")
    nodes_root = tmp_path / "nodes"
    port = _free_port()
    with pgserver.PgServer() as pg:
        make_users(folder, pg.url)
        ws, access = access_store(folder, pg.url)
        try:
            ComputeTarget.attach(ws, "edge", target_class("toy")(root=str(nodes_root), report="server"))
            member = access.create_token("member", scope="write")[1]
            with team_server(folder, pg.url, port=port) as first:
                client = Workspace(url=first.url, token=member)
                run = Experiment(client, "edge-nodes").submit(PyTorch(
                    source_directory=str(src), entry_script="train.py", compute_target="edge", node_count=2,
                    distributed_backend="gloo"))
                deadline = time.time() + 90
                while len(ws.store.get_series(run.id, 1).get((1, "m"), ([],))[0]) < 5 and time.time() < deadline:
                    time.sleep(0.2)  # values of node 1 arrived: through the server, nothing else moves them
                pushers = _pushers(run.id)
                assert len(pushers) == 2, [p.cmdline() for p in pushers]
                token = pushers[0].environ()["TORCHYARD_RUN_TOKEN"]
                assert token.startswith("ty_")
                with httpx.Client(base_url=first.url, timeout=10) as h:  # its mirror routes only, nothing else
                    bearer = {"Authorization": f"Bearer {token}"}
                    assert h.get(f"/api/v1/runs/{run.id}/mirror/1", headers=bearer).status_code == 200
                    assert h.get(f"/api/v1/runs/{run.id}", headers=bearer).status_code == 404
                    assert h.get("/api/v1/runs", headers=bearer).status_code == 404
                first.proc.kill()  # SIGKILL, mid-run
                first.proc.wait(10)
                at_kill = len(ws.store.get_series(run.id, 1)[(1, "m")][0])
                assert at_kill < N  # the rest can only come through the restarted server
            time.sleep(1.5)
            with team_server(folder, pg.url, port=port) as second:
                details = run.wait_for_completion(timeout=120, raise_on_error=False)
                assert details["status"] == "Completed", details.get("error")
                every = run.get_metrics(rank="all")
                assert every[0]["m"] == [float(i) for i in range(N)]
                assert every[1]["m"] == [float(1000 + i) for i in range(N)]
                logs = Path(ws.run_dir(run.id), "logs")
                for rank in (0, 1):
                    text = (logs / f"rank_{rank}.txt").read_text()
                    assert f"rank {rank} line {N - 1}" in text and "token in my env: False" in text, text[-500:]
                assert sorted(p.name for p in Path(ws.run_dir(run.id), "outputs").rglob("done_*.txt")) == [
                    "done_0.txt", "done_1.txt"]
                with httpx.Client(base_url=second.url, timeout=10) as h:  # the token died with the run
                    got = h.get(f"/api/v1/runs/{run.id}/mirror/0", headers={"Authorization": f"Bearer {token}"})
                    assert got.status_code == 401
        finally:
            ws.store.dispose()
    found = []
    for root in (folder, str(nodes_root)):
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as fh:
                    if token.encode() in fh.read():
                        found.append(path)
    assert not found, f"the run token was written to {found}"
