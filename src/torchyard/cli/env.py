"""``torchyard env ...``: registered environments and cached builds."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from torchyard.cli.common import (
    UsageError,
    add_output,
    command,
    emit,
    fmt_time,
    group,
    table,
    with_utc,
    workspace,
)


def cmd_env_list(args: argparse.Namespace) -> int:
    """Registered environments and cached builds.

    -o json gives {"registered": [environment...], "cached": [build...]}; a build's last_used (epoch
    seconds) has last_used_utc (ISO-8601) beside it.

    Example:
      torchyard env list -o yaml"""
    from torchyard.environments import list_cached  # noqa: PLC0415

    ws = workspace(args)
    registered = [e.to_spec_dict() for e in ws.environments.list()]
    cached = [] if getattr(ws, "is_remote", False) else list_cached(ws.path)  # a server's builds stay there

    def render() -> None:
        table("registered environments", ["name", "version", "pip", "conda"],
              [[e["name"], e["version"], " ".join(e["pip_packages"]), " ".join(e["conda_packages"])]
               for e in registered])
        table("cached builds", ["key", "last used", "pip"],
              [[c["key"], fmt_time(c["last_used"]), " ".join(c["spec"].get("pip_packages", []))] for c in cached])

    emit(args, {"registered": registered, "cached": [with_utc(c, "last_used") for c in cached]}, render)
    return 0


def _env_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition(":")
    return name, version or None


def cmd_env_show(args: argparse.Namespace) -> int:
    """Show a registered environment (NAME or NAME:VERSION).

    Example:
      torchyard env show digits-env:2 -o json"""
    env = workspace(args).environments.get(*_env_ref(args.name))
    data = env.to_spec_dict()

    def render() -> None:
        for key, value in data.items():
            if value not in (None, [], False):
                print(f"{key}: {' '.join(value) if isinstance(value, list) else value}")

    emit(args, data, render)
    return 0


def cmd_env_register(args: argparse.Namespace) -> int:
    """Register an environment from a YAML file (name, version, pip, conda, python).

    Example:
      torchyard env register env.yml    # name: digits-env, pip: [torch, scikit-learn]"""
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
    registered = workspace(args, create=True).environments.register(env)
    print(f"{registered.name}:{registered.version}")
    return 0


def cmd_env_export(args: argparse.Namespace) -> int:
    """Print a requirements file that rebuilds a run's environment.

    Example:
      torchyard env export digits_1733600000_ab12cd34 > requirements.txt"""
    ws = workspace(args)
    run = ws.get_run(args.run_id)  # a team server's run: its environment is read through the server
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
    """Remove cached environments that no live run uses.

    Example:
      torchyard env prune --older-than 30"""
    from torchyard.environments import prune  # noqa: PLC0415
    from torchyard.status import ACTIVE_VALUES  # noqa: PLC0415

    ws = workspace(args)
    if getattr(ws, "is_remote", False):  # the server's builds, pruned there (admins)
        removed = ws.client.post("/api/v1/environments/prune", {"older_than_days": args.older_than})["removed"]
        print(f"removed {len(removed)} cached environment(s) on the server" +
              (f": {', '.join(removed)}" if removed else ""))
        return 0
    in_use = set()
    for row in ws.store.list_runs():
        if row["status"] in ACTIVE_VALUES:
            key = json.loads(row["details"] or "{}").get("environment", {}).get("key")
            if key:
                in_use.add(key)
    removed = prune(ws.path, args.older_than * 86400, in_use)
    print(f"removed {len(removed)} cached environment(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def register(sub: Any) -> None:
    env = group(sub, "env", "environments: list, show, register, export, prune", "env_command")
    add_output(command(env, "list", cmd_env_list))
    es = command(env, "show", cmd_env_show)
    es.add_argument("name", help="NAME or NAME:VERSION")
    add_output(es)
    command(env, "register", cmd_env_register).add_argument("file")
    command(env, "export", cmd_env_export).add_argument("run_id")
    command(env, "prune", cmd_env_prune).add_argument(
        "--older-than", type=float, default=7.0, metavar="DAYS", help="unused for this many days (default 7)")
