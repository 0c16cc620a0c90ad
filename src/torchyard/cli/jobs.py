"""``torchyard run`` and ``torchyard submit``: a script or a YAML job file as a tracked run (or a sweep)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from torchyard.cli.common import (
    UsageError,
    add_output,
    command,
    kv,
    print_json,
    print_yaml,
    workspace,
)
from torchyard.cli.common import (
    wait as wait_for,
)


def _fmt(args: argparse.Namespace) -> str | None:
    """``json`` or ``yaml`` when -o/--json asks for machine-readable output, else None (text)."""
    fmt = getattr(args, "output", None)
    return fmt if fmt in ("json", "yaml") else None


def _emit_as(fmt: str | None, obj: Any) -> None:
    (print_yaml if fmt == "yaml" else print_json)(obj)


def _emit(args: argparse.Namespace, obj: Any) -> None:
    _emit_as(_fmt(args), obj)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a script from a source folder as a tracked run.

    Arguments after -- go to the script. Without --wait it prints the run id and returns; with it,
    it streams rank 0's output and ends with an execution summary (exit 1 if the run did not complete).

    Example:
      torchyard run --source-dir . --entry train.py --process-count-per-node 2 \
          --distributed-backend gloo --wait -- --epochs 3"""
    from torchyard.experiment import Experiment  # noqa: PLC0415
    from torchyard.spec.estimators import PyTorch  # noqa: PLC0415

    script_args = list(args.args)
    if script_args and script_args[0] == "--":
        script_args = script_args[1:]
    src = os.path.abspath(args.source_dir)
    experiment = args.experiment or _default_experiment(src)
    est = PyTorch(
        source_directory=src,
        entry_script=args.entry,
        compute_target=args.compute,
        node_count=args.node_count,
        process_count_per_node=args.process_count_per_node,
        distributed_backend=args.distributed_backend,
        use_gpu=args.use_gpu,
        environment_variables=kv(args.env, "--env"),
        max_run_duration_seconds=args.max_run_duration,
        hang_timeout_seconds=args.hang_timeout,
        max_queue_seconds=args.max_queue,
        priority=args.priority,
        preemptible=args.preemptible,
        max_retries=args.max_retries,
        retry_on=args.retry_on or ["infrastructure"],
        preempt_grace_seconds=args.preempt_grace,
    )
    # script arguments pass through verbatim (script_params would reorder bare flags)
    import msgspec  # noqa: PLC0415

    spec = msgspec.structs.replace(est.spec, arguments=tuple(script_args))
    ws = workspace(args, create=True)
    fast = _via_agent(ws, experiment, spec, kv(args.tag, "--tag"), wait=args.wait, stream=not _fmt(args), json_out=_fmt(args))
    if fast is not None:
        return fast
    run = Experiment(ws, experiment).submit(spec, tags=kv(args.tag, "--tag"))
    if _fmt(args) and not args.wait:
        _emit(args, {"run_id": run.id, "experiment": experiment, "status": run.get_status()})
        return 0
    print(f"torchyard: submitted run {run.id} (experiment {experiment})", file=sys.stderr, flush=True)
    if not args.wait:
        print(run.id, flush=True)
        return 0
    if args.wait:
        code = wait_for(run, stream=not _fmt(args))
        if _fmt(args):
            _emit(args, run.get_details())
        return code
    return 0


def _via_agent(
    ws: Any, experiment: str, spec: Any, tags: dict[str, str], *, wait: bool, stream: bool, json_out: str | None
) -> int | None:
    """Submit through the warm local agent (see torchyard.runtime.agent); None when there is none yet."""
    from torchyard.runtime import agent  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    if not agent.enabled() or (wait and json_out) or getattr(ws, "is_remote", False):
        return None
    check_name(experiment)
    sock = agent.connect(ws.path, ws.db_url)
    if sock is None:
        return None
    chan = agent.Channel(sock)
    try:
        chan.send(
            {
                "op": "submit",
                "experiment": experiment,
                "spec": spec.to_json().decode(),
                "tags": tags,
                "wait": wait,
                "env": dict(os.environ),
                "progress": True,
            }
        )
        first = _snapshot_progress(chan, spec.source_directory)
        if first is None:
            return None  # the agent went away before recording anything: submit directly
        if "error" in first:
            raise UsageError(first["error"])
        run_id = first["run_id"]
        if not wait:
            if json_out:
                _emit_as(json_out, {"run_id": run_id, "experiment": experiment, "status": "Queued"})
            else:
                print(f"torchyard: submitted run {run_id} (experiment {experiment})", file=sys.stderr, flush=True)
                print(run_id, flush=True)
            return 0
        print(f"torchyard: submitted run {run_id} (experiment {experiment})", file=sys.stderr, flush=True)
        from torchyard.run import LogFollower  # noqa: PLC0415

        follower = LogFollower(first["run_dir"]) if stream else None
        final = None
        try:
            while True:
                ready = chan.ready(0.03)
                if follower is not None:
                    follower.pump(sys.stdout)
                if ready:
                    final = chan.recv()
                    break
        except KeyboardInterrupt:
            print(f"\ntorchyard: stopped waiting; run {run_id} goes on (`torchyard cancel {run_id}` stops it)", file=sys.stderr)
            return 130
        if follower is not None:
            follower.pump(sys.stdout)
        if final is None:  # the agent died mid-run: ask the store
            return wait_for(ws.get_run(run_id), stream=False)
        if stream:
            sys.stdout.write(final["summary"])
            sys.stdout.flush()
        if final["status"] != "Completed":
            print(f"torchyard: run {run_id} ended {final['status']}: {final.get('reason') or final['status']}", file=sys.stderr)
            return 1
        return 0
    finally:
        chan.close()


