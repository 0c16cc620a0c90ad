"""``torchyard service list|show|logs|delete``: the model services deployed in this workspace
(``Model.deploy``, ``torchyard model deploy``), locally or on a Ray cluster."""

from __future__ import annotations

import argparse
import time
from typing import Any

from torchyard.cli.common import add_output, command, emit, fmt_time, group, table, with_utc, workspace


def _service(args: argparse.Namespace) -> Any:
    from torchyard.models.webservice import Webservice  # noqa: PLC0415

    return Webservice(workspace(args), args.name)


def cmd_list(args: argparse.Namespace) -> int:
    """List the deployed services: name, state, scoring URI, models, where it runs.

    -o json gives a list of {name, state, scoring_uri, models, target, created_at, created_utc}.

    Example:
      torchyard service list -o json"""
    from torchyard.models.webservice import Webservice  # noqa: PLC0415

    services = Webservice.list(workspace(args))
    rows: list[dict[str, Any]] = []
    for svc in services:
        details = svc.get_details()
        rows.append({"name": svc.name, "state": svc.state, "scoring_uri": svc.scoring_uri,
                     "models": [m.get("id") if isinstance(m, dict) else m for m in details.get("models") or []],
                     "target": details.get("deployment_target") or "local", "created_at": details.get("created_at")})

    def render() -> None:
        if not rows:
            print("no services in this workspace (Model.deploy or `torchyard model deploy` makes one)")
            return
        table(None, ["name", "state", "scoring uri", "models", "target", "created"],
              [[r["name"], r["state"], r["scoring_uri"] or "-", ", ".join(r["models"]), r["target"],
                fmt_time(r["created_at"])] for r in rows])

    emit(args, [with_utc(r, "created_at") for r in rows], render)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Show one service: its definition, state, workers and scoring URI.

    Example:
      torchyard service show digits-svc"""
    svc = _service(args)
    details = svc.get_details()
    emit(args, with_utc(details, "created_at"), lambda: _show(svc, details))
    return 0


def _show(svc: Any, details: dict[str, Any]) -> None:
    print(f"service:     {svc.name}")
    print(f"state:       {details['state']}")
    print(f"scoring uri: {details.get('scoring_uri') or '-'}")
    print(f"target:      {details.get('deployment_target') or 'local'}")
    print("models:      " + ", ".join(str(m.get("id") if isinstance(m, dict) else m) for m in details.get("models") or []))
    print(f"entry:       {details.get('entry_script')} in {details.get('source_directory')}")
    print(f"created:     {fmt_time(details.get('created_at'))}")


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a service's logs (the supervisor's and every worker's); --follow keeps printing.

    Example:
      torchyard service logs digits-svc --lines 50"""
    svc = _service(args)
    if not args.follow:
        print(svc.get_logs(args.lines), end="")
        return 0
    printed: dict[str, int] = {}
    try:
        while True:
            for line in svc._new_log_lines(printed):
                print(line, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 130


def cmd_delete(args: argparse.Namespace) -> int:
    """Stop a service (its workers drain) and remove it. Idempotent for a service that exists.

    Example:
      torchyard service delete digits-svc"""
    svc = _service(args)
    svc.delete()
    print(f"torchyard: service {args.name!r} deleted")
    return 0


def register(sub: Any) -> None:
    """Add ``service`` and its subcommands to the ``torchyard`` parser."""
    services = group(sub, "service", "deployed model services: list, show, logs, delete", "service_command")
    ls = command(services, "list", cmd_list)
    add_output(ls)
    show = command(services, "show", cmd_show)
    show.add_argument("name")
    add_output(show)
    logs = command(services, "logs", cmd_logs)
    logs.add_argument("name")
    logs.add_argument("--lines", type=int, default=200, help="the last this many lines of each log (default 200)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    delete = command(services, "delete", cmd_delete)
    delete.add_argument("name")
