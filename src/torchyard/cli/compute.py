"""``torchyard compute ...``: attach compute targets by name, list, show and remove them.

``compute add KIND NAME ...`` takes the flags the kind declares as its options (built-in kinds and
third-party ones alike); the flags are built only when that command runs, so other commands start
without importing any target. Attaching imports no engine (no ray, nothing of Slurm).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from torchyard.cli.common import UsageError, add_output, emit, example, table, with_utc

EXIT_USAGE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``compute`` and its subcommands to the main parser's ``subparsers``."""
    cp = subparsers.add_parser(
        "compute",
        help="compute targets: add, list, show, remove",
        description="Compute targets attached to this workspace by name; a job picks one with "
        "compute_target=NAME (SDK) or `compute: NAME` (YAML). 'local' is built in.",
    )
    cp.set_defaults(compute_help=cp.format_help)
    sub = cp.add_subparsers(dest="compute_command", metavar="SUBCOMMAND")

    add = sub.add_parser(
        "add", help="attach a compute target: add KIND NAME [options] (--overwrite replaces one)",
        description="Attach a compute target. KIND is ray, slurm or any installed kind "
        "(the torchyard.compute entry points); `torchyard compute add KIND --help` lists its options.",
    )
    add.add_argument("compute_kind", nargs="?", metavar="KIND")
    add.add_argument("compute_args", nargs=argparse.REMAINDER, metavar="NAME [OPTIONS]")
    add.set_defaults(compute_add_help=add.format_help)
    example(add, "torchyard compute add slurm gpu-cluster --partition gpu --time-limit 04:00:00",
            "torchyard compute add ray ray-cluster --address ray://head:10001 --overwrite")

    ls = sub.add_parser("list", help="compute targets of this workspace",
                        description="The workspace's compute targets: name, kind and settings. "
                        "-o json gives a list of {name, kind, config}.")
    example(add_output(ls), "torchyard compute list -o json")
    show = sub.add_parser("show", help="one compute target's settings",
                          description="One compute target's record {name, kind, config}; JSON unless -o says "
                          "otherwise.")
    show.add_argument("name")
    example(add_output(show, default="json"), "torchyard compute show gpu-cluster -o yaml")
    rm = sub.add_parser("remove", help="detach a compute target (runs keep their records)",
                        description="Detach a compute target; runs that used it keep their records.")
    rm.add_argument("name")
    example(rm, "torchyard compute remove gpu-cluster")
    return cp


def kind_parser(kind: str, cls: Any) -> argparse.ArgumentParser:
    """The flags of ``torchyard compute add KIND``, made from the kind's declared options."""
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    p = argparse.ArgumentParser(prog=f"torchyard compute add {kind}", description=doc)
    example(p, f"torchyard compute add {kind} my-{kind} [OPTIONS]    # then: torchyard run --compute my-{kind} ...")
    p.add_argument("name", help="the name jobs use: compute_target=NAME, `compute: NAME`")
    p.add_argument("--overwrite", action="store_true", help="replace a target already attached under NAME")
    for option in cls.options:
        default = "" if option.default in (None, [], False) else f" (default: {option.default})"
        helptext = option.help + default
        if option.type is bool:
            p.add_argument(option.cli_flag, dest=option.name, action="store_true", help=helptext)
        elif option.type is list:
            p.add_argument(option.cli_flag, dest=option.name, action="append", default=[], metavar="ARG",
                           help=helptext)
        else:
            p.add_argument(option.cli_flag, dest=option.name, type=option.type, choices=option.choices,
                           default=option.default, metavar=None if option.choices else option.name.upper(),
                           help=helptext)
    return p


def _target(kind: str, argv: list[str]) -> Any:
    from torchyard.compute.registry import target_class  # noqa: PLC0415  (imports no engine)

    cls = target_class(kind)
    parsed = kind_parser(kind, cls).parse_args(argv)
    settings = {o.name: getattr(parsed, o.name) for o in cls.options}
    return cls(name=parsed.name, **settings), parsed.name, parsed.overwrite


def run(args: argparse.Namespace, workspace: Any) -> int:
    """Run ``torchyard compute <subcommand>``; returns the exit code."""
    from torchyard.compute.base import ComputeTarget  # noqa: PLC0415

    command = getattr(args, "compute_command", None)
    registry = workspace.compute_targets
    if command == "add":
        if not getattr(args, "compute_kind", None):
            print(args.compute_add_help(), file=sys.stderr, end="")
            return EXIT_USAGE
        configured, name, overwrite = _target(args.compute_kind, list(args.compute_args))
        if not overwrite and name in {r["name"] for r in registry.list()}:
            raise UsageError(f"a compute target {name!r} is already attached; add --overwrite to replace it, or "
                             f"`torchyard compute remove {name}` first")
        if getattr(workspace, "is_remote", False):  # attached on the server (admins)
            found = registry.attach(name, configured)
            print(f"attached compute target {found['name']!r}: {found['kind']} on the server")
            return 0
        target = ComputeTarget.attach(workspace, name, configured)
        print(f"attached compute target {target.name!r}: {target.kind}{_fmt(target.to_config())}")
        return 0
    if command == "list":
        records = registry.list()
        emit(args, [with_utc(r, "attached") for r in records], lambda: table(None, ["name", "kind", "settings"],
                                          [[r["name"], r["kind"], _settings(r.get("config") or {}) or "-"]
                                           for r in records]))
        return 0
    if command == "show":
        record = {"name": "local", "kind": "local", "config": {}} if args.name == "local" else \
            registry.record(args.name)
        emit(args, with_utc(record, "attached"), lambda: _show(record))
        return 0
    if command == "remove":
        registry.remove(args.name)
        print(f"removed compute target {args.name!r}")
        return 0
    print(args.compute_help(), file=sys.stderr, end="")
    return EXIT_USAGE


def _show(record: dict[str, Any]) -> None:
    print(f"name: {record['name']}")
    print(f"kind: {record['kind']}")
    for key, value in sorted((record.get("config") or {}).items()):
        if value not in (None, [], ""):
            print(f"{key}: {value}")


def _settings(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if v not in (None, [], ""))


def _fmt(config: dict[str, Any]) -> str:
    return f"  ({_settings(config)})" if _settings(config) else ""


def register(subparsers: Any) -> None:
    """Add this group to the ``torchyard`` parser; its handler runs the chosen subcommand."""
    from torchyard.cli.common import workspace  # noqa: PLC0415

    add_parser(subparsers).set_defaults(
        func=lambda args: run(args, workspace(args, create=getattr(args, "compute_command", None) == "add")))