def _snapshot_progress(chan: Any, source: str) -> dict[str, Any] | None:
    """The agent's first answer, drawing a bar meanwhile while it snapshots a large source folder."""
    import contextlib  # noqa: PLC0415

    from torchyard.cli.common import transfer_progress  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        report = None
        while True:
            message = chan.recv()
            if message is None or "progress" not in message:
                return message
            if report is None:
                report = stack.enter_context(transfer_progress(f"snapshotting {source}")) or (lambda *_: None)
            report(*message["progress"])


def _default_experiment(src: str) -> str:
    import re  # noqa: PLC0415

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(src.rstrip("/")) or "default").lstrip("._-")
    return name[:100] or "default"


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a YAML job file (Azure ML v2 command job style), or a `type: sweep` file.

    --dry-run prints the compiled job and what each node would run, from the same plan the
    supervisor makes; nothing is recorded or started.

    Example:
      torchyard submit job.yml --stream
      torchyard submit sweep.yml --dry-run --json"""
    from torchyard.experiment import Experiment  # noqa: PLC0415
    from torchyard.spec.jobfile import load_job_file  # noqa: PLC0415

    loaded = load_job_file(args.job_file)
    experiment = args.experiment or loaded.experiment or _default_experiment(loaded.spec.source_directory)
    if hasattr(loaded, "config"):  # a sweep (type: sweep)
        return _submit_sweep(loaded, experiment, args)
    if args.dry_run:
        return _dry_run(loaded.spec, experiment, args)
    ws = workspace(args, create=True)
    fast = _via_agent(ws, experiment, loaded.spec, loaded.tags, wait=args.stream, stream=args.stream, json_out=_fmt(args))
    if fast is not None:
        return fast
    run = Experiment(ws, experiment).submit(loaded.spec, tags=loaded.tags)
    if _fmt(args) and not args.stream:
        _emit(args, {"run_id": run.id, "experiment": experiment, "status": run.get_status()})
        return 0
    print(f"torchyard: submitted run {run.id} (experiment {experiment})", file=sys.stderr, flush=True)
    if args.stream:
        return wait_for(run, stream=True)
    print(run.id)
    return 0


def _submit_sweep(loaded: Any, experiment: str, args: argparse.Namespace) -> int:
    from torchyard.cli import sweep as sweep_cli  # noqa: PLC0415
    from torchyard.experiment import Experiment  # noqa: PLC0415

    if args.dry_run:
        config = loaded.config
        trial = config.hyperparameter_sampling.suggest(0, config.hyperparameter_sampling.seed or 0, (), config.maximize)
        from torchyard.sweeps.config import trial_arguments  # noqa: PLC0415

        return _dry_run(trial_arguments(loaded.spec, trial), experiment, args, sweep=config)
    hd = Experiment(workspace(args, create=True), experiment).submit(loaded.config, tags=loaded.tags)
    if _fmt(args) and not args.stream:
        _emit(args, {"run_id": hd.id, "experiment": experiment, "status": hd.get_status(), "type": "sweep"})
        return 0
    print(f"torchyard: submitted sweep {hd.id} (experiment {experiment})", file=sys.stderr, flush=True)
    if not args.stream:
        print(hd.id)
        return 0
    code = wait_for(hd, stream=False)
    sweep_cli.show(hd, as_json=bool(_fmt(args)))
    return code


def _dry_run(spec: Any, experiment: str, args: argparse.Namespace, sweep: Any = None) -> int:
    """What the run would execute, from the same plan the supervisor makes (runtime.submit.plan)."""
    from torchyard.runtime.submit import plan  # noqa: PLC0415

    dry = plan(workspace(args, create=True), experiment, spec)
    if _fmt(args):
        extra = {"sweep": sweep.to_dict(sweep.hyperparameter_sampling.seed)} if sweep is not None else {}
        _emit(args, {**dry.to_dict(), **extra})
    else:
        if sweep is not None:
            print(f"sweep: {sweep!r}")
            print("first trial's job (sampled values as arguments):")
        print(dry.describe())
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Make a workspace here (./.torchyard), or at --workspace PATH, and say where it is.

    A workspace already there is left as it is. Commands that only read (runs list, metrics, model
    list...) never make one; run and submit make ./.torchyard on their first use.

    Example:
      torchyard init && torchyard runs list"""
    import os  # noqa: PLC0415

    from torchyard.workspace.workspace import WORKSPACE_DIRNAME, WorkspaceFolder  # noqa: PLC0415

    target = args.workspace or os.environ.get("TORCHYARD_WORKSPACE") or os.path.join(os.getcwd(), WORKSPACE_DIRNAME)
    existed = os.path.isfile(os.path.join(target, "workspace.json")) or \
        os.path.isfile(os.path.join(target, WORKSPACE_DIRNAME, "workspace.json"))
    ws = WorkspaceFolder(target)
    ws.store  # noqa: B018 - creates (or checks) the metadata store now
    print(f"{'workspace already at' if existed else 'made a workspace at'} {ws.path}")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    """Clone and re-run a run: the same code snapshot, environment and inputs, with --set changes.

    KEY names a job setting (node_count, process_count_per_node, distributed_backend, compute_target,
    priority, max_retries, use_gpu, max_run_duration_seconds, hang_timeout_seconds, max_queue_seconds) or else a
    script argument (lr=0.1 sets --lr). The new run records rerun_of (a tag and a property) and the
    changes (property torchyard.rerun_changes).

    Example:
      torchyard rerun digits_1765140000_0123abcd --set lr=0.1 --set node_count=2 --wait"""
    from torchyard.runtime.rerun import rerun  # noqa: PLC0415

    ws = workspace(args)
    if getattr(ws, "is_remote", False):
        raise UsageError("rerun works on the workspace folder for now: run it where the server runs")
    new_id = rerun(ws, args.run_id, kv(args.set, "--set"))
    run = ws.get_run(new_id)
    print(new_id if not args.wait else f"torchyard: {new_id} re-runs {args.run_id}", flush=True)
    return wait_for(run, stream=True) if args.wait else 0


