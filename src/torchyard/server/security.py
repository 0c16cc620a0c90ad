"""What keeps the dashboard safe to run: Host and Origin checks, the access token, body limits,
security headers, and reading files only inside a run's folder.

A pure ASGI middleware (it never buffers a streamed response, so Server-Sent Events pass through).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from torchyard.errors import NotFoundError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_COOKIE = "torchyard_token"
MAX_BODY = 64 * 1024
#: snapshot objects are uploaded raw (PUT /api/v1/objects/SHA256), one file each
MAX_OBJECT = 256 * 1024 * 1024
OBJECT_PREFIX = "/api/v1/objects/"
#: many small objects in one request: (64 hex digits, 8-byte big-endian length, the bytes) repeated
PACK_PATH = "/api/v1/packs"
#: a node's mirror frame (PUT /api/v1/runs/ID/mirror/NODE: logs, metric journals, its report)
MAX_FRAME = 16 * 1024 * 1024
#: JSON bodies that list a whole snapshot (up to 100,000 files) may be this large
BIG_JSON = {("POST", "/api/v1/objects/missing"): 16 * 1024 * 1024, ("POST", "/api/v1/snapshots"): 16 * 1024 * 1024}
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host header values the server answers (None: any, for a wildcard bind with a token)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    names = set(LOOPBACK_NAMES) if is_loopback(host) else set()
    names.add(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    names.update(extra)
    return frozenset({f"{n}:{port}" for n in names} | ({n for n in names} if port == 80 else set()))


class SecurityMiddleware:
    """Host check (no DNS rebinding), the token, same-origin unsafe methods, a JSON body limit, and
    nosniff/CSP/frame headers on every response."""

    def __init__(
        self, app: ASGIApp, *, hosts: frozenset[str] | None, token: str | None, max_body: int = MAX_BODY,
        auth: Any = None,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token
        self.max_body = max_body
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts is not None and host.lower() not in self.hosts:
            await _reply(send, 421, "this server does not answer for that Host header")
            return
        method = scope["method"]
        from_cookie = False
        if self.token is not None and not getattr(self.auth, "users", False):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            offered = query.get("token", [None])[0]
            if (offered is not None and method == "GET" and not scope["path"].startswith("/api/")
                    and hmac.compare_digest(offered.encode(), self.token.encode())):
                await _set_cookie(send, scope["path"], self.token)
                return
            if not self._authorized(headers):
                await _reply(send, 401, "an access token is needed: open the URL torchyard ui printed, "
                                        "or send 'Authorization: Bearer TOKEN'")
                return
        if self.auth is not None:
            import asyncio  # noqa: PLC0415

            principal, from_cookie = await asyncio.to_thread(self.auth.authenticate, headers)
            scope["torchyard.principal"] = principal  # None: the route answers 401 unless it is public
        if method in UNSAFE:
            problem = _cross_origin(headers, host)
            if problem is None and from_cookie and "origin" not in headers and "sec-fetch-site" not in headers:
                problem = "a cookie session's unsafe request must carry Origin (CSRF check)"
            if problem:
                await _reply(send, 403, problem)
                return
            frame = method == "PUT" and scope["path"].startswith("/api/v1/runs/") and "/mirror/" in scope["path"]
            upload = frame or (method == "PUT" and (scope["path"].startswith(OBJECT_PREFIX)
                                                    or scope["path"] == PACK_PATH))
            limit = (MAX_FRAME if frame else MAX_OBJECT if upload
                     else max(self.max_body, BIG_JSON.get((method, scope["path"]), 0)))
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await _reply(send, 413, f"request bodies are limited to {limit} bytes")
                return
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            want = "application/octet-stream" if upload else "application/json"
            if (length not in (None, "0") or "transfer-encoding" in headers) and ctype != want:
                await _reply(send, 415, f"request bodies must be {want}")
                return
            receive = _limited(receive, limit)

        started = time.perf_counter()

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                extra = [
                    (b"server-timing", f"app;dur={took:.2f}".encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                own = list(message.get("headers", []))
                if not any(k.lower() == b"content-security-policy" for k, _ in own):  # a page's own (stricter hashes)
                    extra.append((b"content-security-policy", CSP.encode()))
                message["headers"] = own + extra
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except _BodyTooLarge:
            await _reply(send, 413, "the request body is over its limit")

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and hmac.compare_digest(value.encode(), self.token.encode()):
                return True
        return False


def _cross_origin(headers: dict[str, str], host: str) -> str | None:
    origin = headers.get("origin")
    if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        return f"cross-origin request from {origin!r} refused"
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request ({site}) refused"
    return None


class _BodyTooLarge(Exception):
    pass


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message

    return wrapped


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ],
    })
    await send({"type": "http.response.body", "body": body})


async def _set_cookie(send: Send, path: str, token: str) -> None:
    cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    await send({
        "type": "http.response.start",
        "status": 303,
        "headers": [(b"location", (path or "/").encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
                    (b"content-length", b"0")],
    })
    await send({"type": "http.response.body", "body": b""})


def safe_path(root: str, relative: str) -> str:
    """The real path of ``relative`` inside ``root``, or NotFoundError: no ``..``, no absolute path,
    no NUL or backslash, and no symlink that leads out of ``root``. ``relative`` is taken as given
    (already percent-decoded once by the server; it is never decoded again)."""
    bad = NotFoundError(f"no file {relative!r} here")
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        raise bad
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if real != real_root and not real.startswith(real_root + os.sep):
        raise bad
    return real
