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
        return _lost_node(paths, rc) or {"message": f"the job exited with code {rc}", "exit_code": rc}
    first = min(failures, key=lambda f: f["time"])
    if first.get("stage") == "Preparing":  # the node bootstrap could not place the job on a node
        last = tail_lines(paths.log(os.path.basename(first.get("log") or "bootstrap.txt")))
        message = f"node {first['node_rank']} could not be prepared (environment or inputs)"
        if last:
            message += f": {last[-1].strip()}"
        return {"message": message, "stage": "Preparing", "node_rank": first["node_rank"], "rank": -1,
                "exit_code": first["exit_code"], "last_lines": last, "cause": "infrastructure"}
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
        # a rank that exited non-zero on its own: the script's; killed by a signal torchyard did not send
        # (the OOM killer, a lost machine): the infrastructure's (issue #25's classification)
        "cause": "infrastructure" if first.get("signal") else "user",
    }


def _lost_node(paths: RunPaths, rc: int | None) -> dict[str, Any] | None:
    """A job that ended by SIGKILL with no rank's failure reported: a node's launcher was killed with
    its ranks before it could say anything (a lost machine, the OOM killer): the infrastructure's.
    Names the nodes whose launcher left no report, where the run folder says which nodes there were."""
    if rc != 128 + 9:
        return None
    missing = []
    for k in range(1024):
        if not os.path.exists(paths.plan(k)):
            break
        if not os.path.exists(paths.node_report(k)):
            missing.append(k)
    which = (f"node {missing[0]}" if len(missing) == 1 else f"nodes {', '.join(map(str, missing))}") if missing \
        else "a node"
    out: dict[str, Any] = {
        "message": f"{which} was lost: its launcher and ranks were killed (SIGKILL) before they could report "
                   "(a lost machine, or the OOM killer)",
        "exit_code": rc, "signal": "SIGKILL", "cause": "infrastructure"}
    if len(missing) == 1:
        out["node_rank"] = missing[0]
    return out


# ---- hangs ------------------------------------------------------------------------------------------

Frame = tuple[str, int, str]  # (file, line, function)


def parse_stacks(text: str) -> list[list[Frame]]:
    """The threads of a stack dump, each a list of frames, most recent call first. Reads
    ``faulthandler``'s format (``File "x.py", line 5 in f``) and ``py-spy dump``'s (``f (x.py:5)``);
    the main thread (the one that runs ``<module>``) comes first."""
    import re  # noqa: PLC0415

    fh_frame = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')
    spy_frame = re.compile(r"^\s+(\S.*) \((.*):(\d+)\)$")
    threads: list[list[Frame]] = []
    current: list[Frame] | None = None
    for line in text.splitlines():
        if not line.startswith(" "):
            if line.startswith(("Thread ", "Current thread ")):
                current = []
                threads.append(current)
            continue
        if current is None:
            continue
        if m := fh_frame.match(line):
            current.append((m.group(1), int(m.group(2)), m.group(3).strip()))
        elif m := spy_frame.match(line):
            current.append((m.group(2), int(m.group(3)), m.group(1).strip()))
    threads = [t for t in threads if t]
    threads.sort(key=lambda t: t[-1][2] != "<module>")  # stable: the main thread first
    return threads


def _where(frames: list[Frame]) -> str:
    """The most recent frame, and the script's own frame under it when the top is in a library."""
    file, line, func = frames[0]
    out = f"{func} ({os.path.basename(file)}:{line})"
    for f, n, fn in frames:
        if "site-packages" not in f and "/lib/python" not in f and (f, n, fn) != frames[0]:
            return f"{out}, called from {fn} ({os.path.basename(f)}:{n})"
    return out


def _in_collective(frames: list[Frame]) -> bool:
    return any("torch/distributed" in f or "torch/nn/parallel" in f for f, _n, _fn in frames)


def hang_report(paths: RunPaths, world_size: int) -> dict[str, Any]:
    """What the hung ranks were doing, from ``logs/stacks_rank_N.txt``: each rank's main-thread
    position, and the stragglers (the ranks whose main thread is not where most of the others are;
    with no majority, the ranks outside a torch.distributed call while others wait in one)."""
    stacks: dict[int, list[Frame]] = {}
    files: dict[str, str] = {}
    for rank in range(world_size):
        path = paths.stacks_log(rank)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                threads = parse_stacks(fh.read())
        except OSError:
            continue
        files[str(rank)] = f"logs/{os.path.basename(path)}"
        if threads:
            stacks[rank] = threads[0]
    groups: dict[tuple[Frame, ...], list[int]] = {}
    for rank, frames in sorted(stacks.items()):
        groups.setdefault(tuple(frames), []).append(rank)
    stragglers: list[int] = []
    if len(groups) > 1:
        sizes = sorted((len(r) for r in groups.values()), reverse=True)
        if sizes[0] > sizes[1]:
            majority = max(groups.values(), key=len)
            stragglers = sorted(r for r in stacks if r not in majority)
        else:
            waiting = [r for r, f in stacks.items() if _in_collective(list(f))]
            if waiting and len(waiting) < len(stacks):
                stragglers = sorted(r for r in stacks if r not in waiting)
    report: dict[str, Any] = {
        "stacks": files,
        "where": {str(r): _where(f) for r, f in sorted(stacks.items())},
        "stragglers": stragglers,
        "missing": [r for r in range(world_size) if str(r) not in files],
    }
    return report


def hang_summary(report: dict[str, Any]) -> str:
    """One sentence on the stacks of a hang, for the run's error message."""
    if not report["stacks"]:
        return "no rank's stacks could be taken"
    where = report["where"]
    stragglers = report["stragglers"]
    if stragglers:
        named = ", ".join(f"rank {r} at {where.get(str(r), '?')}" for r in stragglers)
        others = [r for r in where if int(r) not in stragglers]
        said = f"straggler{'s' if len(stragglers) > 1 else ''}: {named}"
        if others:
            said += f"; the others at {where[others[0]]}"
        return said + "; every rank's stacks are in logs/stacks_rank_N.txt"
    if len(set(where.values())) == 1 and where:
        return f"every rank at {next(iter(where.values()))} (stacks in logs/stacks_rank_N.txt)"
    return "the ranks' stacks differ, with no majority (see logs/stacks_rank_N.txt)"
