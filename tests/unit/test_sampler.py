"""The launcher's system sampler (torchyard.launch.sampler): its interval, one sample, its journal."""

from __future__ import annotations

import threading
import time

from torchyard.launch import sampler
from torchyard.tracking.journal import JournalReader


def test_interval_from_the_job_then_the_launcher_then_the_default() -> None:
    assert sampler.interval({}, {}) == sampler.DEFAULT_SECONDS == 5.0
    assert sampler.interval({}, {sampler.ENV: "2"}) == 2.0
    assert sampler.interval({sampler.ENV: "0.5"}, {sampler.ENV: "2"}) == 0.5
    assert sampler.interval({sampler.ENV: "0"}, {}) == 0.0  # off
    assert sampler.interval({sampler.ENV: "-1"}, {}) == 0.0
    assert sampler.interval({sampler.ENV: "soon"}, {}) == 0.0


def test_a_sample_is_cheap_and_has_cpu_memory_disk_and_network() -> None:
    s = sampler.SystemSampler("/dev/null", 1.0)
    first = s.sample()
    assert {"system/cpu_percent", "system/memory_percent", "system/memory_used_gb"} <= set(first)
    time.sleep(0.05)
    second = s.sample()
    assert {"system/net_recv_mb_s", "system/net_sent_mb_s"} <= set(second)  # rates from the second sample on
    assert 0.0 <= second["system/cpu_percent"] <= 100.0 * 1024
    assert s.cost < 0.05, f"a sample took {s.cost * 1000:.1f} ms"


def test_the_thread_writes_whole_frames_until_stopped(tmp_path) -> None:
    stop = threading.Event()
    thread = sampler.start(str(tmp_path), 2, 0.05, None, stop)
    assert thread is not None
    time.sleep(0.4)
    stop.set()
    thread.join(5)
    path = sampler.journal_path(str(tmp_path), 2)
    assert path == str(tmp_path / "system" / "rank_2.journal")
    series, records = JournalReader(path).read_new()
    cpu = [s for s in series if s[0] == "system/cpu_percent"]
    assert len(cpu) >= 3 and records == []
    assert sampler.start(str(tmp_path), 0, 0.0, None, stop) is None  # 0: off


def test_its_frames_are_the_journal_format() -> None:
    from torchyard.tracking.journal import encode_frame

    series = [["system/cpu_percent", [1.5], [None], [2.0]]]
    assert sampler.encode_frame(series) == encode_frame(series, [])
