"""The ``torchyard`` command. Imports only argparse at start-up; each command imports what it needs."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_USAGE = 2

#: command groups that live in their own module ``torchyard.cli.<name>``: each has
#: ``register(subparsers)``, which adds its parsers with ``set_defaults(func=handler)``.
COMMAND_GROUPS: tuple[str, ...] = ("tensorboard",)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchyard",
        description="Run PyTorch training scripts as tracked runs: logs, metrics and outputs, locally or on a cluster.",
    )
    p.add_argument("--workspace", "-w", help="workspace folder (default: ./.torchyard or a parent's; env TORCHYARD_WORKSPACE)")
    p.add_argument("--version", action="version", version="torchyard 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a script as a tracked run", description="Run SCRIPT from DIR as a tracked run. "
                       "Arguments after -- go to the script.")
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
    r.add_argument("--hang-timeout", type=float, help="fail the run when no rank writes output or metrics for this many seconds")
    r.add_argument("--wait", action="store_true", help="stream the output and wait for the run to end")
    r.add_argument("--json", action="store_true", help="print machine-readable JSON")
    r.add_argument("args", nargs=argparse.REMAINDER, help="-- then the script's arguments")

    s = sub.add_parser("submit", help="submit a YAML job file", description="Submit a YAML job file (Azure ML v2 command job style).")
    s.add_argument("job_file")
    s.add_argument("--experiment", "-x", help="override the file's experiment")
    s.add_argument("--stream", action="store_true", help="stream the output and wait for the run to end")
    s.add_argument("--dry-run", action="store_true", help="print the compiled job and what would run; run nothing")
    s.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="list and show runs").add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    rl = runs.add_parser("list", help="list runs, newest first")
    rl.add_argument("--experiment", "-x")
    rl.add_argument("--status")
    rl.add_argument("--limit", type=int, default=20)
    rl.add_argument("--json", action="store_true")
    rs = runs.add_parser("show", help="show one run's details")
    rs.add_argument("run_id")
    rs.add_argument("--json", action="store_true")

    lg = sub.add_parser("logs", help="print a run's output")
    lg.add_argument("run_id")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    lg.add_argument("--rank", default="0", help="rank number or 'all' (default 0)")

    m = sub.add_parser("metrics", help="print a run's metrics")
    m.add_argument("run_id")
    m.add_argument("--rank", default="0", help="rank number or 'all' (default 0)")
    m.add_argument("--json", action="store_true")

    c = sub.add_parser("cancel", help="cancel a run")
    c.add_argument("run_id")

    env = sub.add_parser("env", help="environments: list, show, register, export, prune").add_subparsers(
        dest="env_command", metavar="SUBCOMMAND"
    )
    el = env.add_parser("list", help="registered environments and cached builds")
    el.add_argument("--json", action="store_true")
    es = env.add_parser("show", help="show a registered environment")
    es.add_argument("name", help="NAME or NAME:VERSION")
    es.add_argument("--json", action="store_true")
    er = env.add_parser("register", help="register an environment from a YAML file (name, version, pip, conda, python)")
    er.add_argument("file")
    ee = env.add_parser("export", help="print a requirements file that rebuilds a run's environment")
    ee.add_argument("run_id")
    ep = env.add_parser("prune", help="remove cached environments no live run uses")
    ep.add_argument("--older-than", type=float, default=7.0, metavar="DAYS", help="unused for this many days (default 7)")

    from torchyard.cli import datastore as datastore_cli  # noqa: PLC0415

    datastore_cli.add_parser(sub)
    from torchyard.cli import sweep as sweep_cli  # noqa: PLC0415

    sweep_cli.add_parser(sub)
    from torchyard.cli import compute as compute_cli  # noqa: PLC0415

    compute_cli.add_parser(sub)
    for module in COMMAND_GROUPS:
        importlib.import_module(f"torchyard.cli.{module}").register(sub)

    d = sub.add_parser("download", help="download a run's artifact")
    d.add_argument("run_id")
    d.add_argument("path", help="artifact path, e.g. outputs/model.pt (a folder prefix downloads everything under it)")
    d.add_argument("--to", default=".", help="destination folder (default: .)")
    return p


class UsageError(Exception):
    pass


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _workspace(args: argparse.Namespace) -> Any:
    from torchyard.workspace.workspace import Workspace  # noqa: PLC0415

    return Workspace(args.workspace)


def _rank(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--rank: expected a rank number or 'all', got {value!r}") from None


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console(width=None if sys.stdout.isatty() else 250).print(table)


# ---- commands -------------------------------------------------------------------------------------


def _wait(run: Any, stream: bool, ranks: int | str = 0) -> int:
    from torchyard.status import RunStatus  # noqa: PLC0415

    tty = sys.stderr.isatty()

    def on_status(status: str) -> None:
        if tty or not stream:
            print(f"torchyard: {run.id}: {status}", file=sys.stderr, flush=True)

    try:
        details = run.wait_for_completion(show_output=stream, raise_on_error=False, ranks=ranks, on_status=on_status)
    except KeyboardInterrupt:
        print(f"\ntorchyard: stopped waiting; run {run.id} goes on (`torchyard cancel {run.id}` stops it)", file=sys.stderr)
        return 130
    status = details["status"]
    if not stream:
        print(f"torchyard: {run.id}: {status}", file=sys.stderr)
    if status != RunStatus.COMPLETED.value:
        reason = (details.get("error") or {}).get("message") or details.get("cancel_reason") or status
        print(f"torchyard: run {run.id} ended {status}: {reason}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from torchyard.run import Experiment  # noqa: PLC0415
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
        environment_variables=_kv(args.env, "--env"),
        max_run_duration_seconds=args.max_run_duration,
        hang_timeout_seconds=args.hang_timeout,
    )
    # script arguments pass through verbatim (script_params would reorder bare flags)
    import msgspec  # noqa: PLC0415

    spec = msgspec.structs.replace(est.spec, arguments=tuple(script_args))
    ws = _workspace(args)
    fast = _via_agent(ws, experiment, spec, _kv(args.tag, "--tag"), wait=args.wait, stream=not args.json, json_out=args.json)
    if fast is not None:
        return fast
    run = Experiment(ws, experiment).submit(spec, tags=_kv(args.tag, "--tag"))
    if args.json and not args.wait:
        _print_json({"run_id": run.id, "experiment": experiment, "status": run.get_status()})
        return 0
    print(f"torchyard: submitted run {run.id} (experiment {experiment})", file=sys.stderr, flush=True)
    if not args.wait:
        print(run.id, flush=True)
        return 0
    if args.wait:
        code = _wait(run, stream=not args.json)
        if args.json:
            _print_json(run.get_details())
        return code
    return 0


def _via_agent(
    ws: Any, experiment: str, spec: Any, tags: dict[str, str], *, wait: bool, stream: bool, json_out: bool
) -> int | None:
    """Submit through the warm local agent (see torchyard.agent); None when there is none yet."""
    from torchyard import agent  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    if not agent.enabled() or (wait and json_out):
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
            }
        )
        first = chan.recv()
        if first is None:
            return None  # the agent went away before recording anything: submit directly
        if "error" in first:
            raise UsageError(first["error"])
        run_id = first["run_id"]
        if not wait:
            if json_out:
                _print_json({"run_id": run_id, "experiment": experiment, "status": "Queued"})
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
            return _wait(ws.get_run(run_id), stream=False)
        if stream:
            sys.stdout.write(final["summary"])
            sys.stdout.flush()
        if final["status"] != "Completed":
            print(f"torchyard: run {run_id} ended {final['status']}: {final.get('reason') or final['status']}", file=sys.stderr)
            return 1
        return 0
    finally:
        chan.close()


def _default_experiment(src: str) -> str:
    import re  # noqa: PLC0415

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(src.rstrip("/")) or "default").lstrip("._-")
    return name[:100] or "default"


def cmd_submit(args: argparse.Namespace) -> int:
    from torchyard.run import Experiment  # noqa: PLC0415
    from torchyard.spec.yamljob import load_job_file  # noqa: PLC0415

    loaded = load_job_file(args.job_file)
    experiment = args.experiment or loaded.experiment or _default_experiment(loaded.spec.source_directory)
    if hasattr(loaded, "config"):  # a sweep (type: sweep)
        return _submit_sweep(loaded, experiment, args)
    if args.dry_run:
        return _dry_run(loaded.spec, experiment, args)
    ws = _workspace(args)
    fast = _via_agent(ws, experiment, loaded.spec, loaded.tags, wait=args.stream, stream=args.stream, json_out=args.json)
    if fast is not None:
        return fast
    run = Experiment(ws, experiment).submit(loaded.spec, tags=loaded.tags)
    if args.json and not args.stream:
        _print_json({"run_id": run.id, "experiment": experiment, "status": run.get_status()})
        return 0
    print(f"torchyard: submitted run {run.id} (experiment {experiment})", file=sys.stderr, flush=True)
    if args.stream:
        return _wait(run, stream=True)
    print(run.id)
    return 0


def _submit_sweep(loaded: Any, experiment: str, args: argparse.Namespace) -> int:
    from torchyard.cli import sweep as sweep_cli  # noqa: PLC0415
    from torchyard.run import Experiment  # noqa: PLC0415

    if args.dry_run:
        config = loaded.config
        trial = config.hyperparameter_sampling.suggest(0, config.hyperparameter_sampling.seed or 0, (), config.maximize)
        from torchyard.sweeps.config import trial_arguments  # noqa: PLC0415

        return _dry_run(trial_arguments(loaded.spec, trial), experiment, args, sweep=config)
    hd = Experiment(_workspace(args), experiment).submit(loaded.config, tags=loaded.tags)
    if args.json and not args.stream:
        _print_json({"run_id": hd.id, "experiment": experiment, "status": hd.get_status(), "type": "sweep"})
        return 0
    print(f"torchyard: submitted sweep {hd.id} (experiment {experiment})", file=sys.stderr, flush=True)
    if not args.stream:
        print(hd.id)
        return 0
    code = _wait(hd, stream=False)
    sweep_cli.show(hd, as_json=args.json)
    return code


def _dry_run(spec: Any, experiment: str, args: argparse.Namespace, sweep: Any = None) -> int:
    import sys as _sys  # noqa: PLC0415

    from torchyard.compute.base import PreparedJob  # noqa: PLC0415
    from torchyard.compute.registry import get_target  # noqa: PLC0415

    target = get_target(spec.compute_target, _workspace(args).path)
    target.check(spec)
    workdir = "<workspace>/runs/<run_id>"
    argv = [_sys.executable, spec.entry_script, *spec.arguments] if spec.entry_script else ["/bin/sh", "-c", spec.command]
    plan = target.prepare(
        PreparedJob(
            run_id="<run_id>",
            experiment=experiment,
            workspace="<workspace>",
            workdir=workdir,
            spec=spec,
            rank_argv=argv,
            launcher_python=_sys.executable,
        )
    )
    if args.json:
        extra = {"sweep": sweep.to_dict(sweep.hyperparameter_sampling.seed)} if sweep is not None else {}
        _print_json({"experiment": experiment, "spec": spec.to_dict(), "plan": plan.describe(), **extra})
    else:
        print(f"experiment: {experiment}")
        if sweep is not None:
            print(f"sweep: {sweep!r}")
            print("first trial's job (sampled values as arguments):")
        print("job:")
        print(json.dumps(spec.to_dict(), indent=2))
        print(plan.describe())
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from torchyard.run import reconcile  # noqa: PLC0415

    ws = _workspace(args)
    rows = ws.store.list_runs(experiment=args.experiment, status=args.status, limit=args.limit)
    rows = [reconcile(ws.store, r) for r in rows]
    if args.json:
        _print_json([_run_summary(r) for r in rows])
        return 0
    _table(
        None,
        ["run id", "experiment", "status", "target", "created", "duration"],
        [
            [r["id"], r["experiment"], r["status"], r["compute_target"], _fmt_time(r["created_at"]), _duration(r)]
            for r in rows
        ],
    )
    return 0


def _duration(row: dict[str, Any]) -> str:
    if not row.get("started_at"):
        return "-"
    return f"{(row.get('ended_at') or time.time()) - row['started_at']:.1f} s"


def _run_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["id"],
        "experiment": row["experiment"],
        "status": row["status"],
        "compute_target": row["compute_target"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "exit_code": row["exit_code"],
    }


def cmd_runs_show(args: argparse.Namespace) -> int:
    run = _workspace(args).get_run(args.run_id)
    details = run.get_details()
    if args.json:
        _print_json(details)
        return 0
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
    error = details.get("error")
    if error:
        print(f"error:      {error['message']}")
        for line in error.get("last_lines", [])[-10:]:
            print(f"  | {line}")
    files = run.get_file_names()
    if files:
        print("files:      " + ", ".join(files))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from torchyard.run import LogFollower  # noqa: PLC0415
    from torchyard.status import TERMINAL_VALUES  # noqa: PLC0415

    run = _workspace(args).get_run(args.run_id)
    follower = LogFollower(run.workdir, _rank(args.rank))
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
    run = _workspace(args).get_run(args.run_id)
    rank = _rank(args.rank)
    metrics = run.get_metrics(rank=rank)
    if args.json:
        _print_json(metrics)
        return 0
    per_rank = metrics if rank == "all" else {rank: metrics}
    rows = []
    for r, values in per_rank.items():
        for name, value in values.items():
            count = len(value) if isinstance(value, list) else 1
            last = value[-1] if isinstance(value, list) and value else value
            rows.append([r, name, count, f"{last:.6g}" if isinstance(last, float) else last])
    if not rows:
        print(f"run {run.id} has no metrics (yet)")
        return 0
    _table(None, ["rank", "metric", "values", "last"], rows)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    run = _workspace(args).get_run(args.run_id)
    before = run.get_status()
    run.cancel()
    print(f"torchyard: run {run.id}: {'already ' + before if before in ('Completed', 'Failed', 'Canceled') else 'cancel requested'}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from torchyard.errors import NotFoundError  # noqa: PLC0415

    run = _workspace(args).get_run(args.run_id)
    names = run.get_file_names()
    if args.path in names:
        os.makedirs(args.to, exist_ok=True)
        print(run.download_file(args.path, args.to))
        return 0
    prefix = args.path.rstrip("/") + "/"
    if any(n.startswith(prefix) for n in names):
        for path in run.download_files(prefix, args.to):
            print(path)
        return 0
    raise NotFoundError(f"run {run.id} has no file or folder {args.path!r}; it has: {', '.join(names) or 'nothing'}")


def cmd_env_list(args: argparse.Namespace) -> int:
    from torchyard.environments import list_cached  # noqa: PLC0415

    ws = _workspace(args)
    registered = [e.to_spec_dict() for e in ws.environments.list()]
    cached = list_cached(ws.path)
    if args.json:
        _print_json({"registered": registered, "cached": cached})
        return 0
    _table("registered environments", ["name", "version", "pip", "conda"],
           [[e["name"], e["version"], " ".join(e["pip_packages"]), " ".join(e["conda_packages"])] for e in registered])
    _table("cached builds", ["key", "last used", "pip"],
           [[c["key"], _fmt_time(c["last_used"]), " ".join(c["spec"].get("pip_packages", []))] for c in cached])
    return 0


def _env_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition(":")
    return name, version or None


def cmd_env_show(args: argparse.Namespace) -> int:
    env = _workspace(args).environments.get(*_env_ref(args.name))
    data = env.to_spec_dict()
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            if value not in (None, [], False):
                print(f"{key}: {' '.join(value) if isinstance(value, list) else value}")
    return 0


def cmd_env_register(args: argparse.Namespace) -> int:
    import yaml  # noqa: PLC0415

    from torchyard.spec.estimators import Environment  # noqa: PLC0415

    if not os.path.isfile(args.file):
        raise UsageError(f"{args.file}: not found")
    try:
        with open(args.file) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise UsageError(f"{args.file}: malformed YAML: {str(err).splitlines()[0]}") from None
    allowed = {"name", "version", "pip", "pip_packages", "conda", "conda_packages", "python",
               "pip_requirements_file", "conda_dependencies_file", "user_managed"}
    if not isinstance(data, dict) or "name" not in data:
        raise UsageError(f"{args.file}: expected a mapping with at least 'name'")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{args.file}: unknown field {unknown[0]!r}; use {', '.join(sorted(allowed))}")
    base = os.path.dirname(os.path.abspath(args.file))

    def rel(p: str | None) -> str | None:
        return os.path.join(base, p) if p else None

    env = Environment(
        str(data["name"]),
        None if data.get("version") is None else str(data["version"]),
        pip=list(data.get("pip") or data.get("pip_packages") or []),
        conda=list(data.get("conda") or data.get("conda_packages") or []),
        python=data.get("python"),
        pip_requirements_file=rel(data.get("pip_requirements_file")),
        conda_dependencies_file=rel(data.get("conda_dependencies_file")),
        user_managed=bool(data.get("user_managed", False)),
    )
    registered = _workspace(args).environments.register(env)
    print(f"{registered.name}:{registered.version}")
    return 0


def cmd_env_export(args: argparse.Namespace) -> int:
    run = _workspace(args).get_run(args.run_id)
    env = run.get_environment()
    if not env:
        raise UsageError(f"run {run.id} has no recorded environment (it has not started yet)")
    print(f"# torchyard: environment of run {run.id}")
    print(f"# base interpreter: {env.get('base_python')}; environment python: {env.get('python')}")
    if env.get("key"):
        print("# these packages are layered over the base interpreter (uv venv --system-site-packages)")
    for line in env.get("packages", []):
        print(line)
    return 0


def cmd_env_prune(args: argparse.Namespace) -> int:
    from torchyard.environments import prune  # noqa: PLC0415
    from torchyard.status import ACTIVE_VALUES  # noqa: PLC0415

    ws = _workspace(args)
    in_use = set()
    for row in ws.store.list_runs():
        if row["status"] in ACTIVE_VALUES:
            key = json.loads(row["details"] or "{}").get("environment", {}).get("key")
            if key:
                in_use.add(key)
    removed = prune(ws.path, args.older_than * 86400, in_use)
    print(f"removed {len(removed)} cached environment(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def _datastore_command(args: argparse.Namespace) -> int:
    from torchyard.cli import datastore as datastore_cli  # noqa: PLC0415

    return datastore_cli.run(args, _workspace(args))


def _compute_command(args: argparse.Namespace) -> int:
    from torchyard.cli import compute as compute_cli  # noqa: PLC0415

    return compute_cli.run(args, _workspace(args))


def _sweep_command(args: argparse.Namespace) -> int:
    from torchyard.cli import sweep as sweep_cli  # noqa: PLC0415

    return sweep_cli.run(args, _workspace(args))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {
        "run": cmd_run,
        "submit": cmd_submit,
        "logs": cmd_logs,
        "metrics": cmd_metrics,
        "cancel": cmd_cancel,
        "download": cmd_download,
    }
    handler: Callable[[argparse.Namespace], int] | None
    if getattr(args, "func", None) is not None:
        handler = args.func
    elif args.command == "datastore":
        handler = _datastore_command
    elif args.command == "sweep":
        handler = _sweep_command
    elif args.command == "compute":
        handler = _compute_command
    elif args.command == "env":
        handler = {"list": cmd_env_list, "show": cmd_env_show, "register": cmd_env_register,
                   "export": cmd_env_export, "prune": cmd_env_prune}.get(args.env_command or "")
        if handler is None:
            parser.parse_args(["env", "--help"])
            return EXIT_USAGE
    elif args.command == "runs":
        handler = {"list": cmd_runs_list, "show": cmd_runs_show}.get(args.runs_command or "")
        if handler is None:
            parser.parse_args(["runs", "--help"])
            return EXIT_USAGE
    elif args.command is None or args.command not in handlers:
        parser.print_help()
        return EXIT_USAGE
    else:
        handler = handlers[args.command]
    from torchyard.errors import TorchyardError  # noqa: PLC0415

    try:
        return handler(args)
    except (TorchyardError, UsageError) as err:
        print(f"torchyard: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
