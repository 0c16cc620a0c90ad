"""What a failed job's error says: the first failing rank as the root cause, with its last lines."""

from __future__ import annotations

import os
from typing import Any

from torchyard.launch.launcher import first_failure_in
from torchyard.paths import RunPaths

LAST_LINES = 20


def tail_lines(path: str, n: int = LAST_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n:]


def failure_report(paths: RunPaths, rc: int | None, nodes: list[dict[str, Any]], nproc: int) -> dict[str, Any]:
    """The error of a failed job: the first failing rank, its node, how it ended and its last lines."""
    failures = [n["first_failure"] for n in nodes if n.get("first_failure")]
    if all(f["rank"] < 0 for f in failures):  # mpirun failed: a rank's exit file may say which
        found = first_failure_in(paths.exit, nproc)
        failures = [found] if found else failures
    if not failures:
        return {"message": f"the job exited with code {rc}", "exit_code": rc}
    first = min(failures, key=lambda f: f["time"])
    if first.get("stage") == "Preparing":  # the node bootstrap could not place the job on a node
        last = tail_lines(paths.log(os.path.basename(first.get("log") or "bootstrap.txt")))
        message = f"node {first['node_rank']} could not be prepared (environment or inputs)"
        if last:
            message += f": {last[-1].strip()}"
        return {"message": message, "stage": "Preparing", "node_rank": first["node_rank"], "rank": -1,
                "exit_code": first["exit_code"], "last_lines": last}
    how = f"was killed by {first['signal']}" if first.get("signal") else f"exited with code {first['exit_code']}"
    rank = first["rank"]
    log = paths.rank_log(rank) if rank >= 0 else paths.torchrun_log(first["node_rank"])
    last = tail_lines(log)
    message = f"rank {rank} on node {first['node_rank']} {how}"
    if last:
        message += f": {last[-1].strip()}"
    return {
        "message": message,
        "rank": rank,
        "node_rank": first["node_rank"],
        "exit_code": first["exit_code"],
        "signal": first.get("signal"),
        "last_lines": last,
    }
