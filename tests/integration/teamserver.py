"""A real ``torchyard server`` process for the team-server tests: users made with the real CLI
(``torchyard server create-admin`` / ``user add``), tokens made through the store, the server on a
free port, stopped (and waited for) on the way out, even when a test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

PASSWORDS = {"admin": "admin-password", "member": "member-password", "viewer": "viewer-password",
             "outsider": "outsider-password", "extra": "extra-password"}
ROLES = {"admin": "admin", "member": "member", "viewer": "viewer", "outsider": "member", "extra": "viewer"}


def cli(*argv: str, stdin: str | None = None, env: Mapping[str, str] | None = None,
        check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``torchyard ARGV`` as a subprocess (the real entry point)."""
    proc = subprocess.run([sys.executable, "-m", "torchyard", *argv], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchyard {' '.join(argv)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


def make_users(folder: str, db: str | None) -> None:
    """The admin through ``create-admin``, the others through ``user add`` (passwords on stdin)."""
    store = ["--workspace", folder] + (["--db", db] if db else [])
    cli("server", "create-admin", "admin", "--password-stdin", *store, stdin=PASSWORDS["admin"] + "\n")
    for name in ("member", "viewer", "outsider", "extra"):
        cli("server", "user", "add", name, "--role", ROLES[name], "--password-stdin", *store,
            stdin=PASSWORDS[name] + "\n")


class TeamServer:
    """A running server: ``url``, ``proc``, what it printed."""

    def __init__(self, proc: subprocess.Popen[str], url: str, output: list[str]) -> None:
        self.proc = proc
        self.url = url.rstrip("/")
        self.host_port = self.url.removeprefix("http://")
        self.output = output


@contextmanager
def team_server(folder: str, db: str | None = None, *extra: str, port: int = 0,
                env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Iterator[TeamServer]:
    cmd = [sys.executable, "-m", "torchyard", "server", "--port", str(port), "--workspace", folder,
           *(["--db", db] if db else []), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("http://") and not url:
                url.append(line.strip())
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not found.wait(timeout) or not url:
            raise RuntimeError(f"torchyard server printed no URL: {''.join(output)}")
        yield TeamServer(proc, url[0], output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


def access_store(folder: str, db: str | None) -> Any:
    from torchyard import Workspace
    from torchyard.workspace.access import AccessStore

    ws = Workspace(path=folder, db_url=db)
    return ws, AccessStore(ws.store.engine)
