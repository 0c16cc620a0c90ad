"""A small HTTP client for the team server (stdlib ``http.client``: one kept-alive connection per
thread, JSON in and out, the server's errors raised as torchyard's own).

Idempotent requests (GET, PUT, DELETE) are retried with back-off when the connection fails or the
server answers 502/503/504 (a restarting server); POSTs are retried only when the request could not
be sent at all.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

from torchyard.errors import NotFoundError, SpecError, TorchyardError, WorkspaceError

CREDENTIALS = os.path.join(os.path.expanduser("~"), ".config", "torchyard", "credentials.json")


class AccessDenied(WorkspaceError):
    """The server refused: no or a bad token (401), or not enough rights (403)."""


class ServerUnavailable(WorkspaceError):
    """The server could not be reached (after retries)."""


def credentials_path() -> str:
    return os.environ.get("TORCHYARD_CREDENTIALS") or CREDENTIALS


def load_credentials() -> dict[str, Any]:
    try:
        with open(credentials_path()) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_credentials(data: dict[str, Any]) -> None:
    path = credentials_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def normalize_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SpecError("url", f"expected http(s)://HOST:PORT, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def token_for(url: str) -> str | None:
    """TORCHYARD_TOKEN, else the token ``torchyard login`` saved for ``url``."""
    found = os.environ.get("TORCHYARD_TOKEN")
    if found:
        return found
    entry = load_credentials().get("servers", {}).get(normalize_url(url))
    return entry.get("token") if isinstance(entry, dict) else None


def q(value: str) -> str:
    """One path segment, percent-encoded."""
    return quote(value, safe="")


class Client:
    """JSON over HTTP to one server, with ``Authorization: Bearer TOKEN``."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0, retries: int = 6) -> None:
        self.url = normalize_url(url)
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []  # every thread's, closed with the client
        self._lock = threading.Lock()
        self.sent_bytes = 0

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)

    def close(self) -> None:
        """Close every kept-alive connection (also done when the client is garbage-collected)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def headers(self, ctype: str | None = None) -> dict[str, str]:
        out = {"Accept": "application/json", "Origin": self.url}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        if ctype:
            out["Content-Type"] = ctype
        return out

    def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                raw: bytes | None = None, ctype: str | None = None, stream: bool = False) -> Any:
        """Send and return the decoded JSON (``stream``: the open response, for downloads)."""
        if params:
            path += "?" + urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None and ctype is None:
            ctype = "application/json"
        delay = 0.1
        for attempt in range(self.retries + 1):
            conn = self._conn()
            sent = False
            try:
                conn.request(method, path, body=data, headers=self.headers(ctype))
                sent = True
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as err:
                self._drop()
                if (sent and method == "POST") or attempt == self.retries:
                    raise ServerUnavailable(f"cannot reach the torchyard server at {self.url}: {err}") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if resp.status in (502, 503, 504) and method != "POST" and attempt < self.retries:
                resp.read()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if data is not None:
                self.sent_bytes += len(data)
            if resp.status >= 400:
                payload = resp.read()
                raise _error(resp.status, payload)
            if stream:
                return resp
            payload = resp.read()
            if resp.getheader("connection", "").lower() == "close":
                self._drop()
            return json.loads(payload) if payload else None
        raise ServerUnavailable(f"cannot reach the torchyard server at {self.url}")  # pragma: no cover

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def download(self, path: str, dest: str) -> str:
        """Stream ``path`` into the file ``dest`` (atomically)."""
        resp = self.request("GET", path, stream=True)
        tmp = f"{dest}.{os.getpid()}.part"
        try:
            with open(tmp, "wb") as out:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest

    def sse(self, path: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """(event, data) from a Server-Sent-Events route until the server ends the stream."""
        resp = self.request("GET", path, params=params, stream=True)
        event, lines = "", cast(list[str], [])
        for raw_line in resp:
            line = raw_line.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if lines:
                    yield event or "message", json.loads("\n".join(lines))
                event, lines = "", cast(list[str], [])
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].strip())
        self._drop()


def _error(status: int, payload: bytes) -> TorchyardError:
    try:
        err = json.loads(payload).get("error", {})
    except (ValueError, AttributeError):
        err = {}
    message = err.get("message") or payload[:200].decode("utf-8", "replace") or f"HTTP {status}"
    if status == 404:
        return NotFoundError(message)
    if status == 400 and err.get("field"):
        field = str(err["field"])
        prefix = f"{field}: "
        return SpecError(field, message[len(prefix):] if message.startswith(prefix) else message)
    if status in (401, 403):
        return AccessDenied(f"{message} (HTTP {status})")
    return WorkspaceError(f"the server answered {status}: {message}")
