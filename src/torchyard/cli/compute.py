"""``torchyard compute ...``: attach Ray and Slurm clusters by name, list, show and remove them.

Hooked into the main parser with ``add_parser(subparsers)``; ``run(args, workspace)`` runs the chosen
subcommand. Attaching imports neither ray nor anything of Slurm: it only records settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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

    add = sub.add_parser("add", help="attach (or re-attach) a compute target")
    add.set_defaults(compute_add_help=add.format_help)
    kinds = add.add_subparsers(dest="compute_kind", metavar="KIND")

    ray = kinds.add_parser("ray", help="a Ray cluster (needs `pip install torchyard[ray]` to run jobs)")
    ray.add_argument("name")
    ray.add_argument(
        "--address", default="auto", help='"auto", HOST:PORT of the head node, or ray://HOST:10001 (default: auto)'
    )
    ray.add_argument(
        "--placement",
        default="STRICT_SPREAD",
        choices=["STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK"],
        help="placement-group strategy for the job's nodes (default: STRICT_SPREAD, one node per Ray node)",
    )
    ray.add_argument("--cpus-per-process", type=float, default=1.0, help="CPUs reserved per rank (default: 1)")
    ray.add_argument(
        "--all-outputs", action="store_true", help="also collect other nodes' outputs/ (as outputs/node_K/)"
    )

    slurm = kinds.add_parser("slurm", help="a Slurm cluster reachable with sbatch/squeue/scontrol/scancel")
    slurm.add_argument("name")
    slurm.add_argument("--partition", help="sbatch --partition (default: the cluster's default)")
    slurm.add_argument("--account", help="sbatch --account")
    slurm.add_argument("--qos", help="sbatch --qos")
    slurm.add_argument("--time-limit", help="sbatch --time when the job sets no max_run_duration, e.g. 01:00:00")
    slurm.add_argument(
        "--sbatch-arg", action="append", default=[], metavar="ARG", help="an extra #SBATCH argument (repeatable)"
    )
    slurm.add_argument("--shared-dir", help="a folder every node sees (default: the workspace folder)")
    slurm.add_argument("--python", help="the Python on the nodes that has torchyard (default: this one)")

    sub.add_parser("list", help="compute targets of this workspace").add_argument(
        "--json", action="store_true", help="print machine-readable JSON"
    )
    show = sub.add_parser("show", help="one compute target's settings")
    show.add_argument("name")
    rm = sub.add_parser("remove", help="detach a compute target (runs keep their records)")
    rm.add_argument("name")
    return cp


def _target(args: argparse.Namespace) -> Any:
    kind = args.compute_kind
    if kind == "ray":
        from torchyard.compute.ray import RayCompute  # noqa: PLC0415  (imports no ray)

        return RayCompute(
            address=args.address,
            placement=args.placement,
            cpus_per_process=args.cpus_per_process,
            collect_all_outputs=args.all_outputs,
        )
    from torchyard.compute.slurm import SlurmCompute  # noqa: PLC0415

    return SlurmCompute(
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time_limit=args.time_limit,
        extra_sbatch_args=list(args.sbatch_arg),
        shared_dir=args.shared_dir,
        python=args.python,
    )


def run(args: argparse.Namespace, workspace: Any) -> int:
    """Run ``torchyard compute <subcommand>``; returns the exit code."""
    from torchyard.compute.base import ComputeTarget  # noqa: PLC0415

    command = getattr(args, "compute_command", None)
    registry = workspace.compute_targets
    if command == "add":
        if getattr(args, "compute_kind", None) not in ("ray", "slurm"):
            print(args.compute_add_help(), file=sys.stderr, end="")
            return EXIT_USAGE
        target = ComputeTarget.attach(workspace, args.name, _target(args))
        print(f"attached compute target {target.name!r}: {target.kind}{_fmt(target.to_config())}")
        return 0
    if command == "list":
        records = registry.list()
        if args.json:
            print(json.dumps(records, indent=2))
            return 0
        width = max(len(r["name"]) for r in records)
        for r in records:
            print(f"{r['name']:<{width}}  {r['kind']:<6}{_fmt(r.get('config', {}))}")
        return 0
    if command == "show":
        if args.name == "local":
            print(json.dumps({"name": "local", "kind": "local", "config": {}}, indent=2))
            return 0
        print(json.dumps(registry.record(args.name), indent=2))
        return 0
    if command == "remove":
        registry.remove(args.name)
        print(f"removed compute target {args.name!r}")
        return 0
    print(args.compute_help(), file=sys.stderr, end="")
    return EXIT_USAGE


def _fmt(config: dict[str, Any]) -> str:
    shown = {k: v for k, v in config.items() if v not in (None, [], "")}
    return f"  ({', '.join(f'{k}={v}' for k, v in sorted(shown.items()))})" if shown else ""