def register(sub: Any) -> None:
    command(sub, "init", cmd_init)
    rr = command(sub, "rerun", cmd_rerun)
    rr.add_argument("run_id")
    rr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a job setting or script argument to change (repeatable)")
    rr.add_argument("--wait", action="store_true", help="stream the output and wait for the new run to end")
    r = command(sub, "run", cmd_run)
    r.add_argument("--source-dir", "-s", default=".", help="folder with the training code (default: .)")
    r.add_argument("--entry", "-e", required=True, help="entry script, relative to --source-dir")
    r.add_argument("--compute", "-c", default="local", help="compute target (default: local)")
    r.add_argument("--experiment", "-x", help="experiment name (default: the source folder's name)")
    r.add_argument("--node-count", type=int, default=1, help="nodes (default 1)")
    r.add_argument("--process-count-per-node", type=int, default=1, help="processes per node (default 1)")
    r.add_argument("--distributed-backend", help="pytorch, nccl, gloo or mpi (needed for more than one process)")
    r.add_argument("--use-gpu", action="store_true", help="give each rank a GPU")
    r.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable for the script")
    r.add_argument("--tag", action="append", default=[], metavar="K=V", help="tag the run")
    r.add_argument("--max-run-duration", type=float, help="cancel the run after this many seconds")
    r.add_argument("--max-queue", type=float, metavar="S", help="fail the run when it waits longer than this in the target's queue")
    r.add_argument("--preemptible", action="store_true",
                   help="a higher-priority run may preempt this one (it checkpoints in its grace and resumes later)")
    r.add_argument("--priority", type=int, default=0, metavar="N",
                   help="the run's place in the target's queue: higher first (default 0)")
    r.add_argument("--max-retries", type=int, default=0, metavar="N",
                   help="retry a failed run up to N more times, each from its latest checkpoint (default 0)")
    r.add_argument("--retry-on", action="append", metavar="CAUSE",
                   help="which failures are retried: infrastructure (default), preempted, hung, user or any; repeatable")
    r.add_argument("--preempt-grace", type=float, default=60.0, metavar="S",
                   help="seconds a preempted run's ranks get to commit a checkpoint (torchyard cancel --requeue; default 60)")
    r.add_argument("--hang-timeout", type=float, help="fail the run when no rank writes output or metrics for this many seconds")
    r.add_argument("--wait", action="store_true", help="stream the output and wait for the run to end")
    add_output(r)
    r.add_argument("args", nargs=argparse.REMAINDER, help="-- then the script's arguments")

    s = command(sub, "submit", cmd_submit)
    s.add_argument("job_file")
    s.add_argument("--experiment", "-x", help="override the file's experiment")
    s.add_argument("--stream", action="store_true", help="stream the output and wait for the run to end")
    s.add_argument("--dry-run", action="store_true", help="print the compiled job and what would run; run nothing")
    add_output(s)
