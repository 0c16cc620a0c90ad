"""The mirror channel's frames applied with no state between them (the team server's side of
nodes reporting over HTTP): only mirrored files and the node's own report, idempotent re-sends,
no gap filled, and a pusher that restarts resumes from what the folder holds."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from torchyard.compute.mirror import apply_at, frame_path, held, scan
from torchyard.paths import RunPaths


@pytest.mark.parametrize("rel", [
    "logs/rank_0.txt", "logs/tensorboard/rank_1/events.out", ".torchyard-run/journal/rank_3.journal",
    ".torchyard-run/exit/rank_0.json", ".torchyard-run/launcher_node_2.json",
])
def test_a_node_may_write_its_mirrored_files(rel: str) -> None:
    assert frame_path(2, rel) == rel


@pytest.mark.parametrize("rel", [
    "", "/etc/passwd", "../x", "logs/../../x", "logs/./rank_0.txt", "logs", "outputs/model.pt", "run.json",
    ".torchyard-run/launcher_node_1.json", ".torchyard-run/run_info.json", "logs\\rank_0.txt", "logs/a\x00b",
    ".torchyard-run/journal/../../code.py",
])
def test_anything_else_is_refused(rel: str) -> None:
    assert frame_path(2, rel) is None


def test_frames_apply_at_their_offsets_and_resume(tmp_path) -> None:
    node, run = tmp_path / "node", tmp_path / "run"
    log = node / "logs" / "rank_0.txt"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"hello ")
    report = node / ".torchyard-run" / "launcher_node_0.json"
    report.parent.mkdir(parents=True)
    report.write_text('{"reason": "running"}')
    first = scan(str(node), {})
    have = apply_at(str(run), 0, first)
    assert have == {"logs/rank_0.txt": 6, ".torchyard-run/launcher_node_0.json": zlib.crc32(report.read_bytes())}
    assert apply_at(str(run), 0, first) == have  # a re-send changes nothing
    with open(log, "ab") as fh:
        fh.write(b"world\n")
    report.write_text('{"reason": "completed"}')
    have.update(apply_at(str(run), 0, scan(str(node), have)))
    assert (run / "logs" / "rank_0.txt").read_bytes() == b"hello world\n"
    assert RunPaths(str(run)).node_report(0).endswith("launcher_node_0.json")
    assert Path(RunPaths(str(run)).node_report(0)).read_text() == '{"reason": "completed"}'
    assert held(str(run), 0) == have  # a restarted pusher asks, and has nothing to send
    assert scan(str(node), held(str(run), 0)) == {}
    gap = apply_at(str(run), 0, {"logs/rank_0.txt": [100, b"late"]})  # past the end: not written
    assert gap == {"logs/rank_0.txt": 12} and os.path.getsize(run / "logs" / "rank_0.txt") == 12
    with pytest.raises(ValueError, match="may not write"):
        apply_at(str(run), 0, {"../escape.txt": [0, b"x"]})
    assert not (tmp_path / "escape.txt").exists()
