"""A throwaway PostgreSQL 15 server for tests: ``initdb`` into a temp dir, start it on a free port, stop it.

Usage::

    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pgserver.PgServer() as server:
        url = server.url  # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres

Only what this helper started is stopped (``pg_ctl stop -m immediate`` on its own data dir), and its
temp dir is removed. The server runs without fsync: it is for tests only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path(os.environ.get("TORCHYARD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def unavailable_reason() -> str | None:
    """Why a throwaway server cannot be started here (None when it can)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL 15 server binaries not found ({PG_BIN / tool} is missing)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (psycopg[binary]) is not installed"
    if os.geteuid() == 0:
        if not os.path.exists(RUNUSER):
            return "running as root and `runuser` is missing (initdb refuses to run as root)"
        try:
            import pwd

            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServerError(RuntimeError):
    pass


class PgServer:
    """One throwaway server. ``start()`` returns its SQLAlchemy URL; ``stop()`` is idempotent."""

    def __init__(self) -> None:
        self.base: str | None = None
        self.data_dir: str | None = None
        self.port: int | None = None
        self.url: str | None = None
        self._running = False

    # ---- plumbing ----------------------------------------------------------------------------

    def _as_pg(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return [RUNUSER, "-u", PG_USER, "--", *argv]
        return list(argv)

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self.base is not None
        return subprocess.run(
            self._as_pg(*argv),
            cwd=self.base,  # a folder the postgres user can enter
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )

    def _log_tail(self) -> str:
        assert self.base is not None
        try:
            return Path(self.base, "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        if self._running:
            assert self.url is not None
            return self.url
        reason = unavailable_reason()
        if reason:
            raise PgServerError(reason)
        self.base = tempfile.mkdtemp(prefix="torchyard-pg-")
        try:
            if os.geteuid() == 0:
                shutil.chown(self.base, PG_USER, PG_USER)
            self.data_dir = os.path.join(self.base, "data")
            init = self._run(
                str(PG_BIN / "initdb"), "-D", self.data_dir, "-U", PG_USER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            if init.returncode != 0:
                raise PgServerError(
                    f"initdb failed ({init.returncode}): {init.stderr.strip() or init.stdout.strip()}"
                )
            last = ""
            for _attempt in range(5):  # the free port may be taken between picking and binding it
                port = _free_port()
                opts = (
                    f"-p {port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off"
                )
                # -l: the server must not inherit our pipes, or capture_output would wait for it forever
                started = self._run(
                    str(PG_BIN / "pg_ctl"), "-D", self.data_dir, "-l", os.path.join(self.base, "server.log"),
                    "-o", opts, "-w", "-t", "60", "start",
                    timeout=90,
                )  # fmt: skip
                if started.returncode == 0:
                    self.port = port
                    self._running = True
                    atexit.register(self.stop)
                    self.url = f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/postgres"
                    return self.url
                last = f"{started.stderr.strip() or started.stdout.strip()}\n{self._log_tail()}"
                self._pg_ctl_stop()  # in case it half-started
            raise PgServerError(f"pg_ctl start failed: {last}")
        except BaseException:
            self.stop()
            raise

    def _pg_ctl_stop(self) -> None:
        if self.data_dir and os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            self._run(
                str(PG_BIN / "pg_ctl"), "-D", self.data_dir, "-m", "immediate", "-w", "stop", timeout=60
            )

    def stop(self) -> None:
        """Stop the server this object started (if any) and remove its temp dir."""
        if self.base is None:
            return
        try:
            self._pg_ctl_stop()
        finally:
            self._running = False
            atexit.unregister(self.stop)
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = self.data_dir = None

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
