"""Nothing recorded is lost: hostile values and faults on the data path, through real runs, the real
``torchyard`` command and a real dashboard server, on SQLite and PostgreSQL. Each fault test counts the
values a script logged against the values the store kept."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pgserver
import pytest

from torchyard import Experiment, ScriptRunConfig, Workspace

TY = [sys.executable, "-m", "torchyard"]


def ty(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TY, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, check=False)


def script(folder: Path, body: str, name: str = "train.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(body))
    return folder


def submit(ws: Workspace, folder: Path, entry: str = "train.py", *args: str, experiment: str = "safety"):
    run = Experiment(ws, experiment).submit(ScriptRunConfig(source_directory=str(folder), script=entry,
                                                           arguments=list(args)))
    run.wait_for_completion(raise_on_error=False)
    return run


HOSTILE = """
    import math
    from torchyard import Run
    run = Run.get_context()
    errors = []
    for i in range(50):
        run.log("loss", float(i), step=i)
    run.log("loss", math.inf, step=50)
    run.log("loss", -math.inf, step=51)
    run.log("loss", math.nan, step=52)
    run.log("diverged", math.inf)
    run.log("mixed", 1.0)
    run.log("mixed", "a string")
    run.log("mixed", 2.0)
    for bad in ("m" * 300, "", "nul\\x00name"):
        try:
            run.log(bad, 1.0)
        except ValueError as err:
            errors.append(str(err))
    try:
        run.tag("t", "v" * 9000)
    except ValueError as err:
        errors.append(str(err))
    run.log("m" * 250, 1.0)
    run.tag("ok", "yes")
    print("refused", len(errors), errors[0][:60], flush=True)
