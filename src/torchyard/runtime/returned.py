"""Did everything a run's nodes wrote come back? Each node's launcher reports how many bytes each of
its ranks wrote to its metric journal and its output log (``returned`` in the node report); once the
target brought the nodes' files back (``Handle.sync``/``collect``), the supervisor compares them with
what the run's folder holds. A run whose results did not all come back is never a silent success:
what is missing is named in the run's ``warnings`` (details, SDK, CLI, execution summary)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from torchyard.paths import RunPaths


def missing(paths: RunPaths, nodes: Iterable[Mapping[str, Any]], node_count: int,
            every_node_reports: bool = True) -> list[str]:
    """One line per thing that did not come back, naming it and what it means; empty when all did."""
    out: list[str] = []
    seen: set[int] = set()
    for node in nodes:
        try:
            seen.add(int(node["node_rank"]))
        except (KeyError, TypeError, ValueError):
            continue
        returned = node.get("returned") or {}
        for key, what, path_of in (("journals", "metric journal", lambda r: os.path.join(paths.journal, f"rank_{r}.journal")),
                                   ("logs", "output log", paths.rank_log)):
            for rank, size in sorted((returned.get(key) or {}).items(), key=lambda kv: int(kv[0])):
                try:
                    have = os.path.getsize(path_of(int(rank)))
                except OSError:
                    have = 0
                if have < int(size):
                    lost = "some of its metrics are not in the store" if key == "journals" else "its output is cut short"
                    out.append(f"rank {rank}'s {what} came back incomplete ({have:,} of {int(size):,} bytes): {lost}")
    if every_node_reports:
        for k in range(node_count):
            if k not in seen:
                out.append(f"node {k}'s launcher report did not come back: its ranks' logs, metrics and outputs "
                           "may be incomplete (the target's return channel broke)")
    return out
