"""An endpoint's router: ``python -m torchyard.runtime.serving.router ENDPOINT_DIR`` (detached).

Azure ML v2's online endpoint: one address in front of several deployments (each a local service on
127.0.0.1). A request goes to the deployment named by its ``torchyard-deployment`` (or Azure's
``azureml-model-deployment``) header, else to one drawn by the traffic weights; with a mirror
setting a copy of that share of requests also goes to a shadow deployment, whose answers are
discarded (its metrics are kept, on its own ``/metrics`` and here by code). The answer carries
``azureml-model-deployment: NAME``.

SIGHUP re-reads ``endpoint.json`` (traffic, mirror, deployments): the new weights apply to the next
request, requests in flight finish where they went, so a traffic shift drops nothing. SIGTERM stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import hmac
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from torchyard.workspace.services import read_json, write_json

_PIN_HEADERS = (b"torchyard-deployment", b"azureml-model-deployment")


class Router:
    def __init__(self, endpoint_dir: str) -> None:
        self.dir = endpoint_dir
        self.client = Upstreams()
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        self.mirrored: collections.Counter[tuple[str, int]] = collections.Counter()
        self.reload()

    def reload(self) -> None:
        doc = read_json(os.path.join(self.dir, "endpoint.json")) or {}
        self.revision = int(doc.get("revision", 0))
        self.name = str(doc.get("name", "endpoint"))
        self.deployments: dict[str, str] = {k: v["uri"] for k, v in doc.get("deployments", {}).items()}
        self.traffic = [(k, float(v)) for k, v in doc.get("traffic", {}).items() if v > 0 and k in self.deployments]
        self.mirror = [(k, float(v)) for k, v in doc.get("mirror", {}).items() if v > 0 and k in self.deployments]
        self.auth = doc.get("auth_mode") == "key"
        self.keys = self._file_keys() if self.auth else ()
        state = read_json(os.path.join(self.dir, "state.json"))
        if state is not None and state.get("state") == "Healthy" and state.get("pid") == os.getpid():
            write_json(os.path.join(self.dir, "state.json"), {**state, "revision": self.revision})  # applied

    def pick(self) -> str | None:
        total = sum(w for _, w in self.traffic)
        if total <= 0:
            return None
        x = random.random() * total
        for name, weight in self.traffic:
            x -= weight
            if x < 0:
                return name
        return self.traffic[-1][0]

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self.auth:
            return True
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and any(hmac.compare_digest(token.strip(), k) for k in self.keys)

    def _file_keys(self) -> tuple[bytes, ...]:
        keys = read_json(os.path.join(self.dir, "keys.json")) or {}
        return tuple(str(keys[k]).encode() for k in ("primary", "secondary") if keys.get(k))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.client.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        path, method = scope["path"], scope["method"]
        request_id = headers.get(b"x-request-id") or os.urandom(16).hex().encode()
        if method == "GET" and path in ("/", "/v2/health/live", "/v2/health/ready"):
            await self._answer(send, 200, b"Healthy" if path == "/" else b'{"live":true}', request_id, None)
            return
        if method == "GET" and path == "/metrics":
            if not self.authorized(headers):
                await self._answer(send, 401, b'{"error":"a valid key is needed"}', request_id, None)
                return
            await self._answer(send, 200, self.render().encode(), request_id, None, b"text/plain; version=0.0.4")
            return
        if not self.authorized(headers):
            await self._answer(send, 401, b'{"error":"a valid key is needed: Authorization: Bearer KEY"}',
                               request_id, None)
            return
        pinned = next((headers[h].decode() for h in _PIN_HEADERS if h in headers), None)
        if pinned is not None:
            if pinned not in self.deployments:
                known = ", ".join(sorted(self.deployments)) or "none"
                await self._answer(send, 404, json.dumps({"error": f"no deployment {pinned!r}; deployments: {known}"})
                                   .encode(), request_id, None)
                return
            target: str | None = pinned
        else:
            target = self.pick()
        if target is None:
            await self._answer(send, 503, b'{"error":"no deployment takes traffic"}', request_id, None)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        target_path = path + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        head = (f"{method} {target_path} HTTP/1.1\r\nhost: upstream\r\n"
                f"content-type: {headers.get(b'content-type', b'application/json').decode('latin-1')}\r\n"
                f"x-request-id: {request_id.decode('latin-1')}\r\ncontent-length: {len(body)}\r\n\r\n").encode()
        raw = head + body
        if pinned is None:
            for shadow, pct in self.mirror:
                if shadow != target and random.random() * 100 < pct:
                    asyncio.get_running_loop().create_task(self._mirror(shadow, raw))
        try:
            status, resp_headers, resp_body = await self.client.request(self.deployments[target], raw)
        except Exception as err:  # noqa: BLE001 - the deployment did not answer
            self.counts[(target, 502)] += 1
            await self._answer(send, 502, json.dumps({"error": f"deployment {target!r} did not answer: {err!r}"})
                               .encode(), request_id, target)
            return
        self.counts[(target, status)] += 1
        await self._answer(send, status, resp_body, request_id, target,
                           resp_headers.get(b"content-type", b"application/json"),
                           [(b"retry-after", resp_headers[b"retry-after"])] if b"retry-after" in resp_headers else None)

    async def _mirror(self, shadow: str, raw: bytes) -> None:
        try:
            code = (await self.client.request(self.deployments[shadow], raw))[0]
        except Exception:  # noqa: BLE001 - a shadow's failure never reaches the caller
            code = 502
        self.mirrored[(shadow, code)] += 1

    async def _answer(self, send: Any, status: int, body: bytes, request_id: bytes, deployment: str | None,
                      content_type: bytes = b"application/json", extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"content-type", content_type), (b"x-request-id", request_id)]
        if deployment is not None:
            headers.append((b"azureml-model-deployment", deployment.encode()))
        if extra:
            headers += extra
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def render(self) -> str:
        lab = f'endpoint="{self.name}"'
        out = ["# HELP torchyard_endpoint_requests_total Requests answered, by deployment and code.",
               "# TYPE torchyard_endpoint_requests_total counter"]
        for (dep, code), n in sorted(self.counts.items()):
            out.append(f'torchyard_endpoint_requests_total{{{lab},deployment="{dep}",code="{code}"}} {n}')
        out += ["# HELP torchyard_endpoint_mirrored_total Mirrored copies sent, by shadow deployment and code.",
                "# TYPE torchyard_endpoint_mirrored_total counter"]
        for (dep, code), n in sorted(self.mirrored.items()):
            out.append(f'torchyard_endpoint_mirrored_total{{{lab},deployment="{dep}",code="{code}"}} {n}')
        return "\n".join(out) + "\n"


class Upstreams:
    """Keep-alive HTTP/1.1 connections to the deployments (asyncio streams, one request at a time
    per connection). A request that fails on a reused connection before any answer byte arrived
    (the deployment closed it while idle) is sent again once on a fresh connection."""

    def __init__(self) -> None:
        self.idle: dict[str, collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def request(self, base: str, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        pool = self.idle.setdefault(base, collections.deque())
        for attempt in (0, 1):
            reused = bool(pool) and attempt == 0
            if reused:
                reader, writer = pool.pop()
            else:
                hostport = base.split("://", 1)[1]
                host, _, port = hostport.rpartition(":")
                reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            got_bytes = False
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                got_bytes = True
                status, headers, body, close = await _read_rest(reader, head)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                writer.close()
                if reused and not got_bytes:
                    continue
                raise
            if close:
                writer.close()
            else:
                pool.append((reader, writer))
            return status, headers, body
        raise ConnectionError(f"{base} closed the connection")  # pragma: no cover

    def close(self) -> None:
        for pool in self.idle.values():
            for _, writer in pool:
                writer.close()
        self.idle.clear()


async def _read_rest(reader: asyncio.StreamReader, head: bytes) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body, headers.get(b"connection", b"").lower() == b"close"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m torchyard.runtime.serving.router ENDPOINT_DIR", file=sys.stderr)
        return 2
    endpoint_dir = os.path.abspath(args[0])
    doc = read_json(os.path.join(endpoint_dir, "endpoint.json")) or {}
    state_path = os.path.join(endpoint_dir, "state.json")
    host, port = str(doc.get("host", "127.0.0.1")), int(doc.get("port") or 0)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        write_json(state_path, {"state": "Failed", "pid": os.getpid(), "error": f"cannot bind {host}:{port}: {err}"})
        return 1
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(36, 1)
    import uvicorn  # noqa: PLC0415

    router = Router(endpoint_dir)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = Server(uvicorn.Config(router, log_level="warning", access_log=False, lifespan="on", backlog=2048))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, router.reload)
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
        write_json(state_path, {"state": "Healthy", "pid": os.getpid(), "host": host, "revision": router.revision,
                                "port": sock.getsockname()[1], "started_at": time.time()})
        await server.serve(sockets=[sock])

    factory = uvicorn.Config(router).get_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    write_json(state_path, {"state": "Stopped", "pid": os.getpid()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
