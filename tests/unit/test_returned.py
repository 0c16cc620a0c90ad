"""runtime.returned: what did not come back from a run's nodes, from the launchers' reports."""

from __future__ import annotations

from pathlib import Path

from torchyard.paths import RunPaths
from torchyard.runtime.returned import missing


def test_short_journals_and_logs_and_missing_reports_are_named(tmp_path: Path) -> None:
    paths = RunPaths(str(tmp_path))
    Path(paths.journal).mkdir(parents=True)
    Path(paths.logs).mkdir()
    Path(paths.journal, "rank_0.journal").write_bytes(b"x" * 100)
    Path(paths.journal, "rank_1.journal").write_bytes(b"x" * 40)
    Path(paths.rank_log(0)).write_text("a" * 10)
    nodes = [{"node_rank": 0, "returned": {"journals": {"0": 100, "1": 90}, "logs": {"0": 10, "1": 5}}}]
    found = missing(paths, nodes, node_count=2)
    assert found == [
        "rank 1's metric journal came back incomplete (40 of 90 bytes): some of its metrics are not in the store",
        "rank 1's output log came back incomplete (0 of 5 bytes): its output is cut short",
        "node 1's launcher report did not come back: its ranks' logs, metrics and outputs may be incomplete "
        "(the target's return channel broke)",
    ]
    assert missing(paths, nodes, node_count=2, every_node_reports=False)[-1].startswith("rank 1's output log")
    whole = [{"node_rank": 0, "returned": {"journals": {"0": 100}, "logs": {"0": 10}}}]
    assert missing(paths, whole, node_count=1) == []
    assert missing(paths, [{"node_rank": 0}], node_count=1) == []  # an older launcher's report: nothing to compare
