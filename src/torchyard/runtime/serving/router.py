"""An endpoint's router: ``python -m torchyard.runtime.serving.router ENDPOINT_DIR`` (detached).

Azure ML v2's online endpoint: one address in front of several deployments (each a local service on
127.0.0.1). A request goes to the deployment named by its ``torchyard-deployment`` (or Azure's
``azureml-model-deployment``) header, else to one drawn by the traffic weights; with a mirror
setting a copy of that share of requests also goes to a shadow deployment, whose answers are
discarded (its metrics are kept, on its own ``/metrics`` and here by code). The answer carries
``azureml-model-deployment: NAME``.

SIGHUP re-reads ``endpoint.json`` (traffic, mirror, deployments): the new weights apply to the next
request, requests in flight finish where they went, so a traffic shift drops nothing. SIGTERM stops.
A request body larger than the endpoint's ``max_request_bytes`` is answered 413.

Supervised like a service: the detached process started by ``Endpoint.create`` binds the address
once and runs the router itself as its child (``router --serve DIR FD``, on the inherited socket);
a child that dies is restarted (connections wait in the socket's queue meanwhile), and
``state.json`` says so (``Unhealthy`` until it is back, ``restarts``, ``last_crash``). The serving
child reports the configuration revision it applied in ``router.json``.
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
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from torchyard.workspace.services import read_json, write_json

_PIN_HEADERS = (b"torchyard-deployment", b"azureml-model-deployment")
_OIP_HEADER = b"inference-header-content-length"
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)
POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 15.0


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} torchyard endpoint: {msg}", flush=True)


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
        # a deployment's base URI is an origin and, for one on Ray Serve, its route prefix
        self.deployments: dict[str, str] = {}
        self.prefixes: dict[str, bytes] = {}
        for k, v in doc.get("deployments", {}).items():
            scheme, _, rest = str(v["uri"]).partition("://")
            hostport, slash, prefix = rest.partition("/")
            self.deployments[k] = f"{scheme}://{hostport}"
            self.prefixes[k] = (slash + prefix).rstrip("/").encode()
        self.traffic = [(k, float(v)) for k, v in doc.get("traffic", {}).items() if v > 0 and k in self.deployments]
        self.mirror = [(k, float(v)) for k, v in doc.get("mirror", {}).items() if v > 0 and k in self.deployments]
        self.auth = doc.get("auth_mode") == "key"
        self.max_body = int(doc.get("max_request_bytes") or DEFAULT_MAX_REQUEST_BYTES)
        self.keys = self._file_keys() if self.auth else ()
        self.applied()

    def applied(self) -> None:
        """Say which configuration revision this serving process routes by (``router.json``)."""
        write_json(os.path.join(self.dir, "router.json"), {"pid": os.getpid(), "revision": self.revision,
                                                            "time": time.time()})

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
        declared = headers.get(b"content-length")
        too_large = json.dumps({"error": f"the request body is larger than max_request_bytes ({self.max_body})"})
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            self.counts[(target, 413)] += 1
            await self._answer(send, 413, too_large.encode(), request_id, None, extra=[(b"connection", b"close")])
            return
        chunks = []
        more = True
        size = 0
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                self.counts[(target, 413)] += 1
                await self._answer(send, 413, too_large.encode(), request_id, None, extra=[(b"connection", b"close")])
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        target_path = path + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        oip_head = headers.get(_OIP_HEADER)  # OIP's binary tensor extension: where the JSON header ends
        tail = (f"{target_path} HTTP/1.1\r\nhost: upstream\r\n"
                f"content-type: {headers.get(b'content-type', b'application/json').decode('latin-1')}\r\n"
                + (f"inference-header-content-length: {oip_head.decode()}\r\n" if oip_head and oip_head.isdigit()
                   else "")
                + f"x-request-id: {request_id.decode('latin-1')}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
        verb = method.encode() + b" "
        if pinned is None:
            for shadow, pct in self.mirror:
                if shadow != target and random.random() * 100 < pct:
                    asyncio.get_running_loop().create_task(self._mirror(shadow, verb + self.prefixes[shadow] + tail))
        try:
            status, resp_headers, resp_body = await self.client.request(self.deployments[target],
                                                                        verb + self.prefixes[target] + tail)
        except Exception as err:  # noqa: BLE001 - the deployment did not answer
            self.counts[(target, 502)] += 1
            await self._answer(send, 502, json.dumps({"error": f"deployment {target!r} did not answer: {err!r}"})
                               .encode(), request_id, target)
            return
        self.counts[(target, status)] += 1
        await self._answer(send, status, resp_body, request_id, target,
                           resp_headers.get(b"content-type", b"application/json"),
                           [(k, resp_headers[k]) for k in (b"retry-after", _OIP_HEADER) if k in resp_headers] or None)

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
        headers.append((b"content-length", str(len(body)).encode()))
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


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def supervise(endpoint_dir: str) -> int:
    """The endpoint's detached process: bind once, run the router as a child, restart it if it dies."""
    doc = read_json(os.path.join(endpoint_dir, "endpoint.json")) or {}
    state_path = os.path.join(endpoint_dir, "state.json")
    host, port = str(doc.get("host", "127.0.0.1")), int(doc.get("port") or 0)
    try:
        sock = _bind(host, port)
    except OSError as err:
        write_json(state_path, {"state": "Failed", "pid": os.getpid(), "error": f"cannot bind {host}:{port}: {err}"})
        return 1
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    state: dict[str, Any] = {"state": "Transitioning", "pid": os.getpid(), "host": host,
                             "port": sock.getsockname()[1], "restarts": 0, "router_pid": None,
                             "started_at": time.time()}

    def save(**changes: Any) -> None:
        state.update(changes, updated_at=time.time())
        write_json(state_path, state)

    flags = {"stop": False}
    child: list[subprocess.Popen[bytes]] = []

    def forward_hup(*_: Any) -> None:
        if child and child[0].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child[0].send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, forward_hup)
    signal.signal(signal.SIGTERM, lambda *_: flags.update(stop=True))
    signal.signal(signal.SIGINT, lambda *_: flags.update(stop=True))

    def spawn() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(endpoint_dir, "router.json"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "torchyard.runtime.serving.router", "--serve", endpoint_dir, str(sock.fileno())],
            stdin=subprocess.DEVNULL, pass_fds=(sock.fileno(),), env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        child[:] = [proc]
        _log(f"router started (pid {proc.pid}) on {host}:{state['port']}")

    spawn()
    ever_ready = False
    restart_at: float | None = None
    while not flags["stop"]:
        proc = child[0] if child else None
        if proc is not None:
            code = proc.poll()
            if code is None:
                report = read_json(os.path.join(endpoint_dir, "router.json")) or {}
                if report.get("pid") == proc.pid and (state["state"] != "Healthy" or state["router_pid"] != proc.pid):
                    ever_ready = True
                    save(state="Healthy", router_pid=proc.pid)
            else:
                child.clear()
                restarts = int(state["restarts"]) + 1
                delay = RESTART_BACKOFF[min(restarts - 1, len(RESTART_BACKOFF) - 1)]
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                _log(f"router (pid {proc.pid}) died ({how}); restarting it in {delay:.1f} s (restart {restarts})")
                crash = {"how": how, "pid": proc.pid, "time": time.time()}
                if not ever_ready and restarts >= 3:
                    _log("the router never started; giving up (see the lines above)")
                    save(state="Failed", restarts=restarts, router_pid=None, last_crash=crash,
                         error=f"the router exited ({how}) before it served, three times")
                    sock.close()
                    return 1
                save(state="Unhealthy" if ever_ready else "Transitioning", restarts=restarts, router_pid=None,
                     last_crash=crash)
                restart_at = time.monotonic() + delay
        if not child and restart_at is not None and time.monotonic() >= restart_at:
            restart_at = None
            spawn()
        time.sleep(POLL_SECONDS)
    _log("stopping the router")
    for proc in child:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sock.close()
    save(state="Stopped", router_pid=None)
    _log("endpoint stopped")
    return 0


def serve(endpoint_dir: str, fd: int) -> int:
    """The serving child: the router app on the inherited socket ``fd``."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler is in (the default would kill us)
    parent = os.getppid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: never outlive the supervisor
    if os.getppid() != parent:
        return 1
    sock = socket.socket(fileno=fd)
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
        router.reload()  # a SIGHUP ignored before the handler was in is not lost
        await server.serve(sockets=[sock])

    factory = uvicorn.Config(router).get_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "--serve":
        return serve(os.path.abspath(args[1]), int(args[2]))
    if len(args) != 1:
        print("usage: python -m torchyard.runtime.serving.router ENDPOINT_DIR", file=sys.stderr)
        return 2
    return supervise(os.path.abspath(args[0]))


if __name__ == "__main__":
    sys.exit(main())