"""


def _bare(constant: str) -> None:
    raise AssertionError(f"a bare {constant} in a JSON answer")


def _check_hostile_run(run) -> None:
    assert run.get_status() == "Completed", run.get_details().get("error")
    metrics = run.get_metrics()
    loss = metrics["loss"]
    assert loss[:50] == [float(i) for i in range(50)] and loss[50] == math.inf and loss[51] == -math.inf
    assert math.isnan(loss[52])
    assert metrics["diverged"] == math.inf
    assert metrics["mixed"] == [1.0, "a string", 2.0]  # every value, in the order logged
    assert metrics["m" * 250] == 1.0
    assert run.get_tags()["ok"] == "yes"


# ---- the same script on both databases ---------------------------------------------------------------


@pytest.fixture(scope="module")
def own_pg_server() -> Iterator[pgserver.PgServer]:
    """A server of this module's own: the restart test stops and starts it (never the session's)."""
    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(f"no throwaway PostgreSQL server: {reason}")
    server = pgserver.PgServer()
    server.start()
    yield server
    server.stop()


def _pg_database(server: pgserver.PgServer) -> str:
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(str(server.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return str(server.url).rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hostile_values_are_kept_or_refused_in_the_script_on_both_databases(backend: str, tmp_path: Path,
                                                                            request: pytest.FixtureRequest) -> None:
    db_url = request.getfixturevalue("pg_database") if backend == "postgresql" else None
    ws = Workspace(path=tmp_path / ".torchyard", db_url=db_url)
    try:
        run = submit(ws, script(tmp_path / "src", HOSTILE))
        _check_hostile_run(run)
        log = Path(run.workdir, "logs", "rank_0.txt").read_text()
        assert "refused 4" in log and "limit is 250" in log
    finally:
        ws.store.dispose()  # no pooled connection left for the garbage collector


def test_a_diverged_run_never_breaks_the_api_cli_or_dashboard(tmp_path: Path) -> None:
    from uiserver import ui_server

    ws = Workspace(path=tmp_path / ".torchyard")
    run = submit(ws, script(tmp_path / "src", HOSTILE))
    _check_hostile_run(run)
    import httpx

    with ui_server(str(ws.path)) as server:
        for path in ("/api/v1/runs", f"/api/v1/runs/{run.id}", f"/api/v1/runs/{run.id}/metrics",
                     f"/api/v1/runs/{run.id}/metrics?charts_width=1200", f"/api/v1/runs/{run.id}/metrics/loss",
                     f"/api/v1/runs/{run.id}/values", f"/api/v1/runs/{run.id}/details",
                     "/api/v1/runs?sort=metric:loss", "/api/v1/runs?sort=metric:diverged&order=asc&limit=1"):
            resp = httpx.get(server.url.rstrip("/") + path, timeout=30)
            assert resp.status_code == 200, (path, resp.text[:300])
            json.loads(resp.text, parse_constant=_bare)
        values = httpx.get(f"{server.url.rstrip('/')}/api/v1/runs/{run.id}/values", timeout=30).json()["metrics"]
        assert values["diverged"] == "Infinity" and values["loss"][51] == "-Infinity" and values["loss"][52] == "NaN"
    shown = ty("--workspace", str(ws.path), "metrics", run.id)
    assert shown.returncode == 0 and "mixed" in shown.stdout and "inf" in shown.stdout, shown.stderr
    listed = ty("--workspace", str(ws.path), "runs", "list", "--json")
    assert listed.returncode == 0 and run.id in listed.stdout


# ---- a workspace is a folder you can move ------------------------------------------------------------


def test_a_moved_workspace_keeps_working_and_a_copy_is_its_own(tmp_path: Path, src: Path) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(src, proj)
    first = ty("run", "--entry", "ok.py", "--wait", cwd=proj)
    assert first.returncode == 0, first.stderr
    settings = json.loads((proj / ".torchyard" / "workspace.json").read_text())
    assert "db_url" not in settings  # nothing absolute is kept for the embedded store
    moved = tmp_path / "proj2"
    proj.rename(moved)
    listed = ty("runs", "list", "--json", cwd=moved)
    assert listed.returncode == 0, listed.stderr
    run_id = json.loads(listed.stdout)[0]["run_id"]
    assert ty("logs", run_id, cwd=moved).stdout.startswith("hello from 0")
    assert "loss" in ty("metrics", run_id, cwd=moved).stdout
    copy = tmp_path / "proj3"
    shutil.copytree(moved, copy)
    assert ty("run", "--entry", "ok.py", "--wait", cwd=copy).returncode == 0
    assert len(json.loads(ty("runs", "list", "--json", cwd=copy).stdout)) == 2
    assert len(json.loads(ty("runs", "list", "--json", cwd=moved).stdout)) == 1  # the original is untouched


def test_read_commands_never_make_a_workspace_and_a_broken_store_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    for argv in (["runs", "list"], ["model", "list"], ["metrics", "r1"]):
        out = ty(*argv, cwd=empty, env={"HOME": str(tmp_path)})
        assert out.returncode == 2 and "no torchyard workspace in" in out.stderr and "torchyard init" in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (empty / ".torchyard").exists()
    made = ty("init", cwd=empty)
    assert made.returncode == 0 and "made a workspace at" in made.stdout
    assert ty("runs", "list", cwd=empty).returncode == 0
    (empty / "noop.py").write_text("pass\n")
    assert ty("run", "--entry", "noop.py", "--wait", cwd=empty, env={"TORCHYARD_AGENT": "0"}).returncode == 0
    store = empty / ".torchyard" / "store.db"
    for extra in ("store.db-wal", "store.db-shm"):
        (empty / ".torchyard" / extra).unlink(missing_ok=True)
    store.write_bytes(b"")
    os.utime(store, (time.time() - 60, time.time() - 60))  # truncated a while ago (a fresh one may be being made)
    out = ty("runs", "list", cwd=empty)
    assert out.returncode == 2 and "is empty (0 bytes)" in out.stderr and store.stat().st_size == 0
    store.write_bytes(b"not a database at all, just text")
    os.utime(store, (time.time() - 60, time.time() - 60))
    out = ty("runs", "list", cwd=empty)
    assert out.returncode == 2 and "not an SQLite database" in out.stderr


def test_cli_mistakes_get_one_line_and_a_broken_pipe_is_quiet(tmp_path: Path, src: Path) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(src, proj)
    assert ty("run", "--entry", "ok.py", "--wait", cwd=proj).returncode == 0
    run_id = json.loads(ty("runs", "list", "--json", cwd=proj).stdout)[0]["run_id"]
    for argv, needle in ((["runs", "list", "--status", "Bogus"], "unknown status 'Bogus'"),
                         (["runs", "list", "--limit", "-1"], "--limit: must be 1 or more"),
                         (["metrics", run_id, "--rank", "5"], "has 1 rank(s)"),
                         (["logs", run_id, "--rank", "5"], "has 1 rank(s)")):
        out = ty(*argv, cwd=proj)
        assert out.returncode == 2 and needle in out.stderr, (argv, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    assert ty("runs", "list", "--status", "completed", cwd=proj).returncode == 0
    assert ty("compute", "add", "slurm", "hpc", cwd=proj).returncode == 0
    again = ty("compute", "add", "slurm", "hpc", cwd=proj)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert ty("compute", "add", "slurm", "hpc", "--overwrite", cwd=proj).returncode == 0
    for _ in range(30):  # rows enough to outgrow the pipe's first read
        ty("run", "--entry", "noop.py", cwd=proj)
    piped = subprocess.run(f"{sys.executable} -m torchyard runs list --limit 200 | head -1", shell=True, cwd=proj,
                           capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_run_ids_are_never_cut_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from torchyard.cli.common import table

    run_id = "a-rather-long-experiment-name_1765140000_0123abcd"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    table(None, ["run id", "experiment", "status", "target", "created", "duration"],
          [[run_id, "a-rather-long-experiment-name", "Completed", "local", "2026-12-07 22:00:00", "1.2 s"]])
    import re

    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # the terminal's styles
    assert run_id in out and max(len(line) for line in out.splitlines()) <= 80


# ---- faults: a full disk, a read-only mount, a stopped database -------------------------------------------


COUNTING = """
    import sys, time
    from torchyard import Run
    run = Run.get_context()
    n, seconds = int(sys.argv[1]), float(sys.argv[2])
    for i in range(n):
        run.log("value", float(i), step=i)
        if i % 10 == 0:
            run.log("note", f"text {i}")
        time.sleep(seconds / n)
    print("logged", n, flush=True)
