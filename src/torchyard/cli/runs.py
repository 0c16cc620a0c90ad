"""``torchyard runs list|show``, ``logs``, ``metrics``, ``cancel``, ``download``: looking at runs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from torchyard.cli.common import (
    UsageError,
    add_output,
    command,
    emit,
    fmt_time,
    group,
    rank_arg,
    table,
    with_utc,
    workspace,
)


def cmd_runs_list(args: argparse.Namespace) -> int:
    """List runs, newest first.

    -o json gives a list of run summaries: run_id, experiment, status, compute_target, exit_code and
    created_at/started_at/ended_at (epoch seconds) with created_utc/started_utc/ended_utc (ISO-8601).

    Example:
      torchyard runs list --status Failed --limit 5
      torchyard runs list -o json | jq -r '.[0].run_id'"""
    from torchyard.runtime.liveness import reconcile  # noqa: PLC0415
    from torchyard.status import RunStatus  # noqa: PLC0415

    status = None
    if args.status is not None:
        known = {s.value.lower(): s.value for s in RunStatus}
        status = known.get(args.status.lower())
        if status is None:
            raise UsageError(f"--status: unknown status {args.status!r}; one of {', '.join(s.value for s in RunStatus)}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit: must be 1 or more, got {args.limit}")
    ws = workspace(args)
    rows = ws.store.list_runs(experiment=args.experiment, status=status, limit=args.limit)
    rows = [reconcile(ws.store, r) for r in rows]
    emit(args, [_run_summary(r) for r in rows], lambda: table(
        None,
        ["run id", "experiment", "status", "target", "created", "duration"],
        [
            [r["id"], r["experiment"], r["status"], r["compute_target"], fmt_time(r["created_at"]), _duration(r)]
            for r in rows
        ],
    ))
    return 0


def _duration(row: dict[str, Any]) -> str:
    if not row.get("started_at"):
        return "-"
    return f"{(row.get('ended_at') or time.time()) - row['started_at']:.1f} s"


def _run_summary(row: dict[str, Any]) -> dict[str, Any]:
    return with_utc({
        "run_id": row["id"],
        "experiment": row["experiment"],
        "status": row["status"],
        "compute_target": row["compute_target"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "exit_code": row["exit_code"],
    }, "created_at", "started_at", "ended_at")


def cmd_runs_show(args: argparse.Namespace) -> int:
    """Show one run: status, times, tags, properties, history, error with its last lines, files.

    -o json gives the SDK's Run.get_details() (Azure ML's shape: runId, status, createdTimeUtc...).

    Example:
      torchyard runs show digits_1733600000_ab12cd34
      torchyard runs show digits_1733600000_ab12cd34 -o yaml"""
    run = workspace(args).get_run(args.run_id)
    details = run.get_details()
    emit(args, details, lambda: _show_run(run, details))
    return 0


def _show_run(run: Any, details: dict[str, Any]) -> None:
    print(f"run:        {details['runId']}")
    print(f"experiment: {details['experiment']}")
    print(f"status:     {details['status']}")
    print(f"target:     {details['target']}")
    print(f"created:    {details['createdTimeUtc']}")
    print(f"started:    {details['startTimeUtc'] or '-'}")
    print(f"ended:      {details['endTimeUtc'] or '-'}")
    if details["exitCode"] is not None:
        print(f"exit code:  {details['exitCode']}")
    if details["tags"]:
        print("tags:       " + ", ".join(f"{k}={v}" for k, v in details["tags"].items()))
    if details["properties"]:
        print("properties: " + ", ".join(f"{k}={v}" for k, v in details["properties"].items()))
    print("history:    " + " → ".join(h["status"] for h in details["statusHistory"]))
    for warning in details.get("warnings") or []:
        print(f"warning:    {warning}")
    error = details.get("error")
    if error:
        print(f"error:      {error['message']}")
        for line in error.get("last_lines", [])[-10:]:
            print(f"  | {line}")
    files = run.get_file_names()
    if files:
        print("files:      " + ", ".join(files))


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a run's output (rank 0 by default); --follow keeps printing until the run ends.

    Example:
      torchyard logs digits_1733600000_ab12cd34 --rank all --follow"""
    from torchyard.run import LogFollower  # noqa: PLC0415
    from torchyard.status import TERMINAL_VALUES  # noqa: PLC0415

    run = workspace(args).get_run(args.run_id)
    _check_rank(run, rank_arg(args.rank))
    remote = getattr(run, "log_follower", None)  # a team server's run reads its logs over HTTP
    follower = remote(rank_arg(args.rank)) if remote else LogFollower(run.workdir, rank_arg(args.rank))
    try:
        while True:
            status = run.get_status()
            follower.pump(sys.stdout)
            if not args.follow or status in TERMINAL_VALUES:
                break
            time.sleep(0.2)
        follower.pump(sys.stdout)
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    """Print a run's metrics (rank 0 by default, --rank all for every rank).

    -o json gives {name: value or [values]} ({rank: {...}} with --rank all); ±inf and NaN are the
    strings "Infinity", "-Infinity" and "NaN".

    Example:
      torchyard metrics digits_1733600000_ab12cd34 --rank all -o json"""
    run = workspace(args).get_run(args.run_id)
    rank = rank_arg(args.rank)
    _check_rank(run, rank)
    metrics = run.get_metrics(rank=rank)
    emit(args, metrics, lambda: _metrics_table(run, rank, metrics))
    return 0


