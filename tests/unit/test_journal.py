import os

from torchyard.tracking import journal as j


def test_frames_round_trip_and_partial_tail_is_ignored(tmp_path):
    path = tmp_path / "rank_0.journal"
    first = [(j.SCALAR, "loss", 0.5, 1, 1.0), (j.STRING, "s", "x", None, 2.0)]
    second = [(j.LIST, "l", [1, 2], None, 3.0)]
    frame2 = j.encode_frame(*j.pack(second))
    with open(path, "wb") as fh:
        fh.write(j.encode_frame(*j.pack(first)))
        fh.write(frame2[:-3])  # a writer killed mid-frame
    reader = j.JournalReader(str(path))
    assert reader.read_new() == ([["loss", [0.5], [1], [1.0]]], [list(first[1])])
    assert reader.read_new() == ([], [])
    with open(path, "ab") as fh:
        fh.write(frame2[-3:])
    assert reader.read_new() == ([], [list(r) for r in second])


def test_missing_journal_reads_empty(tmp_path):
    assert j.JournalReader(os.path.join(tmp_path, "nope")).read_new() == ([], [])
