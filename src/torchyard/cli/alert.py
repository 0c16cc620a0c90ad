"""``torchyard alert add|list|remove|test|history``: webhooks told of run events (a run Failed,
Completed, Canceled or Retrying, a hang, a script's ``run.alert()``), signed with HMAC-SHA256."""

from __future__ import annotations

import argparse
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


def _folder(args: argparse.Namespace, create: bool = False) -> str:
    ws = workspace(args, create=create)
    if getattr(ws, "is_remote", False):
        raise UsageError("alert subscriptions live in the workspace folder: run this where the server runs")
    return str(ws.path)


def _public(sub: dict[str, Any]) -> dict[str, Any]:
    return with_utc({k: v for k, v in sub.items() if k != "secret"}, "created_at")


def cmd_add(args: argparse.Namespace) -> int:
    """Subscribe a webhook URL to run events; prints its id and the secret deliveries are signed with.

    Events: Failed, Completed, Canceled, Retrying, hung, alert (run.alert() from a script), * (all);
    default Failed and hung. --experiment limits it to one experiment's runs. Each delivery carries
    X-Torchyard-Signature: sha256=HMAC(secret, body); --format slack or teams posts a message those
    accept.

    Example:
      torchyard alert add https://hooks.example.com/T0/B0/x --event Failed --event alert --format slack"""
    from torchyard.workspace.alerts import AlertRegistry  # noqa: PLC0415

    sub = AlertRegistry(_folder(args, create=True)).add(args.url, events=args.event or None, experiment=args.experiment,
                                                        format=args.format, secret=args.secret)
    emit(args, lambda: with_utc(sub, "created_at"),
         lambda: print(f"alert {sub['id']}: {', '.join(sub['events'])} of "
                       f"{'experiment ' + sub['experiment'] if sub['experiment'] else 'every run'} to {sub['url']}"
                       f"\nsecret (signs every delivery; shown once): {sub['secret']}"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List the alert subscriptions (without their secrets).

    Example:
      torchyard alert list -o json"""
    from torchyard.workspace.alerts import AlertRegistry  # noqa: PLC0415

    subs = [_public(s) for s in AlertRegistry(_folder(args)).list()]
    emit(args, subs, lambda: table(None, ["id", "events", "experiment", "format", "url", "created"],
                                   [[s["id"], ", ".join(s["events"]), s["experiment"] or "*", s["format"], s["url"],
                                     fmt_time(s["created_at"])] for s in subs]) if subs else
         print("no alert subscriptions (`torchyard alert add URL` makes one)"))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove an alert subscription.

    Example:
      torchyard alert remove 3f2a9c1d0b7e"""
    from torchyard.workspace.alerts import AlertRegistry  # noqa: PLC0415

    AlertRegistry(_folder(args)).remove(args.id)
    print(f"torchyard: alert {args.id} removed")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Send a test event to one subscription now, and say what its URL answered.

    Example:
      torchyard alert test 3f2a9c1d0b7e"""
    import time  # noqa: PLC0415

    from torchyard.runtime.alerts import deliver  # noqa: PLC0415
    from torchyard.workspace.alerts import AlertRegistry  # noqa: PLC0415

    folder = _folder(args)
    subs = {s["id"]: s for s in AlertRegistry(folder).list()}
    if args.id not in subs:
        raise UsageError(f"no alert subscription {args.id!r}; `torchyard alert list` shows them")
    sub = subs[args.id]
    name = next((e for e in sub["events"] if e != "*"), "Failed")
    event = {"event": name, "run_id": "test", "cause": name if name == "hung" else None,
             "experiment": sub["experiment"], "status": "Failed", "message": "a test event from torchyard alert test",
             "time": time.time(), "test": True}
    outcome = next((o for o in deliver(folder, event) if o["subscription"] == sub["id"]), None)
    if outcome is None:
        raise UsageError(f"alert {sub['id']} does not take the event {event['event']!r}")
    print(f"torchyard: alert {sub['id']}: {'delivered' if outcome['ok'] else 'not delivered'} "
          f"(HTTP {outcome['status'] or '-'}, {outcome['tries']} tr{'y' if outcome['tries'] == 1 else 'ies'}"
          f"{', ' + outcome['error'] if outcome['error'] else ''})")
    return 0 if outcome["ok"] else 1


def cmd_history(args: argparse.Namespace) -> int:
    """The latest deliveries: when, which event of which run, to which subscription, and what came back.

    Example:
      torchyard alert history --limit 20"""
    from torchyard.workspace.alerts import AlertRegistry  # noqa: PLC0415

    rows = [with_utc(r, "time") for r in AlertRegistry(_folder(args)).history(args.limit)]
    emit(args, rows, lambda: table(None, ["delivery", "time", "event", "run", "alert", "answer", "tries"],
                                   [[r["delivery"], fmt_time(r["time"]), r["event"], r["run_id"], r["subscription"],
                                     r["status"] or r["error"], r["tries"]] for r in rows]))
    return 0


def register(sub: Any) -> None:
    """Add ``alert`` and its subcommands to the ``torchyard`` parser."""
    alerts = group(sub, "alert", "webhooks told of run events: add, list, remove, test, history", "alert_command")
    add = command(alerts, "add", cmd_add)
    add.add_argument("url", help="the webhook's http(s) URL")
    add.add_argument("--event", action="append", metavar="EVENT",
                     help="Failed, Completed, Canceled, Retrying, hung, alert or * (repeatable; default Failed, hung)")
    add.add_argument("--experiment", "-x", help="only this experiment's runs (default: every run)")
    add.add_argument("--format", default="generic", choices=("generic", "slack", "teams"),
                     help="the body: torchyard's event (generic), or a Slack / Teams message")
    add.add_argument("--secret", help="sign with this secret (default: a new random one, printed once)")
    add_output(add)
    add_output(command(alerts, "list", cmd_list))
    rm = command(alerts, "remove", cmd_remove)
    rm.add_argument("id")
    test = command(alerts, "test", cmd_test)
    test.add_argument("id")
    hist = command(alerts, "history", cmd_history)
    hist.add_argument("--limit", type=int, default=50, help="the newest this many (default 50)")
    add_output(hist)