def _metrics_table(run: Any, rank: int | str, metrics: dict[Any, Any]) -> None:
    per_rank = metrics if rank == "all" else {rank: metrics}
    rows = []
    for r, values in per_rank.items():
        for name, value in values.items():
            count = len(value) if isinstance(value, list) else 1
            last = value[-1] if isinstance(value, list) and value else value
            rows.append([r, name, count, f"{last:.6g}" if isinstance(last, float) else last])
    if not rows:
        print(f"run {run.id} has no metrics (yet)")
        return
    table(None, ["rank", "metric", "values", "last"], rows)


def _check_rank(run: Any, rank: int | str) -> None:
    """A rank the run does not have is a mistake to name, not an empty answer."""
    if rank == "all":
        return
    if not isinstance(rank, int) or rank < 0:
        raise UsageError(f"--rank: expected a rank number (0 or more) or 'all', got {rank!r}")
    try:
        dist = run.get_details().get("runDefinition", {}).get("distribution") or {}
        world = int(dist.get("node_count", 1)) * int(dist.get("process_count_per_node", 1))
    except Exception:  # noqa: BLE001 - a sweep or an older server's details: let the read answer
        return
    if isinstance(world, int) and world > 0 and rank >= world:
        raise UsageError(f"--rank {rank}: run {run.id} has {world} rank(s), 0 to {world - 1}")


def cmd_repair(args: argparse.Namespace) -> int:
    """Store a run's metrics again from its journals (the truth until the store has every value).

    For a run that ended while the store refused writes (a full disk, a stopped database): once the
    store works again, this replaces the run's stored values with everything its ranks logged.

    Example:
      torchyard runs repair digits_1733600000_ab12cd34"""
    from torchyard.paths import RunPaths  # noqa: PLC0415
    from torchyard.runtime.ingest import repair  # noqa: PLC0415
    from torchyard.status import TERMINAL_VALUES  # noqa: PLC0415

    ws = workspace(args)
    if getattr(ws, "is_remote", False):
        raise UsageError("runs repair works on the workspace folder itself: run it where the server runs")
    row = ws.store.get_run(args.run_id)
    if row["status"] not in TERMINAL_VALUES:
        raise UsageError(f"run {row['id']} is {row['status']}: its supervisor is still storing its metrics; "
                         "repair a run once it has ended")
    count = repair(ws.store, row["id"], RunPaths(row["run_dir"]).journal)
    print(f"torchyard: run {row['id']}: {count:,} value(s) stored from its journals")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a run (idempotent): every rank on every node is stopped, the run ends Canceled.

    Example:
      torchyard cancel digits_1733600000_ab12cd34"""
    run = workspace(args).get_run(args.run_id)
    before = run.get_status()
    if args.requeue:
        run.cancel(requeue=True)
        done = before in ("Completed", "Failed", "Canceled")
        print(f"torchyard: run {run.id}: {'already ' + before if done else 'preempted: it resumes from its checkpoint'}")
        return 0
    run.cancel()
    print(f"torchyard: run {run.id}: {'already ' + before if before in ('Completed', 'Failed', 'Canceled') else 'cancel requested'}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Download a run's artifact, or every artifact under a folder.

    Example:
      torchyard download digits_1733600000_ab12cd34 outputs/ --to ./results"""
    from torchyard.errors import NotFoundError  # noqa: PLC0415

    run = workspace(args).get_run(args.run_id)
    names = run.get_file_names()
    if args.path in names:
        os.makedirs(args.to, exist_ok=True)
        print(run.download_file(args.path, args.to))
        return 0
    prefix = args.path.rstrip("/") + "/"
    if any(n.startswith(prefix) for n in names):
        import inspect  # noqa: PLC0415

        from torchyard.cli.common import transfer_progress  # noqa: PLC0415

        with transfer_progress(f"downloading {prefix}") as progress:
            takes = progress is not None and "progress" in inspect.signature(run.download_files).parameters
            paths = run.download_files(prefix, args.to, **({"progress": progress} if takes else {}))
        for path in paths:
            print(path)
        return 0
    raise NotFoundError(f"run {run.id} has no file or folder {args.path!r}; it has: {', '.join(names) or 'nothing'}")


def register(sub: Any) -> None:
    runs = group(sub, "runs", "list and show runs", "runs_command")
    rl = command(runs, "list", cmd_runs_list)
    rl.add_argument("--experiment", "-x")
    rl.add_argument("--status")
    rl.add_argument("--limit", type=int, default=20)
    add_output(rl)
    rp = command(runs, "repair", cmd_repair)
    rp.add_argument("run_id")
    rs = command(runs, "show", cmd_runs_show)
    rs.add_argument("run_id")
    add_output(rs)

    lg = command(sub, "logs", cmd_logs)
    lg.add_argument("run_id")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    lg.add_argument("--rank", default="0", help="rank number or 'all' (default 0)")

    m = command(sub, "metrics", cmd_metrics)
    m.add_argument("run_id")
    m.add_argument("--rank", default="0", help="rank number or 'all' (default 0)")
    add_output(m)

    c = command(sub, "cancel", cmd_cancel)
    c.add_argument("run_id")
    c.add_argument("--requeue", action="store_true",
                   help="preempt instead: the ranks get SIGTERM and the job's preempt grace to checkpoint, then "
                        "the run resumes from its latest checkpoint")

    d = command(sub, "download", cmd_download)
    d.add_argument("run_id")
    d.add_argument("path", help="artifact path, e.g. outputs/model.pt (a folder prefix downloads everything under it)")
    d.add_argument("--to", default=".", help="destination folder (default: .)")
