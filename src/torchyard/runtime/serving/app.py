"""The scoring app one service worker runs: user code adapter, dynamic batcher, metrics, the ASGI app.

Wire protocols: Azure's ``POST /score`` and ``GET /`` (healthy), ``GET /swagger.json``, OIP v2
(``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``, and ``/v2/models/{name}/infer``
for the typed API), ``GET /metrics`` (Prometheus text). Every response carries ``x-request-id``
(the request's own, else a new one).

Backpressure: at most ``max_concurrent_requests`` requests are admitted (queued or running); one
more is answered 429. Until the user's code has loaded, scoring answers 503. A request not answered
within ``request_timeout_ms`` gets 504 (if it had not started, it never runs). A ``run()`` /
``predict()`` that raises gives 500 with the message; the worker stays up.

The hot path is a plain ASGI callable (Starlette's responses serve the other routes): the body is
decoded with msgspec, the user's code runs in one dedicated thread (so the event loop keeps
accepting, parsing and answering while a forward pass runs; torch releases the GIL).
"""

from __future__ import annotations

import ast
import asyncio
import collections
import concurrent.futures
import hmac
import importlib.util
import json
import os
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode

#: The default limit on a scoring request's body (``max_request_bytes`` in the deployment config).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class EntryScriptError(Exception):
    """The entry script cannot be used (its file, or what it defines)."""


# ---- the user's code ----------------------------------------------------------------------------


def inspect_entry_script(path: str) -> str:
    """``"azure"`` (module-level ``init()`` and ``run(raw_data)``) or ``"typed"`` (a class with
    ``load`` and ``predict``), read from the file's syntax tree without running it."""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except FileNotFoundError:
        raise EntryScriptError(f"{path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise EntryScriptError(f"{path} cannot be parsed: {err}") from None
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    typed = [
        n.name
        for n in tree.body
        if isinstance(n, ast.ClassDef)
        and {"load", "predict"} <= {m.name for m in n.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)}
    ]
    if len(typed) > 1:
        raise EntryScriptError(f"{path} defines several classes with load() and predict() ({', '.join(typed)}); keep one")
    if typed:
        return "typed"
    missing = [f for f in ("init", "run") if f not in funcs]
    if missing:
        raise EntryScriptError(
            f"{path} defines no {' and no '.join(f + '()' for f in missing)}; a scoring script defines init() and "
            "run(raw_data), or a class with load(model_dir) and predict(batch)"
        )
    return "azure"


