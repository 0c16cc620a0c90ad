"""Delivering run events to the workspace's alert subscriptions (workspace.alerts): one signed POST
per subscription, retried with backoff, each outcome logged.

A delivery's body is JSON; its headers carry ``X-Torchyard-Event``, ``X-Torchyard-Delivery`` (one id
for every try of the same delivery, so a receiver can drop a repeat) and ``X-Torchyard-Signature:
sha256=<hex>``, the HMAC-SHA256 of the body with the subscription's secret. A try that fails (no
connection, a timeout, a 5xx or 429) is repeated after 0.5 s, 1 s, 2 s (4 tries); a 2xx ends it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from torchyard.workspace.alerts import AlertRegistry

TRIES = 4


def sign(secret: str, body: bytes) -> str:
    """The ``X-Torchyard-Signature`` header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(sub: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """The body ``sub``'s format wants: torchyard's own event, or a Slack / Teams message."""
    what = event.get("title") or f"run {event.get('run_id')} {event.get('event')}"
    text = f"{what}: {event['message']}" if event.get("message") else what
    if sub.get("format") == "slack":
        return {"text": text}
    if sub.get("format") == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": what, "text": text}
    return event


def deliver(workspace: str, event: dict[str, Any], *, tries: int = TRIES, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send ``event`` (``event``, ``run_id``, ``experiment``, ``status``, ``message``, ``time``...) to
    every subscription that wants it; the outcomes (also appended to the delivery log). Never raises."""
    registry = AlertRegistry(workspace)
    try:
        subs = registry.matching(str(event.get("event")), event.get("experiment"), event.get("cause"))
    except Exception:  # noqa: BLE001 - an unreadable subscription file must not fail a run
        return []
    if not subs:
        return []
    import httpx  # noqa: PLC0415 - only when someone listens

    outcomes = []
    with httpx.Client(timeout=timeout) as client:
        for sub in subs:
            body = json.dumps(payload(sub, event), default=str).encode()
            delivery = uuid.uuid4().hex
            headers = {"content-type": "application/json", "user-agent": "torchyard-alerts",
                       "x-torchyard-event": str(event.get("event")), "x-torchyard-delivery": delivery,
                       "x-torchyard-signature": sign(sub["secret"], body)}
            status, error, attempt = None, None, 0
            for attempt in range(1, tries + 1):
                try:
                    resp = client.post(sub["url"], content=body, headers=headers)
                    status, error = resp.status_code, None
                    if resp.status_code < 300:
                        break
                    if resp.status_code < 500 and resp.status_code != 429:
                        break  # the receiver refuses it: trying again will not help
                except httpx.HTTPError as err:
                    status, error = None, f"{type(err).__name__}: {err}"
                if attempt < tries:
                    time.sleep(0.5 * 2 ** (attempt - 1))
            outcome = {"delivery": delivery, "subscription": sub["id"], "event": event.get("event"),
                       "run_id": event.get("run_id"), "status": status, "error": error, "tries": attempt,
                       "ok": status is not None and status < 300, "time": time.time()}
            registry.record(outcome)
            outcomes.append(outcome)
    return outcomes


def deliver_detached(workspace: str, event: dict[str, Any]) -> bool:
    """:func:`deliver` in a process of its own, when anyone listens (a supervisor goes on with its run
    meanwhile, and stays single-threaded: it forks local launchers); whether one was started."""
    try:
        if not AlertRegistry(workspace).matching(str(event.get("event")), event.get("experiment"), event.get("cause")):
            return False
    except Exception:  # noqa: BLE001 - an unreadable subscription file must not fail a run
        return False
    subprocess.Popen([sys.executable, "-m", "torchyard.runtime.alerts", workspace, json.dumps(event, default=str)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
    return True


def run_event(row: dict[str, Any], event: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """The event of a run (its store row) that subscribers get."""
    return {"event": event, "run_id": row["id"], "experiment": row.get("experiment"),
            "status": str(row.get("status")), "display_name": row.get("display_name"),
            "message": message, "time": time.time(), **extra}


if __name__ == "__main__":  # python -m torchyard.runtime.alerts WORKSPACE EVENT_JSON (deliver_detached)
    deliver(sys.argv[1], json.loads(sys.argv[2]))
