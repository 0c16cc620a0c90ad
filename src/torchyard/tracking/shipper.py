"""Shipping a rank's metric journal to the team server over HTTP, for nodes that cannot reach the
database or the run folder (in-job: stdlib and msgspec only).

The local journal stays the truth until the server acknowledges it: the shipper sends only whole
frames, from the last acknowledged byte offset (kept in ``<journal>.ack``), as
``PUT /api/v1/runs/RUN/journal/RANK?offset=N`` with the run's own token (scoped to that run). The
server writes the bytes at that offset of its copy of the journal, which the run's supervisor
ingests like any other; re-sending a range already there is harmless (the same bytes land on the
same place), so a server killed mid-request loses nothing: the shipper retries with back-off.
The token is taken from the environment (``TORCHYARD_RUN_TOKEN``) and never written anywhere.
"""

from __future__ import annotations

import http.client
import json
import os
import struct
import threading
import time
from typing import Any
from urllib.parse import urlsplit

_HEADER = struct.Struct("<I")
MAX_BATCH = 8 * 1024 * 1024


def complete_end(data: bytes) -> int:
    """The length of the longest prefix of ``data`` made of whole frames."""
    pos = 0
    while pos + 4 <= len(data):
        (length,) = _HEADER.unpack_from(data, pos)
        if pos + 4 + length > len(data):
            break
        pos += 4 + length
    return pos


class JournalShipper:
    """Sends new whole frames of ``path`` (rank ``rank`` of run ``run_id``) to the server at ``url``."""

    def __init__(self, url: str, token: str, run_id: str, rank: int, path: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.token = token
        self.path = path
        self.route = f"/api/v1/runs/{run_id}/journal/{int(rank)}"
        self.ack_path = path + ".ack"
        self.acked = self._read_ack()
        self._conn: http.client.HTTPConnection | None = None
        self.attempts = 0
        self.failures = 0

    def _read_ack(self) -> int:
        try:
            with open(self.ack_path) as fh:
                return int(fh.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_ack(self) -> None:
        tmp = f"{self.ack_path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(str(self.acked))
        os.replace(tmp, self.ack_path)

    def pending(self) -> bytes:
        """Whole frames not acknowledged yet (at most MAX_BATCH bytes, always whole frames)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.acked)
                data = fh.read(MAX_BATCH)
        except FileNotFoundError:
            return b""
        return data[: complete_end(data)]

    def _send(self, data: bytes) -> tuple[int, dict[str, Any]]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/octet-stream",
                   "Origin": self.base}
        self._conn.request("PUT", f"{self.route}?offset={self.acked}", body=data, headers=headers)
        resp = self._conn.getresponse()
        body = resp.read()
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        return resp.status, parsed if isinstance(parsed, dict) else {}

    def ship_once(self) -> int:
        """Send what is pending once; bytes acknowledged. Raises OSError/HTTPException on failure
        (nothing is acknowledged then) and RuntimeError when the server refuses for good."""
        data = self.pending()
        if not data:
            return 0
        self.attempts += 1
        try:
            status, body = self._send(data)
        except (OSError, http.client.HTTPException):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise
        if status == 409 and isinstance(body.get("offset"), int):  # the server has less: resend from there
            self.acked = int(body["offset"])
            self._write_ack()
            return 0
        if status in (502, 503, 504):
            raise OSError(f"server busy ({status})")
        if status >= 400:
            raise RuntimeError(f"the server refused the journal ({status}): {body}")
        sent = int(body.get("offset", self.acked + len(data))) - self.acked
        self.acked += sent
        self._write_ack()
        return sent

    def run(self, stop: threading.Event, interval: float = 0.5, max_delay: float = 5.0) -> None:
        """Ship until ``stop`` is set and everything written before it is acknowledged; back off on errors."""
        delay = 0.1
        while True:
            stopping = stop.is_set()
            try:
                sent = self.ship_once()
                delay = 0.1
            except (OSError, http.client.HTTPException):
                self.failures += 1
                time.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            if stopping and not sent and not self.pending():
                return
            if not sent:
                stop.wait(interval)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
