"""The node's half of reporting over HTTP: ``python -m torchyard.compute.mirror_push URL RUN_ID NODE DIR``.

For targets whose nodes reach only the team server's API (``ComputeTarget.reports_over_http``), the
node's launcher starts this next to its ranks. It sends the mirror channel's frames (:func:`scan` of
the node's run folder: new bytes of logs, metric journals and exit files, and the node's report) to
``PUT /api/v1/runs/RUN_ID/mirror/NODE`` as msgpack, with the run's token from ``TORCHYARD_RUN_TOKEN``
(never an argument or a file). The node's files stay the truth until the server has them: the
server answers with what it holds, which is where the next frame starts; a server that is down or
restarting is retried with back-off (0.1 s doubling to 5 s), and a pusher that restarts asks first
(``GET .../mirror/NODE``). It ends when its stdin closes (the launcher has finished) and everything
is sent, or ``TORCHYARD_REPORT_LINGER`` seconds (default 300) after that if the server stays away.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec

from torchyard.compute.mirror import Changes, scan


class Refused(Exception):
    """The server will not take this node's frames (token revoked or expired, the run has ended)."""


class Pusher:
    """Sends node ``node``'s new frames of ``node_dir`` to the server at ``url``."""

    def __init__(self, url: str, token: str, run_id: str, node: int, node_dir: str) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or (443 if self.https else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.token = token
        self.route = f"/api/v1/runs/{run_id}/mirror/{int(node)}"
        self.node_dir = node_dir
        self.offsets: dict[str, int] | None = None
        self.sent_bytes = 0
        self.requests = 0
        self.failures = 0
        self._conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, body: bytes | None = None) -> dict[str, Any]:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Origin": self.origin}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            self._conn.request(method, self.route, body=body, headers=headers)
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            raise
        self.requests += 1
        if resp.status in (502, 503, 504):
            raise OSError(f"server busy ({resp.status})")
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        if resp.status >= 400:
            message = parsed.get("error", {}).get("message") if isinstance(parsed, dict) else None
            raise Refused(f"the server refused this node's report ({resp.status}): {message or raw[:200]!r}")
        return parsed if isinstance(parsed, dict) else {}

    def push_once(self) -> int:
        """One frame (what the server lacks, at most the mirror's chunk); the bytes it carried."""
        if self.offsets is None:
            self.offsets = {str(k): int(v) for k, v in (self._request("GET").get("offsets") or {}).items()}
        changes: Changes = scan(self.node_dir, self.offsets)
        if not changes:
            return 0
        answer = self._request("PUT", msgspec.msgpack.encode(changes))
        for rel, have in (answer.get("offsets") or {}).items():
            self.offsets[str(rel)] = int(have)
        size = sum(len(entry[1]) for entry in changes.values())
        self.sent_bytes += size
        return size or 1  # an empty new file is news too

    def run(self, done: threading.Event, interval: float = 0.5, linger: float = 300.0) -> int:
        """Push until ``done`` is set and nothing is left (0), or the server refused (1), or it stayed
        unreachable for ``linger`` seconds after ``done`` (1)."""
        delay = 0.1
        since: float | None = None
        while True:
            finishing = done.is_set()
            if finishing and since is None:
                since = time.monotonic()
            try:
                moved = self.push_once()
                delay = 0.1
            except Refused as err:
                print(f"torchyard mirror_push: {err}", file=sys.stderr, flush=True)
                return 1
            except (OSError, http.client.HTTPException) as err:
                self.failures += 1
                if since is not None and time.monotonic() - since > linger:
                    print(f"torchyard mirror_push: gave up after {linger:.0f} s: the server at {self.origin} "
                          f"did not answer ({err})", file=sys.stderr, flush=True)
                    return 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if moved:
                continue
            if finishing:
                return 0
            done.wait(interval)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: python -m torchyard.compute.mirror_push URL RUN_ID NODE_RANK NODE_DIR", file=sys.stderr)
        return 2
    token = os.environ.pop("TORCHYARD_RUN_TOKEN", "")
    if not token:
        print("torchyard mirror_push: TORCHYARD_RUN_TOKEN is not set", file=sys.stderr)
        return 2
    url, run_id, node, node_dir = args
    pusher = Pusher(url, token, run_id, int(node), node_dir)
    done = threading.Event()

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            done.set()

    threading.Thread(target=wait_for_eof, daemon=True, name="stdin").start()
    try:
        linger = float(os.environ.get("TORCHYARD_REPORT_LINGER") or 300)
    except ValueError:
        linger = 300.0
    rc = pusher.run(done, linger=linger)
    print(f"torchyard mirror_push: {pusher.sent_bytes} bytes in {pusher.requests} requests, "
          f"{pusher.failures} retried", file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
