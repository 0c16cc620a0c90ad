"""Alert subscriptions: who is told of which run events, kept in ``<workspace>/alerts.json``.

A subscription names a webhook URL, the events it wants (run statuses such as ``Failed``,
``Completed``, ``Retrying``, ``Canceled``; the cause ``hung``; ``alert`` for ``run.alert()`` from a
script; ``*`` for all), an optional experiment (else the whole workspace), a payload format
(``generic`` JSON, ``slack``, ``teams``) and a secret the deliveries are signed with (HMAC-SHA256).
Every delivery is appended to ``<workspace>/alerts/deliveries.jsonl``.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torchyard.errors import NotFoundError, SpecError

EVENTS = ("Failed", "Completed", "Canceled", "Retrying", "hung", "alert", "*")
FORMATS = ("generic", "slack", "teams")


class AlertRegistry:
    """The workspace's alert subscriptions (a JSON file, changed under a lock)."""

    def __init__(self, workspace: str) -> None:
        self.path = os.path.join(workspace, "alerts.json")
        self.deliveries = os.path.join(workspace, "alerts", "deliveries.jsonl")

    @contextmanager
    def _locked(self) -> Iterator[builtins.list[dict[str, Any]]]:
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subs = self.list()
            yield subs
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                json.dump(subs, fh, indent=1)
            os.chmod(tmp, 0o600)  # the secrets sign deliveries
            os.replace(tmp, self.path)

    def list(self) -> list[dict[str, Any]]:
        """Every subscription (with its secret)."""
        try:
            with open(self.path) as fh:
                found = json.load(fh)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            from torchyard.errors import WorkspaceError  # noqa: PLC0415

            raise WorkspaceError(f"{self.path} is unreadable ({err}); fix or remove it") from None
        return list(found) if isinstance(found, list) else []

    def add(self, url: str, *, events: builtins.list[str] | None = None, experiment: str | None = None,
            format: str = "generic", secret: str | None = None, created_by: str | None = None) -> dict[str, Any]:
        """Subscribe ``url`` to ``events`` (default: Failed and hung) of ``experiment``'s runs (default:
        every run of the workspace); the new subscription, with its id and secret."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SpecError("url", f"must be an http(s) URL, got {url!r}")
        wanted = list(events or ["Failed", "hung"])
        unknown = [e for e in wanted if e not in EVENTS]
        if unknown:
            raise SpecError("events", f"unknown event {unknown[0]!r}; one of {', '.join(EVENTS)}")
        if format not in FORMATS:
            raise SpecError("format", f"must be one of {', '.join(FORMATS)}, got {format!r}")
        sub = {"id": uuid.uuid4().hex[:12], "url": url, "events": wanted, "experiment": experiment,
               "format": format, "secret": secret or secrets.token_urlsafe(24), "created_at": time.time(),
               "created_by": created_by}
        with self._locked() as subs:
            subs.append(sub)
        return sub

    def remove(self, sub_id: str) -> None:
        """Remove subscription ``sub_id`` (NotFoundError when there is none)."""
        with self._locked() as subs:
            kept = [s for s in subs if s["id"] != sub_id]
            if len(kept) == len(subs):
                raise NotFoundError(f"no alert subscription {sub_id!r}; `torchyard alert list` shows them")
            subs[:] = kept

    def matching(self, event: str, experiment: str | None, cause: str | None = None) -> builtins.list[dict[str, Any]]:
        """The subscriptions that want ``event`` (or ``cause``) of a run of ``experiment``."""
        out = []
        for sub in self.list():
            if sub.get("experiment") not in (None, experiment):
                continue
            events = set(sub.get("events") or [])
            if "*" in events or event in events or (cause is not None and cause in events):
                out.append(sub)
        return out

    def record(self, entry: dict[str, Any]) -> None:
        """Append one delivery's outcome to the log (never fails the caller)."""
        try:
            os.makedirs(os.path.dirname(self.deliveries), exist_ok=True)
            with open(self.deliveries, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError:
            pass

    def history(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The newest ``limit`` deliveries, oldest first."""
        try:
            with open(self.deliveries) as fh:
                lines = fh.readlines()[-limit:]
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
