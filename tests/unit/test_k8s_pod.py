"""The pod side of the Kubernetes target (compute/k8s_pod.py): the code's packing and unpacking,
mirror frames as log lines, and the supervisor side applying them (also when a stream is read again
from its start)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from pathlib import Path

from torchyard.compute import k8s_manifests as m
from torchyard.compute.k8s_pod import END, FRAME, Sender, decode, encode, unpack_code
from torchyard.compute.kubernetes import new_only, pack_code
from torchyard.compute.mirror import Mirror


def test_frames_round_trip_as_one_text_line() -> None:
    frame = {"logs/rank_0.txt": [0, b"hello\n"], ".torchyard-run/launcher_node_0.json": [-1, b"{}"]}
    line = encode(frame)
    assert "\n" not in line and decode(line) == frame


def test_code_is_packed_chunked_and_unpacked_without_logs_or_outputs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "pkg").mkdir(parents=True)
    (run / "train.py").write_text("print('hi')\n")
    (run / "pkg" / "data.bin").write_bytes(os.urandom(1_500_000))
    (run / "logs").mkdir()
    (run / "logs" / "supervisor.txt").write_text("not code\n")
    parts = m.chunks(pack_code(str(run)))
    assert len(parts) == 2
    code = tmp_path / "code"
    for i, part in enumerate(parts):  # as the ConfigMap volumes are mounted: <code>/<i>/part-NNN
        (code / str(i)).mkdir(parents=True)
        (code / str(i) / f"part-{i:03d}").write_bytes(part)
    work = tmp_path / "work"
    unpack_code(str(code), str(work))
    assert (work / "train.py").read_text() == "print('hi')\n"
    assert (work / "pkg" / "data.bin").read_bytes() == (run / "pkg" / "data.bin").read_bytes()
    assert not (work / "logs").exists()


def _lines(sender: Sender, step) -> list[str]:
    out = io.StringIO()
    with redirect_stdout(out):
        step(sender)
    return out.getvalue().splitlines()


def test_frames_rebuild_the_node_folder_even_when_read_twice(tmp_path: Path) -> None:
    node = tmp_path / "node"
    (node / "logs").mkdir(parents=True)
    (node / "outputs").mkdir()
    sender = Sender(str(node))
    log = node / "logs" / "rank_1.txt"
    log.write_text("one\n")
    lines = _lines(sender, Sender.tick)
    with open(log, "a") as fh:
        fh.write("two\n" + "x" * 300_000 + "\n")  # more than one line's budget
    lines += _lines(sender, Sender.drain)
    (node / "outputs" / "model.pt").write_bytes(os.urandom(600_000))
    lines += _lines(sender, Sender.send_results)
    lines.append(f"{END} 0")
    assert all(line.startswith(FRAME + " ") for line in lines[:-1]) and len(lines) >= 5
    local = tmp_path / "local"
    mirror = Mirror(str(local), 2)
    for replay in (lines, lines[:3], lines):  # the whole stream, a broken re-read, the whole again
        for line in replay:
            if line.startswith(FRAME + " "):
                mirror.apply(1, new_only(mirror.offsets[1], decode(line[len(FRAME) + 1:])))
        assert (local / "logs" / "rank_1.txt").read_bytes() == log.read_bytes()
    assert (local / "outputs" / "model.pt").read_bytes() == (node / "outputs" / "model.pt").read_bytes()


def test_new_only_trims_overlaps() -> None:
    have = {"logs/a.txt": 5}
    assert new_only(have, {"logs/a.txt": [0, b"hello"]}) == {}
    assert new_only(have, {"logs/a.txt": [3, b"lo world"]}) == {"logs/a.txt": [5, b" world"]}
    assert new_only(have, {"logs/b.txt": [0, b""], "r.json": [-1, b"{}"]}) == {"logs/b.txt": [0, b""], "r.json": [-1, b"{}"]}
