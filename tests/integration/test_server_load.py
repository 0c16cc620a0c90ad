"""32 client processes at once against one real team server on PostgreSQL: each submits a small job
that logs from inside, logs from outside too, waits, and reads its metrics back; every value stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pgserver
import pytest
from teamserver import access_store, make_users, team_server

CLIENTS = 32
IN_JOB = 200
OUTSIDE = 50
TRAIN = f"""\
from torchyard import Run
run = Run.get_context()
for i in range({IN_JOB}):
    run.log("inside", float(i), step=i)
"""
CLIENT = f"""\
import sys
from torchyard import Experiment, PyTorch, Workspace
url, token, src, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ws = Workspace(url=url, token=token)
run = Experiment(ws, f"load-{{n % 4}}").submit(PyTorch(source_directory=src, entry_script="train.py",
                                                  compute_target="local"), tags={{"client": str(n)}})
run.log_batch({{"outside": ([float(n * 1000 + i) for i in range({OUTSIDE})], list(range({OUTSIDE})))}})
run.wait_for_completion()
metrics = run.get_metrics()
assert metrics["inside"] == [float(i) for i in range({IN_JOB})], metrics.get("inside")
assert metrics["outside"] == [float(n * 1000 + i) for i in range({OUTSIDE})]
print(run.id)
"""


def test_32_clients_submit_and_log_at_once(tmp_path: Path) -> None:
    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    folder = str(tmp_path / "server" / ".torchyard")
    procs: list[subprocess.Popen[str]] = []
    with pgserver.PgServer() as pg:
        make_users(folder, pg.url)
        ws, access = access_store(folder, pg.url)
        token = access.create_token("member", scope="write")[1]
        env = {**os.environ, "TORCHYARD_CACHE_DIR": str(tmp_path / "cache"), "TORCHYARD_AGENT": "0"}
        try:
            with team_server(folder, pg.url) as server:
                procs = [subprocess.Popen([sys.executable, "-c", CLIENT, server.url, token, str(src), str(n)],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                         for n in range(CLIENTS)]
                outputs = [p.communicate(timeout=240)[0] for p in procs]
                failed = [(n, out[-500:]) for n, (p, out) in enumerate(zip(procs, outputs, strict=True)) if p.returncode]
                assert not failed, (failed, "".join(server.output)[-4000:])
                run_ids = {out.strip().splitlines()[-1] for out in outputs}
                assert len(run_ids) == CLIENTS
                rows = [r for r in ws.store.list_runs() if r["id"] in run_ids]
                assert len(rows) == CLIENTS and all(r["status"] == "Completed" for r in rows)
                for rid in run_ids:  # straight from the store: every value of every client
                    series = ws.store.get_series(rid, 0)
                    assert len(series[(0, "inside")][0]) == IN_JOB and len(series[(0, "outside")][0]) == OUTSIDE
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            ws.store.dispose()
