"""Per-rank journal files: the truth about what a script logged until the store has it.

A journal is a sequence of frames, each a 4-byte little-endian length followed by a msgpack array of
two parts: ``[series, records]``. ``series`` packs scalar metrics column-wise, one entry per name:
``[name, [values], [steps], [wall times]]``; ``records`` holds everything else as
``[kind, name, value, step, ts]``. A frame is written with one ``write()``; a reader takes only
complete frames, so a script killed mid-write loses at most the frame being written.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec

_HEADER = struct.Struct("<I")

# record kinds; 0-5 are metric kinds stored in the metrics table
SCALAR, LIST, ROW, TABLE, IMAGE, STRING = 0, 1, 2, 3, 4, 5
TAG, PROPERTY, ALERT = 10, 11, 12

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode_frame(series: list[Any], records: list[Any]) -> bytes:
    payload = _encoder.encode([series, records])
    return _HEADER.pack(len(payload)) + payload


def pack(records: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    """Split logged records into column-wise scalar series and the rest."""
    columns: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
    other = []
    for rec in records:
        if rec[0] == SCALAR:
            col = columns.get(rec[1])
            if col is None:
                col = columns[rec[1]] = ([], [], [])
            col[0].append(rec[2])
            col[1].append(rec[3])
            col[2].append(rec[4])
        else:
            other.append(rec)
    return [[name, v, s, t] for name, (v, s, t) in columns.items()], other


class JournalReader:
    """Reads the complete frames appended to a journal since the last call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0

    def read_new(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(series, records) appended since the last call, merged across frames in order."""
        series, records, end = self.peek()
        self.offset = end
        return series, records

    def peek(self) -> tuple[list[list[Any]], list[list[Any]], int]:
        """(series, records, end offset) of the complete frames after the current offset, without
        moving it: a caller moves it (``reader.offset = end``) once what it read is safe elsewhere."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return [], [], self.offset
        series: list[list[Any]] = []
        records: list[list[Any]] = []
        pos = 0
        end = len(data)
        while pos + 4 <= end:
            (length,) = _HEADER.unpack_from(data, pos)
            if pos + 4 + length > end:
                break
            frame_series, frame_records = _decoder.decode(data[pos + 4 : pos + 4 + length])
            series.extend(frame_series)
            records.extend(frame_records)
            pos += 4 + length
        return series, records, self.offset + pos


def journal_path(journal_dir: str, rank: int) -> str:
    return os.path.join(journal_dir, f"rank_{rank}.journal")
