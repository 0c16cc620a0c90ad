"""A throwaway S3-compatible server for tests: moto's server in a subprocess on 127.0.0.1.

Usage::

    reason = s3server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with s3server.S3Server() as server:
        url = server.endpoint_url  # http://127.0.0.1:PORT

The server keeps everything in memory and accepts any access key unless it is started with
``env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}``, which makes it check signatures against the keys of
its (empty) IAM users: every request is then refused with a real 403. Nothing is set globally (the
environment is only passed to the child), and ``stop()`` stops exactly the process this object
started and removes its temp dir.
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import IO


def unavailable_reason() -> str | None:
    """Why a server cannot be started here (None when it can)."""
    for module in ("moto.server", "flask", "s3fs"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install s3fs 'moto[server]')"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3ServerError(RuntimeError):
    pass


class S3Server:
    """One moto server. ``start()`` returns its endpoint URL; ``stop()`` is idempotent."""

    def __init__(self, env: Mapping[str, str] | None = None, start_timeout: float = 30.0,
                 host: str = "127.0.0.1") -> None:
        self.host = host  # another address: a simulated machine's bridge (tests/integration/machines.py)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.endpoint_url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._base: str | None = None
        self._log: IO[bytes] | None = None

    def _answers(self) -> bool:
        assert self.port is not None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            conn.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            conn.close()

    def _log_tail(self) -> str:
        if self._base is None:
            return ""
        try:
            with open(os.path.join(self._base, "server.log"), errors="replace") as fh:
                return fh.read()[-2000:]
        except OSError:
            return ""

    def start(self) -> str:
        if self._proc is not None:
            assert self.endpoint_url is not None
            return self.endpoint_url
        reason = unavailable_reason()
        if reason:
            raise S3ServerError(reason)
        self._base = tempfile.mkdtemp(prefix="torchyard-s3-")
        self._log = open(os.path.join(self._base, "server.log"), "ab")  # noqa: SIM115 - closed in stop()
        atexit.register(self.stop)
        try:
            for _attempt in range(5):  # the free port may be taken between picking and binding it
                self.port = free_port()
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.env},
                    cwd=self._base,
                )
                deadline = time.monotonic() + self.start_timeout
                while time.monotonic() < deadline and self._proc.poll() is None:
                    if self._answers():
                        self.endpoint_url = f"http://{self.host}:{self.port}"
                        return self.endpoint_url
                    time.sleep(0.05)
                self._terminate()
            raise S3ServerError(f"moto server did not start:\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server this object started (if any) and remove its temp dir."""
        try:
            self._terminate()
        finally:
            atexit.unregister(self.stop)
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)
                self._base = None
            self.endpoint_url = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