"""


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a tmpfs / a read-only bind mount")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    _need_root()
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_disk_that_fills_mid_run_loses_nothing(small_disk: Path, tmp_path: Path) -> None:
    ws = Workspace(path=small_disk / ".torchyard")
    folder = script(tmp_path / "src", COUNTING)
    run = Experiment(ws, "disk").submit(ScriptRunConfig(source_directory=str(folder), script="train.py",
                                                        arguments=["1000", "8"]))
    from tests.conftest import wait_until

    wait_until(lambda: ws.store.metric_count(run.id) > 50, timeout=60)
    filler = _fill(small_disk)
    assert shutil.disk_usage(small_disk).free < 64 * 1024
    time.sleep(3)  # the ranks and the supervisor meet a full disk
    filler.unlink()
    run.wait_for_completion(raise_on_error=False)
    assert run.get_status() == "Completed", run.get_details().get("error")
    metrics = run.get_metrics()
    assert metrics["value"] == [float(i) for i in range(1000)]  # logged 1000, kept 1000, once each
    assert metrics["note"] == [f"text {i}" for i in range(0, 1000, 10)]
    assert ws.store.metric_count(run.id) == 1100  # and nothing twice


def test_runs_repair_stores_again_what_the_journals_hold(ws: Workspace, tmp_path: Path) -> None:
    run = submit(ws, script(tmp_path / "src", COUNTING), "train.py", "200", "0.2")
    assert run.get_status() == "Completed"
    ws.store.clear_metrics(run.id)  # what a run that ended while the store refused looks like
    assert ws.store.metric_count(run.id) == 0
    running = ty("--workspace", str(ws.path), "runs", "repair", run.id)
    assert running.returncode == 0 and "220 value(s)" in running.stdout, running.stderr
    assert run.get_metrics()["value"] == [float(i) for i in range(200)]
    again = ty("--workspace", str(ws.path), "runs", "repair", run.id)  # idempotent: replaced, never doubled
    assert again.returncode == 0 and ws.store.metric_count(run.id) == 220


def test_a_read_only_workspace_reads_and_refuses_writes_in_one_line(tmp_path: Path, src: Path) -> None:
    _need_root()
    proj = tmp_path / "proj"
    shutil.copytree(src, proj)
    assert ty("run", "--entry", "ok.py", "--wait", cwd=proj).returncode == 0
    run_id = json.loads(ty("runs", "list", "--json", cwd=proj).stdout)[0]["run_id"]
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(proj), str(ro)], check=False).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=False).returncode != 0:
            pytest.skip("cannot remount read-only here")
        listed = ty("runs", "list", cwd=ro)
        assert listed.returncode == 0 and run_id in listed.stdout, listed.stderr
        assert "loss" in ty("metrics", run_id, cwd=ro).stdout
        wrote = ty("run", "--entry", "noop.py", cwd=ro)
        assert wrote.returncode != 0 and "Traceback" not in wrote.stderr, wrote.stderr
        assert len(wrote.stderr.strip().splitlines()) <= 2 and "read-only" in wrote.stderr.lower(), wrote.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def _pg_restart(server: pgserver.PgServer, down: float) -> None:
    # a fast shutdown, as an upgrade or a restart does (an immediate one is a crash: the test server runs with
    # synchronous_commit=off, which loses the last commits in a crash by design)
    stopped = server._run(str(pgserver.PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w", "stop",
                          timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(down)
    opts = (f"-p {server.port} -k {server.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off")
    started = server._run(str(pgserver.PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "-l",
                          os.path.join(str(server.base), "server.log"), "-o", opts, "-w", "-t", "60", "start",
                          timeout=90)
    assert started.returncode == 0, started.stderr


def test_postgresql_stopped_and_started_mid_run_loses_nothing(own_pg_server: pgserver.PgServer, tmp_path: Path) -> None:
    pg_server = own_pg_server
    ws = Workspace(path=tmp_path / ".torchyard", db_url=_pg_database(pg_server))
    folder = script(tmp_path / "src", COUNTING)
    run = Experiment(ws, "pg").submit(ScriptRunConfig(source_directory=str(folder), script="train.py",
                                                      arguments=["600", "8"]))
    from tests.conftest import wait_until

    wait_until(lambda: ws.store.metric_count(run.id) > 50, timeout=60)
    ws.store.dispose()
    stopper = threading.Thread(target=_pg_restart, args=(pg_server, 4.0))
    stopper.start()
    stopper.join()
    try:
        run.wait_for_completion(raise_on_error=False)
        assert run.get_status() == "Completed", run.get_details().get("error")
        metrics = run.get_metrics()
        assert metrics["value"] == [float(i) for i in range(600)]
        assert metrics["note"] == [f"text {i}" for i in range(0, 600, 10)]
    finally:
        ws.store.dispose()


def test_a_piped_password_and_a_missing_extra_are_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(tmp_path / ".torchyard")
    assert ty("--workspace", folder, "init").returncode == 0
    made = subprocess.run([*TY, "server", "create-admin", "alice", "--workspace", folder], input="s3cret-pass\n",
                          capture_output=True, text=True, timeout=60, check=False)  # no --password-stdin: piped
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stderr
    empty = subprocess.run([*TY, "server", "user", "add", "bob", "--workspace", folder], input="",
                           capture_output=True, text=True, timeout=60, check=False)
    assert empty.returncode == 2 and "no password line" in empty.stderr and "EOFError" not in empty.stderr
    import importlib.util

    from torchyard.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["ui", "--workspace", folder]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ['torchyard: error: the dashboard needs uvicorn, which is not installed: '
                                'pip install "torchyard[ui]"']
