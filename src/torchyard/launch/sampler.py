"""The launcher's system sampler: the node's CPU, memory, disk and network I/O (psutil) and each GPU's
utilisation, memory, power and temperature (nvidia-ml-py, when installed and a GPU is present),
every ``TORCHYARD_SYSTEM_METRICS_SECONDS`` (default 5; 0 turns it off), as ``system/...`` scalar series.

A thread of the launcher writes them into the run's journal folder as ``system/rank_N.journal`` (a
subfolder, so that its writes never count as a rank's activity for ``hang_timeout_seconds``), where N
is the node's first rank (``node_rank * process_count_per_node``): the supervisor's ingest
stores them under that rank, so node 0's are in ``run.get_metrics()`` (rank 0) beside rank 0's own
metrics, and node K's in ``run.get_metrics(rank=K * process_count_per_node)``. The first sample is
taken one interval after the node starts (a run shorter than that has none).

Series (rates are averaged over the interval since the previous sample):
``system/cpu_percent``, ``system/memory_percent``, ``system/memory_used_gb``,
``system/disk_read_mb_s``, ``system/disk_write_mb_s``, ``system/net_recv_mb_s``, ``system/net_sent_mb_s``,
and per GPU i (NVML's index): ``system/gpu_i/utilization_percent``, ``system/gpu_i/memory_percent``,
``system/gpu_i/memory_used_gb``, ``system/gpu_i/power_w``, ``system/gpu_i/temperature_c``.

Imports psutil (and pynvml) only in its thread: the launcher itself stays stdlib + msgspec.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

#: the variable (in the job's environment_variables or the launcher's environment) that sets the interval
ENV = "TORCHYARD_SYSTEM_METRICS_SECONDS"
DEFAULT_SECONDS = 5.0
_MB = 1024.0 * 1024.0
_GB = _MB * 1024.0
_HEADER = struct.Struct("<I")


def encode_frame(series: list[Any]) -> bytes:
    """One journal frame of scalar ``series`` (torchyard.tracking.journal's format: a 4-byte length,
    then msgpack ``[series, records]``; written here because in-job code imports no other layer)."""
    payload = msgspec.msgpack.encode([series, []])
    return _HEADER.pack(len(payload)) + payload


def interval(user_env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> float:
    """Seconds between samples: the job's ``TORCHYARD_SYSTEM_METRICS_SECONDS``, else the launcher's,
    else :data:`DEFAULT_SECONDS`; 0 (or a value that is not a number) turns sampling off."""
    env = os.environ if environ is None else environ
    raw = user_env.get(ENV, env.get(ENV))
    if raw is None or raw == "":
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        return 0.0
    return seconds if seconds > 0 else 0.0


def journal_path(journal_dir: str, first_rank: int) -> str:
    """The system journal of the node whose first rank is ``first_rank``: ``system/rank_N.journal``."""
    return os.path.join(journal_dir, "system", f"rank_{first_rank}.journal")


class SystemSampler:
    """Samples this machine into ``path`` (a journal) every ``seconds`` until stopped."""

    def __init__(self, path: str, seconds: float, gpus: Sequence[str] | None = None) -> None:
        self.path = path
        self.seconds = seconds
        self.gpus = list(gpus) if gpus else None  # the node's devices (ids); None: every device NVML sees
        self._last: tuple[float, Any, Any] | None = None
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        #: seconds the last sample took (the sampler's own cost)
        self.cost = 0.0

    def _start_gpus(self) -> None:
        if importlib.util.find_spec("pynvml") is None:
            return
        try:
            import pynvml  # noqa: PLC0415

            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
            wanted = [int(g) for g in self.gpus if g.isdigit()] if self.gpus else list(range(count))
            self._handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in wanted if i < count]
            self._nvml = pynvml
        except Exception:  # noqa: BLE001  (no driver, no device: CPU metrics only)
            self._handles, self._nvml = [], None

    def sample(self) -> dict[str, float]:
        """One sample: ``{"system/...": value}`` (rates since the previous call; none on the first)."""
        import psutil  # noqa: PLC0415

        began = time.perf_counter()
        now = time.time()
        out: dict[str, float] = {"system/cpu_percent": float(psutil.cpu_percent(None))}
        mem = psutil.virtual_memory()
        out["system/memory_percent"] = float(mem.percent)
        out["system/memory_used_gb"] = (mem.total - mem.available) / _GB
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        if self._last is not None:
            then, disk0, net0 = self._last
            span = max(now - then, 1e-6)
            if disk is not None and disk0 is not None:
                out["system/disk_read_mb_s"] = (disk.read_bytes - disk0.read_bytes) / _MB / span
                out["system/disk_write_mb_s"] = (disk.write_bytes - disk0.write_bytes) / _MB / span
            if net is not None and net0 is not None:
                out["system/net_recv_mb_s"] = (net.bytes_recv - net0.bytes_recv) / _MB / span
                out["system/net_sent_mb_s"] = (net.bytes_sent - net0.bytes_sent) / _MB / span
        self._last = (now, disk, net)
        nvml = self._nvml
        for index, handle in self._handles:
            key = f"system/gpu_{index}/"
            for name, read in (
                ("utilization_percent", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                ("memory_percent", lambda h: 100.0 * (m := nvml.nvmlDeviceGetMemoryInfo(h)).used / max(m.total, 1)),
                ("memory_used_gb", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used / _GB),
                ("power_w", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
                ("temperature_c", lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            ):
                try:
                    out[key + name] = float(read(handle))
                except Exception:  # noqa: BLE001, PERF203  (a device without that sensor)
                    continue
        self.cost = time.perf_counter() - began
        return out

    def _write(self, values: Mapping[str, float], ts: float) -> None:
        frame = encode_frame([[name, [value], [None], [ts]] for name, value in values.items()])
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, frame)  # one write per frame: a reader sees whole frames only
        finally:
            os.close(fd)

    def run(self, stop: threading.Event) -> None:
        """Sample every ``seconds`` until ``stop`` is set (a thread's target; never raises)."""
        try:
            import psutil  # noqa: PLC0415

            psutil.cpu_percent(None)  # the first call only starts psutil's CPU clock
            self.sample()  # the baseline of the rates, not written
            self._start_gpus()
            while not stop.wait(self.seconds):
                self._write(self.sample(), time.time())
        except Exception as err:  # noqa: BLE001  (metrics are never a reason to disturb the ranks)
            print(f"torchyard launcher: system metrics stopped: {err}", flush=True)
        finally:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # noqa: BLE001
                    pass


def start(journal_dir: str, first_rank: int, seconds: float, gpus: Sequence[str] | None,
          stop: threading.Event) -> threading.Thread | None:
    """Start a sampler thread writing :func:`journal_path`; None when sampling is off."""
    if seconds <= 0:
        return None
    path = journal_path(journal_dir, first_rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sampler = SystemSampler(path, seconds, gpus)
    thread = threading.Thread(target=sampler.run, args=(stop,), daemon=True, name="system-metrics")
    thread.start()
    return thread