class UserCode:
    """Loads the entry script and calls it: Azure's ``init``/``run`` or the typed ``load``/``predict``."""

    def __init__(self, entry_path: str, model_dir: str) -> None:
        self.entry_path = entry_path
        self.model_dir = model_dir
        self.mode = inspect_entry_script(entry_path)
        self.module: Any = None
        self.instance: Any = None
        self.input_example: Any = None
        self.output_example: Any = None

    def load(self) -> None:
        """Import the script and run ``init()`` / ``Class().load(model_dir)`` (in the inference thread)."""
        folder = os.path.dirname(self.entry_path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location("score", self.entry_path)
        if spec is None or spec.loader is None:
            raise EntryScriptError(f"cannot import {self.entry_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["score"] = module
        spec.loader.exec_module(module)
        self.module = module
        self.input_example = getattr(module, "input_example", None)
        self.output_example = getattr(module, "output_example", None)
        if self.mode == "typed":
            cls = next(
                v for v in vars(module).values()
                if isinstance(v, type) and v.__module__ == "score" and callable(getattr(v, "load", None))
                and callable(getattr(v, "predict", None))
            )
            self.instance = cls()
            self.instance.load(self.model_dir)
        else:
            module.init()
        try:  # one thread per worker for torch, whatever the script imported
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(int(os.environ.get("TORCHYARD_THREADS_PER_WORKER", "1")))
        except Exception:  # noqa: BLE001 - a best effort
            pass

    def call(self, bodies: list[Any]) -> list[Any]:
        """Answer a batch (typed: one ``predict``; azure: a batch of one ``run``)."""
        if self.mode == "typed":
            out = self.instance.predict(bodies)
            if not isinstance(out, list | tuple) or len(out) != len(bodies):
                raise TypeError(
                    f"predict() must return a list with one result per input ({len(bodies)}), got "
                    f"{type(out).__name__}" + (f" of {len(out)}" if isinstance(out, list | tuple) else "")
                )
            return list(out)
        return [self.module.run(bodies[0])]


# ---- metrics --------------------------------------------------------------------------------------

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_CODES = tuple(range(100, 600))
# One worker's counters, as float64 slots: a header, then the histograms and the codes.
_MAGIC = 7301.0  # the layout's version
_PID, _INFLIGHT, _LAT_SUM, _BATCH_SUM, _HEAD = 1, 2, 3, 4, 5
_LAT0 = _HEAD
_BATCH0 = _LAT0 + len(_LATENCY_BUCKETS) + 1
_CODE0 = _BATCH0 + len(_BATCH_BUCKETS) + 1
_SLOTS = _CODE0 + len(_CODES)
METRICS_SUFFIX = ".metrics"


class Metrics:
    """Counters and histograms of one worker, kept in a small shared-memory file.

    With ``folder`` (the service's status folder) the slots live in ``folder/LABEL.metrics``,
    memory-mapped: the worker adds to them in place (one writer, no lock, no system call), and
    ``render()`` sums the files of every worker of the service, so ``GET /metrics`` answered by any
    worker gives the service's totals. A restarted worker's predecessor keeps its file, so the
    totals never go backwards; only live workers count towards the in-flight gauge. Without
    ``folder`` (a Ray replica) the slots are in plain memory and ``render()`` is this worker's own.
    """

    def __init__(self, labels: str, max_batch_size: int = 1, folder: str | None = None,
                 name: str | None = None) -> None:
        self.labels = labels
        self.folder = folder
        self._map: Any = None
        if folder is not None:
            import mmap  # noqa: PLC0415

            path = os.path.join(folder, f"{name or 'worker'}{METRICS_SUFFIX}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, _SLOTS * 8)
                self._map = mmap.mmap(fd, _SLOTS * 8)
            finally:
                os.close(fd)
            self.slots = memoryview(self._map).cast("d")
        else:
            self.slots = memoryview(bytearray(_SLOTS * 8)).cast("d")
        self.slots[_PID] = float(os.getpid())
        self.slots[0] = _MAGIC

    @property
    def inflight(self) -> int:
        return int(self.slots[_INFLIGHT])

    @inflight.setter
    def inflight(self, value: int) -> None:
        self.slots[_INFLIGHT] = float(value)

    def observe(self, code: int, seconds: float) -> None:
        slots = self.slots
        if 100 <= code < 600:
            slots[_CODE0 + code - 100] += 1.0
        slots[_LAT_SUM] += seconds
        for i, bound in enumerate(_LATENCY_BUCKETS):
            if seconds <= bound:
                slots[_LAT0 + i] += 1.0
                return
        slots[_BATCH0 - 1] += 1.0

    def observe_batch(self, size: int) -> None:
        slots = self.slots
        slots[_BATCH_SUM] += size
        for i, bound in enumerate(_BATCH_BUCKETS):
            if size <= bound:
                slots[_BATCH0 + i] += 1.0
                return
        slots[_CODE0 - 1] += 1.0

    def _totals(self) -> tuple[list[float], int]:
        """The slots summed over the service's workers (the in-flight gauge over live ones only)."""
        if self.folder is None:
            return list(self.slots), 1
        total = [0.0] * _SLOTS
        workers = 0
        try:
            names = [n for n in os.listdir(self.folder) if n.endswith(METRICS_SUFFIX)]
        except OSError:
            names = []
        for n in names:
            try:
                with open(os.path.join(self.folder, n), "rb") as fh:
                    raw = fh.read(_SLOTS * 8)
            except OSError:
                continue
            if len(raw) != _SLOTS * 8:
                continue
            vals = memoryview(raw).cast("d")
            if vals[0] != _MAGIC:
                continue
            live = _pid_alive(int(vals[_PID]))
            workers += live
            for k in range(1, _SLOTS):
                if k == _INFLIGHT and not live:
                    continue
                total[k] += vals[k]
        return total, workers

    def render(self) -> str:
        """Prometheus's text format (version 0.0.4)."""
        t, workers = self._totals()
        lab = self.labels
        out = [
            "# HELP torchyard_requests_total Scoring requests answered, by HTTP status code.",
            "# TYPE torchyard_requests_total counter",
        ]
        for k, code in enumerate(_CODES):
            if t[_CODE0 + k]:
                out.append(f'torchyard_requests_total{{{lab},code="{code}"}} {int(t[_CODE0 + k])}')
        out += [
            "# HELP torchyard_request_duration_seconds Time from request to response, in seconds.",
            "# TYPE torchyard_request_duration_seconds histogram",
        ]
        acc = 0
        for k, bound in enumerate(_LATENCY_BUCKETS):
            acc += int(t[_LAT0 + k])
            out.append(f'torchyard_request_duration_seconds_bucket{{{lab},le="{bound}"}} {acc}')
        acc += int(t[_BATCH0 - 1])
        out.append(f'torchyard_request_duration_seconds_bucket{{{lab},le="+Inf"}} {acc}')
        out.append(f"torchyard_request_duration_seconds_sum{{{lab}}} {t[_LAT_SUM]!r}")
        out.append(f"torchyard_request_duration_seconds_count{{{lab}}} {acc}")
        out += [
            "# HELP torchyard_batch_size Inputs per call of the model.",
            "# TYPE torchyard_batch_size histogram",
        ]
        acc = 0
        for k, size in enumerate(_BATCH_BUCKETS):
            acc += int(t[_BATCH0 + k])
            out.append(f'torchyard_batch_size_bucket{{{lab},le="{size}"}} {acc}')
        acc += int(t[_CODE0 - 1])
        out.append(f'torchyard_batch_size_bucket{{{lab},le="+Inf"}} {acc}')
        out.append(f"torchyard_batch_size_sum{{{lab}}} {int(t[_BATCH_SUM])}")
        out.append(f"torchyard_batch_size_count{{{lab}}} {acc}")
        out += [
            "# HELP torchyard_inflight_requests Requests admitted and not yet answered.",
            "# TYPE torchyard_inflight_requests gauge",
            f"torchyard_inflight_requests{{{lab}}} {int(t[_INFLIGHT])}",
            "# HELP torchyard_workers Worker processes whose counters these are (live ones).",
            "# TYPE torchyard_workers gauge",
            f"torchyard_workers{{{lab}}} {workers}",
        ]
        return "\n".join(out) + "\n"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (a dead worker its supervisor has not reaped yet) is not live
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ---- the batcher ----------------------------------------------------------------------------------


class _Item:
    __slots__ = ("body", "future", "started", "dropped")

    def __init__(self, body: Any, future: asyncio.Future[Any]) -> None:
        self.body = body
        self.future = future
        self.started = False
        self.dropped = False


class _Expired(Exception):
    """request_timeout_ms passed before the answer."""


def _expire(item: _Item) -> None:
    if not item.future.done():
        item.dropped = not item.started  # never run it if it has not started
        item.future.set_exception(_Expired())


class Batcher:
    """Queues inputs and calls the model with up to ``max_batch_size`` of them at once, in one thread.

    A batch is dispatched as soon as the thread is free and either it is full, every admitted
    request is already in it (no one else is about to join: no waiting at low load), or the oldest
    input has waited ``max_batch_delay_ms``. While a batch runs, new inputs accumulate for the next.

    The fast path: when a request is the only one admitted, nothing is queued or running, and the
    model's recent single-input calls took at most ``TORCHYARD_INLINE_MAX_MS`` (default 2 ms; 0
    turns it off), the call runs on the event loop itself — no hand-off to the inference thread
    and back (two thread wake-ups, the dominant cost left at concurrency 1). The user's code is
    still never called twice at once: the loop is blocked while it runs, so no batch can start.
    With batching on, a request first lets the loop take one turn, so requests that arrived with
    it are admitted and batched rather than answered inline one after another (which, once it
    starts under load, would keep every later request alone too).
    """

    def __init__(self, code: UserCode, metrics: Metrics, max_batch_size: int, max_batch_delay_ms: float) -> None:
        self.code = code
        self.metrics = metrics
        self.max = max(1, max_batch_size)
        self.delay = max(0.0, max_batch_delay_ms) / 1000.0
        self.queue: collections.deque[tuple[float, _Item]] = collections.deque()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="torchyard-infer")
        self.inline_max = max(0.0, float(os.environ.get("TORCHYARD_INLINE_MAX_MS", "2"))) / 1000.0
        self.single_call = float("inf")  # recent duration of a one-input call (a moving average), seconds
        self.busy = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def submit(self, body: Any) -> _Item:
        item = _Item(body, asyncio.get_running_loop().create_future())
        self.queue.append((time.monotonic(), item))
        assert self._wake is not None
        self._wake.set()
        return item

    def can_inline(self) -> bool:
        """Whether the next input may be answered on the event loop (see the class's docstring)."""
        return (self.single_call <= self.inline_max and not self.busy and not self.queue
                and self.metrics.inflight <= 1)

    def call_inline(self, body: Any) -> Any:
        self.metrics.observe_batch(1)
        return self._timed([body])[0]

    def _timed(self, bodies: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        out = self.code.call(bodies)
        if len(bodies) == 1:
            took = time.perf_counter() - t0
            self.single_call = took if self.single_call == float("inf") else 0.8 * self.single_call + 0.2 * took
        return out

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        while self.queue and len(batch) < self.max:
            _, item = self.queue.popleft()
            if not item.dropped:
                batch.append(item)
        return batch

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.max > 1 and self.delay > 0:
                oldest = self.queue[0][0]
                while len(self.queue) < self.max and self.metrics.inflight > len(self.queue):
                    left = oldest + self.delay - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except TimeoutError:
                        break
            batch = self._take()
            if not batch:
                continue
            for item in batch:
                item.started = True
            self.metrics.observe_batch(len(batch))
            bodies = [item.body for item in batch]
            self.busy = True
            try:
                results = await loop.run_in_executor(self.executor, self._timed, bodies)
            except Exception as err:  # noqa: BLE001 - the user's error goes to the caller as a 500
                traceback.print_exc(file=sys.stderr)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            finally:
                self.busy = False
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)


# ---- Open Inference Protocol (V2): JSON tensors and the binary tensor extension ----------------------

#: OIP datatypes whose binary form is a packed little-endian array (``struct`` formats)
_OIP_FORMATS = {"FP32": "f", "FP64": "d", "FP16": "e", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
                "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "BOOL": "?"}
_OIP_SHAPE = 'an OIP v2 infer request is {"id", "inputs": [{"name", "shape", "datatype", "data"}], "outputs"}'


class _OipAsk:
    """What an OIP request asks of its answer: its ``id``, binary outputs, the output's name."""

    __slots__ = ("binary", "id", "output_name")

    def __init__(self, id: str | None, binary: bool, output_name: str | None) -> None:  # noqa: A002
        self.id = id
        self.binary = binary
        self.output_name = output_name


class _Binary:
    """An OIP answer in the binary tensor extension: the JSON header's length, then header and tensors."""

    __slots__ = ("body", "header_length")

    def __init__(self, body: bytes, header_length: bytes) -> None:
        self.body = body
        self.header_length = header_length


def _header_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"inference-header-content-length":
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"Inference-Header-Content-Length must be a byte count, got {value!r}") from None
    return None


def _unpack(datatype: Any, raw: bytes | memoryview) -> list[Any]:
    """A binary input tensor's elements, flat (as JSON ``data`` carries them)."""
    if datatype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        out: list[Any] = []
        pos, end = 0, len(raw)
        while pos < end:
            if pos + 4 > end:
                raise ValueError("a BYTES input's binary data ends inside an element's length")
            size = int.from_bytes(raw[pos:pos + 4], "little")
            pos += 4
            if pos + size > end:
                raise ValueError("a BYTES input's binary data ends inside an element")
            item = bytes(raw[pos:pos + size])
            pos += size
            try:
                out.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(item)
        return out
    fmt = _OIP_FORMATS.get(datatype) if isinstance(datatype, str) else None
    if fmt is None:
        raise ValueError(f"binary input datatype {datatype!r} is not supported; "
                         f"supported: {', '.join([*_OIP_FORMATS, 'BYTES'])}")
    width = struct.calcsize(fmt)
    if len(raw) % width:
        raise ValueError(f"a {datatype} input's binary data is {len(raw)} bytes, not a multiple of {width}")
    return list(struct.unpack(f"<{len(raw) // width}{fmt}", raw))


def _pack(datatype: str, flat: list[Any]) -> bytes:
    if datatype == "FP32":
        return struct.pack(f"<{len(flat)}f", *flat)
    parts = []
    for item in flat:
        data = item if isinstance(item, bytes) else item.encode() if isinstance(item, str) else _json_encode(item)
        parts.append(len(data).to_bytes(4, "little") + data)
    return b"".join(parts)


def _decode_oip(raw: bytes, scope: Scope) -> tuple[Any, _OipAsk]:
    """An OIP infer request's input data (one input: its data; several: by name) and what it asks of
    the answer. With ``Inference-Header-Content-Length`` the body is that many bytes of JSON, then
    each binary input's bytes (``parameters.binary_data_size``) in order."""
    header = _header_length(scope)
    tail: memoryview | None = None
    if header is not None:
        if not 0 < header <= len(raw):
            raise ValueError(f"Inference-Header-Content-Length {header} is outside the body ({len(raw)} bytes)")
        tail = memoryview(raw)[header:]
        raw = raw[:header]
    try:
        doc = _json_decode(raw)
    except msgspec.DecodeError as err:
        raise ValueError(f"the request's JSON is not valid: {err}") from None
    inputs = doc.get("inputs") if type(doc) is dict else None
    if type(inputs) is not list or not inputs:
        raise ValueError(_OIP_SHAPE)
    values = []
    offset = 0
    for entry in inputs:
        if type(entry) is not dict:
            raise ValueError(_OIP_SHAPE)
        params = entry.get("parameters")
        size = params.get("binary_data_size") if type(params) is dict else None
        if size is not None:
            if tail is None:
                raise ValueError("an input has binary_data_size but the request has no Inference-Header-Content-Length")
            if type(size) is not int or size < 0 or offset + size > len(tail):
                raise ValueError(f"input {entry.get('name')!r}: binary_data_size {size!r} is past the body's end")
            values.append(_unpack(entry.get("datatype"), tail[offset:offset + size]))
            offset += size
        elif "data" in entry:
            values.append(entry["data"])
        else:
            raise ValueError("every input needs 'data' or binary data (parameters.binary_data_size)")
    if tail is not None and offset != len(tail):
        raise ValueError(f"the body has {len(tail) - offset} bytes after the inputs' binary data")
    rid = doc.get("id")
    if rid is not None and type(rid) is not str:
        raise ValueError("the request's id must be a string")
    params = doc.get("parameters")
    binary = type(params) is dict and params.get("binary_data_output") is True
    name = None
    outputs = doc.get("outputs")
    if type(outputs) is list and outputs and type(outputs[0]) is dict:
        first = outputs[0]
        name = first.get("name") if type(first.get("name")) is str else None
        oparams = first.get("parameters")
        if type(oparams) is dict and "binary_data" in oparams:
            binary = oparams["binary_data"] is True
    body = values[0] if len(values) == 1 else {str(e.get("name", i)): v for i, (e, v) in enumerate(
        zip(inputs, values, strict=True))}
    return body, _OipAsk(rid, binary, name)


# ---- the ASGI app ---------------------------------------------------------------------------------


def _headers(request_id: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None,
             length: int | None = None) -> list[tuple[bytes, bytes]]:
    """A response's headers; with ``length`` a Content-Length (the body is known before the start:
    no chunked framing for the server to write or the client to parse)."""
    out = [(b"content-type", content_type), (b"x-request-id", request_id)]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    if extra:
        out += extra
    return out


class ScoringApp:
    """The ASGI application of one worker."""

    def __init__(self, spec: dict[str, Any], worker_label: str, keys_path: str | None,
                 metrics_dir: str | None = None) -> None:
        self.spec = spec
        cfg = spec["config"]
        self.model_name: str = spec.get("service_name", "model")
        self.models: list[dict[str, Any]] = spec.get("models", [])
        self.max_concurrent = int(cfg.get("max_concurrent_requests", 256))
        self.timeout = float(cfg.get("request_timeout_ms", 5000)) / 1000.0
        self.max_body = int(cfg.get("max_request_bytes") or DEFAULT_MAX_REQUEST_BYTES)
        if metrics_dir is not None:  # every worker's counters, summed: the service's
            labels = 'service="{}"'.format(self.model_name.replace("\\", "\\\\").replace('"', '\\"'))
        else:
            labels = f'worker="{worker_label}"'
        self.metrics = Metrics(labels, int(cfg.get("max_batch_size", 1)), metrics_dir, worker_label)
        self.code = UserCode(spec["entry_path"], spec["model_dir"])
        self.batcher = Batcher(self.code, self.metrics, int(cfg.get("max_batch_size", 1)),
                               float(cfg.get("max_batch_delay_ms", 2)))
        self.ready = False
        self.draining = False
        self.keys_path = keys_path if cfg.get("auth_enabled") else None
        self._keys: tuple[bytes, ...] = ()
        self._keys_stamp: tuple[int, int] | None = None
        self._started = False
        self._lock = threading.Lock()

    # ---- life -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the user's code in the inference thread; raises what it raised."""
        self.batcher.executor.submit(self.code.load).result()
        self.ready = True

    async def load_async(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.batcher.executor, self.code.load)
        self.ready = True

    # ---- auth -----------------------------------------------------------------------------------

    def _authorized(self, scope: Scope) -> bool:
        if self.keys_path is None:
            return True
        try:
            st = os.stat(self.keys_path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            return False
        if stamp != self._keys_stamp:
            try:
                with open(self.keys_path, "rb") as fh:
                    doc = json.loads(fh.read())
                self._keys = tuple(str(doc[k]).encode() for k in ("primary", "secondary") if doc.get(k))
                self._keys_stamp = stamp
            except (OSError, ValueError, KeyError):
                return False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                token = token.strip()
                return any(hmac.compare_digest(token, k) for k in self._keys)
        return False

    # ---- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if not self._started:
            self._started = True
            self.batcher.start()
        path = scope["path"]
        method = scope["method"]
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value[:200]
                break
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
        extra = [(b"connection", b"close")] if self.draining else None
        if method == "POST" and path == "/score":
            await self._score(scope, receive, send, request_id, extra, oip=False)
        elif method == "POST" and path.startswith("/v2/models/") and path.endswith("/infer"):
            name = path[len("/v2/models/"):-len("/infer")].split("/versions/")[0]
            if name != self.model_name:
                await self._plain(send, 404, {"error": f"no model {name!r}; this service serves {self.model_name!r}"},
                                  request_id, extra)
            elif self.code.mode != "typed":
                await self._plain(send, 404, {"error": "infer is served for the typed API (a class with load/predict)"},
                                  request_id, extra)
            else:
                await self._score(scope, receive, send, request_id, extra, oip=True)
        elif method in ("GET", "HEAD"):
            await self._get(scope, path, send, request_id, extra)
        else:
            await self._plain(send, 405 if path in ("/score", "/") else 404, {"error": f"no route {method} {path}"},
                              request_id, extra)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.batcher.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _plain(self, send: Send, status: int, doc: Any, request_id: bytes,
                     extra: list[tuple[bytes, bytes]] | None, content_type: bytes = b"application/json") -> None:
        body = doc if isinstance(doc, bytes) else _json_encode(doc)
        await send({"type": "http.response.start", "status": status,
                    "headers": _headers(request_id, content_type, extra, len(body))})
        await send({"type": "http.response.body", "body": body})

    async def _score(self, scope: Scope, receive: Receive, send: Send, request_id: bytes,
                     extra: list[tuple[bytes, bytes]] | None, oip: bool) -> None:
        t0 = time.perf_counter()
        metrics = self.metrics
        if not self._authorized(scope):
            metrics.observe(401, time.perf_counter() - t0)
            await self._plain(send, 401, {"error": "a valid key is needed: Authorization: Bearer KEY"}, request_id,
                              [*(extra or []), (b"www-authenticate", b"Bearer")])
            return
        if not self.ready:
            metrics.observe(503, time.perf_counter() - t0)
            await self._plain(send, 503, {"error": "the service is starting"}, request_id,
                              [*(extra or []), (b"retry-after", b"1")])
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._too_large(send, request_id, extra, t0)
            return
        if metrics.inflight >= self.max_concurrent:
            metrics.observe(429, time.perf_counter() - t0)
            await self._plain(send, 429, {"error": f"too many requests: {self.max_concurrent} are in progress"},
                              request_id, [*(extra or []), (b"retry-after", b"1")])
            return
        metrics.inflight += 1
        inflight_taken = True
        try:
            chunks = []
            more = True
            size = 0
            while more:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:  # a chunked body, or one longer than it said
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            if size > self.max_body:
                metrics.inflight -= 1
                inflight_taken = False
                await self._too_large(send, request_id, extra, t0)
                return
            raw = b"".join(chunks) if len(chunks) != 1 else chunks[0]
            status = 200
            oip_ask: _OipAsk | None = None
            try:
                if oip:
                    body, oip_ask = _decode_oip(raw, scope)
                else:
                    body = self._decode(raw)
            except ValueError as err:
                status, payload = 400, {"error": str(err)}
            if status == 200 and self.batcher.max > 1 and self.batcher.can_inline():
                # one turn of the loop first: requests that arrived with this one are admitted (and
                # then batched together) instead of each being answered alone while the loop waits
                await asyncio.sleep(0)
            if status == 200 and self.batcher.can_inline():
                started = time.perf_counter()
                try:
                    payload = self._encode_result(self.batcher.call_inline(body), oip_ask, request_id)
                except Exception as err:  # noqa: BLE001 - the user's code raised
                    traceback.print_exc(file=sys.stderr)
                    status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
                if time.perf_counter() - started > self.timeout:
                    status, payload = 504, {"error": f"no answer within request_timeout_ms ({self.timeout * 1000:.0f})"}
            elif status == 200:
                item = self.batcher.submit(body)
                timer = asyncio.get_running_loop().call_later(self.timeout, _expire, item)
                try:
                    result = await item.future
                    payload = self._encode_result(result, oip_ask, request_id)
                except _Expired:
                    status, payload = 504, {"error": f"no answer within request_timeout_ms ({self.timeout * 1000:.0f})"}
                except Exception as err:  # noqa: BLE001 - the user's code raised
                    status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
                finally:
                    timer.cancel()
            content_type = b"application/json"
            try:
                if type(payload) is _Binary:  # OIP's binary tensor extension: a JSON header, then the bytes
                    data, content_type = payload.body, b"application/octet-stream"
                    extra = [*(extra or []), (b"inference-header-content-length", payload.header_length)]
                else:
                    data = _json_encode(payload)
            except (TypeError, msgspec.EncodeError) as err:
                status, data = 500, _json_encode({"error": f"the result is not JSON-able: {err}"})
        finally:
            if inflight_taken:
                metrics.inflight -= 1
        await send({"type": "http.response.start", "status": status,
                    "headers": _headers(request_id, content_type, extra, len(data))})
        await send({"type": "http.response.body", "body": data})
        metrics.observe(status, time.perf_counter() - t0)

    async def _too_large(self, send: Send, request_id: bytes, extra: list[tuple[bytes, bytes]] | None,
                         t0: float) -> None:
        """413, and the connection closes (the rest of the body is never read)."""
        self.metrics.observe(413, time.perf_counter() - t0)
        await self._plain(send, 413, {"error": f"the request body is larger than max_request_bytes ({self.max_body})"},
                          request_id, [*(x for x in (extra or []) if x[0] != b"connection"), (b"connection", b"close")])

    def _decode(self, raw: bytes) -> Any:
        if self.code.mode == "azure":
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("the request body is not UTF-8") from None
        try:
            return _json_decode(raw)
        except msgspec.DecodeError as err:
            raise ValueError(f"the request body is not JSON: {err}") from None

    def _encode_result(self, result: Any, oip: _OipAsk | None, request_id: bytes) -> Any:
        """``/score``: the result as it is. OIP: one output tensor (FP32 for numbers, else BYTES),
        named as the request's first requested output (else ``output-0``), with the request's ``id``
        (else the request id); binary (:class:`_Binary`) when the request asked for it."""
        if oip is None:
            return result
        data = result if isinstance(result, list) else [result]
        flat = data
        shape = [len(data)]
        if data and isinstance(data[0], list):
            shape = [len(data), len(data[0])]
            flat = [v for row in data for v in row]
        dtype = "FP32" if all(isinstance(v, float | int) and not isinstance(v, bool) for v in flat) else "BYTES"
        output: dict[str, Any] = {"name": oip.output_name or "output-0", "shape": shape, "datatype": dtype}
        doc = {"model_name": self.model_name, "id": oip.id if oip.id is not None else request_id.decode(),
               "outputs": [output]}
        if not oip.binary:
            output["data"] = flat
            return doc
        packed = _pack(dtype, flat)
        output["parameters"] = {"binary_data_size": len(packed)}
        head = _json_encode(doc)
        return _Binary(head + packed, str(len(head)).encode())

    async def _get(self, scope: Scope, path: str, send: Send, request_id: bytes,
                   extra: list[tuple[bytes, bytes]] | None) -> None:
        from starlette.responses import JSONResponse, PlainTextResponse  # noqa: PLC0415

        headers = {"x-request-id": request_id.decode()}
        if extra:
            headers["connection"] = "close"
        response: Any
        if path == "/":
            response = PlainTextResponse("Healthy" if self.ready else "Starting", 200 if self.ready else 503,
                                         headers=headers)
        elif path == "/v2/health/live":
            response = JSONResponse({"live": True}, headers=headers)
        elif path == "/v2/health/ready":
            response = JSONResponse({"ready": self.ready}, 200 if self.ready else 503, headers=headers)
        elif path == "/v2":
            response = JSONResponse({"name": "torchyard", "version": "0.1.0", "extensions": []}, headers=headers)
        elif path.startswith("/v2/models/"):
            rest = path[len("/v2/models/"):].rstrip("/")
            name, _, tail = rest.partition("/")
            if name != self.model_name:
                response = JSONResponse({"error": f"no model {name!r}; this service serves {self.model_name!r}"}, 404,
                                        headers=headers)
            elif tail in ("", "ready") or tail.startswith("versions/"):
                if tail == "ready":
                    response = JSONResponse({"name": name, "ready": self.ready}, 200 if self.ready else 503,
                                            headers=headers)
                else:
                    response = JSONResponse(self._metadata(), headers=headers)
            else:
                response = JSONResponse({"error": f"no route GET {path}"}, 404, headers=headers)
        elif path == "/swagger.json":
            response = JSONResponse(self._swagger(scope), headers=headers)
        elif path == "/metrics":
            if not self._authorized(scope):
                response = JSONResponse({"error": "a valid key is needed: Authorization: Bearer KEY"}, 401,
                                        headers=headers)
            else:
                response = PlainTextResponse(self.metrics.render(), headers=headers,
                                             media_type="text/plain; version=0.0.4")
        else:
            response = JSONResponse({"error": f"no route GET {path}"}, 404, headers=headers)
        await response(scope, _no_receive, send)

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "versions": [m["id"] for m in self.models],
            "platform": "torchyard",
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1]}] if self.code.mode == "typed" else [],
            "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1]}] if self.code.mode == "typed" else [],
        }

    def _swagger(self, scope: Scope) -> dict[str, Any]:
        def schema(example: Any) -> dict[str, Any]:
            if example is None:
                return {"type": "object"}
            kind = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
            return {"type": kind.get(type(example), "object"), "example": example}

        auth = bool(self.keys_path)
        return {
            "swagger": "2.0",
            "info": {"title": self.model_name, "description": "torchyard scoring service", "version": "1.0"},
            "schemes": ["http"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            **({"securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                                   "description": "Bearer KEY"}}} if auth else {}),
            "paths": {
                "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {"200": {"description": "Healthy"}}}},
                "/score": {
                    "post": {
                        "operationId": "RunMLService",
                        **({"security": [{"Bearer": []}]} if auth else {}),
                        "parameters": [{"name": "serviceInputPayload", "in": "body", "required": True,
                                        "schema": schema(self.code.input_example)}],
                        "responses": {
                            "200": {"description": "Success", "schema": schema(self.code.output_example)},
                            "400": {"description": "Bad request"},
                            "429": {"description": "Too many requests"},
                            "500": {"description": "The scoring code raised"},
                            "503": {"description": "Starting"},
                            "504": {"description": "Timed out"},
                        },
                    }
                },
            },
        }


def _content_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None (absent, or not a number: the body is counted as read)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _no_receive() -> dict[str, Any]:  # pragma: no cover - responses never read the body
    return {"type": "http.disconnect"}
