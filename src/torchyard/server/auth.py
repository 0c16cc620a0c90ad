"""Who a request acts as, and what it may do (the team server, issue 15).

Two modes: :class:`LocalAuth` (``torchyard ui``: no token, or one shared token, acting as a local
admin) and :class:`ServerAuth` (``torchyard server``: users, hashed API tokens, browser sessions).
The middleware calls ``authenticate(headers)``; each route's wrapper (``app._guard``) then checks the
route's declared permission against the token's scope and the user's role, and the experiment rule
(``workspace.access.experiment_level``) is applied wherever a route touches a run or an experiment.
"""

from __future__ import annotations

import contextvars
import hmac
import threading
import time
from collections import deque
from typing import Any

from torchyard.errors import TorchyardError
from torchyard.workspace.access import AccessStore, Principal, at_least

SESSION_COOKIE = "torchyard_session"
SESSION_SECONDS = 12 * 3600
LOCAL = Principal(user="local", role="admin", scope="admin", kind="local")

#: the principal and the route permission of the request being handled (set by app._guard)
CURRENT: contextvars.ContextVar[tuple[Principal, str] | None] = contextvars.ContextVar("torchyard_principal",
                                                                                      default=None)


class Forbidden(TorchyardError):
    """The caller may see the thing but not do this to it (HTTP 403)."""


class Unauthorized(TorchyardError):
    """No valid credentials (HTTP 401)."""


def bearer(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class LocalAuth:
    """``torchyard ui``: everyone (or, with ``token``, whoever carries it) is the local admin."""

    users = False

    def __init__(self, token: str | None) -> None:
        self.token = token

    def authenticate(self, headers: dict[str, str]) -> tuple[Principal | None, bool]:
        """(principal or None, whether it came from a cookie)."""
        if self.token is None:
            return LOCAL, False
        offered = bearer(headers)
        if offered is not None and hmac.compare_digest(offered.encode(), self.token.encode()):
            return LOCAL, False
        offered = cookie(headers, "torchyard_token")
        if offered is not None and hmac.compare_digest(offered.encode(), self.token.encode()):
            return LOCAL, True
        return None, False

    def levels(self, principal: Principal, names: list[str] | None) -> dict[str, str] | None:
        return None  # every experiment, MANAGE

    def audit(self, *args: Any, **kw: Any) -> None:
        pass


class ServerAuth:
    """``torchyard server``: users and tokens in the workspace's database."""

    users = True

    def __init__(self, engine: Any) -> None:
        self.access = AccessStore(engine)
        self.limiter = LoginLimiter()

    def authenticate(self, headers: dict[str, str]) -> tuple[Principal | None, bool]:
        offered = bearer(headers)
        if offered is not None:
            found = self.access.resolve_token(offered)
            if found is not None and found.run_id is not None and self._ended(found.run_id):
                return None, False  # a run's token expires with the run
            return found, False
        offered = cookie(headers, SESSION_COOKIE)
        if offered is not None:
            found = self.access.resolve_token(offered)
            if found is not None and found.kind == "session":
                return found, True
        return None, False

    def levels(self, principal: Principal, names: list[str] | None) -> dict[str, str] | None:
        if principal.role == "admin":
            return None
        return self.access.levels(principal, names)

    def _ended(self, run_id: str) -> bool:
        from sqlalchemy import select  # noqa: PLC0415

        from torchyard.status import TERMINAL_VALUES  # noqa: PLC0415
        from torchyard.workspace.schema import runs  # noqa: PLC0415

        with self.access.engine.connect() as conn:
            status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        return status is None or status in TERMINAL_VALUES

    def audit(self, actor: str | None, action: str, target: str | None, **detail: Any) -> None:
        self.access.audit(actor, action, target, **detail)


class LoginLimiter:
    """At most ``attempts`` failed logins per client address and per user name in ``window`` seconds;
    then 429 with Retry-After until the oldest failure leaves the window."""

    def __init__(self, attempts: int = 5, window: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float | None:
        now = time.monotonic()
        worst = None
        with self._lock:
            for key in keys:
                q = self._failures.get(key)
                while q and q[0] <= now - self.window:
                    q.popleft()
                if q is not None and len(q) >= self.attempts:
                    wait = q[0] + self.window - now
                    worst = wait if worst is None else max(worst, wait)
        return worst

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.clear()
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def current() -> tuple[Principal, str]:
    """The principal and route permission of the request being handled (fail closed without one)."""
    found = CURRENT.get()
    if found is None:
        raise Unauthorized("no authenticated caller")
    return found


def require_experiment(auth: Any, experiment: str, wanted: str | None = None) -> str:
    """Check the current caller's level on ``experiment``: NotFound (as if it did not exist) without
    any, Forbidden below ``wanted`` (default: READ for read routes, EDIT for write, MANAGE for admin)."""
    from torchyard.errors import NotFoundError  # noqa: PLC0415

    principal, permission = current()
    wanted = wanted or {"read": "READ", "write": "EDIT"}.get(permission, "MANAGE")
    levels = auth.levels(principal, [experiment])
    level = "MANAGE" if levels is None else levels.get(experiment)
    if level is None:  # hidden (404) whether it exists or not, but never claimed not to exist
        raise NotFoundError(f"no experiment {experiment!r} that {principal.user} can see: it does not exist, or "
                            f"{principal.user} has no grant on it (an admin gives one: `torchyard server grant "
                            f"{experiment} {principal.user} READ`)")
    if not at_least(level, wanted):
        raise Forbidden(f"{principal.user} has {level} on experiment {experiment!r}; this needs {wanted}")
    return level
