"""Users, API tokens, per-experiment grants and the audit log of the team server (revision 0006).

Passwords are hashed with scrypt (stdlib ``hashlib.scrypt``, a random 16-byte salt, n=2**14, r=8,
p=1); a token is ``ty_<id>_<secret>`` where only SHA-256(secret) is stored (the secret is 32 random
bytes, so a fast hash is enough). The access rule (issue 15) is :func:`experiment_level`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Engine

from torchyard.errors import NotFoundError, SpecError, WorkspaceError
from torchyard.workspace.schema import api_tokens, audit_log, experiment_grants, experiments, users
from torchyard.workspace.store import dialect_insert

ROLES = ("admin", "member", "viewer")
SCOPES = ("read", "write", "admin")
LEVELS = ("READ", "EDIT", "MANAGE")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8


def _rank(level: str | None) -> int:
    return LEVELS.index(level) + 1 if level in LEVELS else 0


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``password``."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise SpecError("password", f"must be at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the user, its role, the token's scope and (a per-run token) its run."""

    user: str
    role: str
    scope: str
    kind: str = "api"
    run_id: str | None = None
    token_id: str | None = None

    def allows(self, permission: str) -> bool:
        """Whether the token's scope and the user's role both allow a route of ``permission``."""
        if permission == "read":
            return True
        if permission == "write":
            return self.scope in ("write", "admin") and self.role in ("admin", "member")
        return self.scope == "admin" and self.role == "admin"


class AccessStore:
    """Users, tokens, grants and the audit log in the workspace's database (``engine``: the Store's)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- users ----------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, role: str = "member") -> None:
        from torchyard.workspace.workspace import check_name  # noqa: PLC0415

        check_name(name, "user")
        if role not in ROLES:
            raise SpecError("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        hashed = hash_password(password)
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first():
                raise WorkspaceError(f"user {name!r} exists already")
            conn.execute(insert(users).values(name=name, password_hash=hashed, role=role, created_at=time.time()))

    def has_admin(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.name).where(users.c.role == "admin", users.c.disabled == 0)).first() is not None

    def get_user(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
        if row is None:
            raise NotFoundError(f"no user {name!r}")
        return dict(row)

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(users.c.name, users.c.role, users.c.created_at, users.c.disabled)
                                .order_by(users.c.name)).mappings().all()
        return [dict(r) for r in rows]

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise SpecError("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        with self.engine.begin() as conn:
            if not conn.execute(update(users).where(users.c.name == name).values(role=role)).rowcount:
                raise NotFoundError(f"no user {name!r}")

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_password(password)
        with self.engine.begin() as conn:
            if not conn.execute(update(users).where(users.c.name == name).values(password_hash=hashed)).rowcount:
                raise NotFoundError(f"no user {name!r}")

    def authenticate(self, name: str, password: str) -> dict[str, Any] | None:
        """The user row when ``password`` is right and the user is enabled, else None."""
        try:
            row = self.get_user(name)
        except NotFoundError:
            check_password(password, "scrypt$16384$8$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            return None  # same work as a wrong password: no user enumeration by timing
        if row["disabled"] or not check_password(password, row["password_hash"]):
            return None
        return row

    # ---- tokens ---------------------------------------------------------------------------------

    def create_token(self, user: str, *, scope: str = "write", expires_in: float | None = 90 * 86400,
                     kind: str = "api", run_id: str | None = None, description: str | None = None) -> tuple[str, str]:
        """A new token for ``user``: (token id, the full token — shown once, stored only hashed)."""
        if scope not in SCOPES:
            raise SpecError("scope", f"must be one of {', '.join(SCOPES)}, got {scope!r}")
        if expires_in is not None and expires_in <= 0:
            raise SpecError("expires", "must be positive")
        self.get_user(user)
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(insert(api_tokens).values(
                id=token_id, user_name=user, secret_hash=_secret_hash(secret), scope=scope, kind=kind,
                run_id=run_id, description=description, created_at=now,
                expires_at=None if expires_in is None else now + expires_in,
            ))
        return token_id, f"ty_{token_id}_{secret}"

    def resolve_token(self, token: str) -> Principal | None:
        """The principal of a valid (known, unexpired, unrevoked, enabled user) token, else None."""
        if not token.startswith("ty_") or token.count("_") < 2:
            return None
        token_id, _, secret = token[3:].partition("_")
        if len(token_id) != 16 or not secret:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens, users.c.role, users.c.disabled)
                .join(users, users.c.name == api_tokens.c.user_name)
                .where(api_tokens.c.id == token_id)
            ).mappings().first()
        if row is None or not hmac.compare_digest(row["secret_hash"], _secret_hash(secret)):
            return None
        if row["revoked_at"] is not None or row["disabled"]:
            return None
        if row["expires_at"] is not None and row["expires_at"] <= time.time():
            return None
        return Principal(user=row["user_name"], role=row["role"], scope=row["scope"], kind=row["kind"],
                         run_id=row["run_id"], token_id=token_id)

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        q = select(api_tokens.c.id, api_tokens.c.user_name, api_tokens.c.scope, api_tokens.c.kind,
                   api_tokens.c.run_id, api_tokens.c.description, api_tokens.c.created_at,
                   api_tokens.c.expires_at, api_tokens.c.revoked_at).order_by(api_tokens.c.created_at)
        if user is not None:
            q = q.where(api_tokens.c.user_name == user)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    def revoke_token(self, token_id: str, *, user: str | None = None) -> None:
        """Revoke a token (``user``: only if it is that user's)."""
        cond = api_tokens.c.id == token_id
        if user is not None:
            cond = and_(cond, api_tokens.c.user_name == user)
        with self.engine.begin() as conn:
            if not conn.execute(update(api_tokens).where(cond).values(revoked_at=time.time())).rowcount:
                raise NotFoundError(f"no token {token_id!r}")

    def revoke_run_tokens(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.run_id == run_id, api_tokens.c.revoked_at.is_(None))
                         .values(revoked_at=time.time()))

    # ---- grants and ownership -------------------------------------------------------------------

    def grant(self, experiment: str, user: str, level: str | None, *, by: str | None) -> None:
        """Give ``user`` ``level`` (READ, EDIT, MANAGE) on ``experiment``; None removes the grant."""
        if level is not None and level not in LEVELS:
            raise SpecError("level", f"must be one of {', '.join(LEVELS)}, got {level!r}")
        self.get_user(user)
        with self.engine.begin() as conn:
            conn.execute(delete(experiment_grants).where(experiment_grants.c.experiment == experiment,
                                                         experiment_grants.c.user_name == user))
            if level is not None:
                conn.execute(insert(experiment_grants).values(experiment=experiment, user_name=user, level=level,
                                                              granted_by=by, granted_at=time.time()))

    def grants_of(self, experiment: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(experiment_grants.c.user_name, experiment_grants.c.level)
                                .where(experiment_grants.c.experiment == experiment)).all()
        return {u: lvl for u, lvl in rows}

    def claim_experiment(self, experiment: str, user: str) -> None:
        """Record ``user`` as the creator of ``experiment`` (inserting it if new; kept if it had one)."""
        # One statement, so that two first submits into a new experiment at once cannot both insert.
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(self.engine, experiments).values(name=experiment, created_at=time.time(), created_by=user)
                         .on_conflict_do_nothing(index_elements=["name"]))

    def level(self, principal: Principal, experiment: str) -> str | None:
        """``principal``'s level on ``experiment`` (None: it may not even see it)."""
        return self.levels(principal, [experiment]).get(experiment)

    def levels(self, principal: Principal, names: list[str] | None = None) -> dict[str, str]:
        """``{experiment: level}`` of every experiment (of ``names``) ``principal`` may see."""
        q = select(experiments.c.name, experiments.c.created_by, experiment_grants.c.level).select_from(
            experiments.outerjoin(experiment_grants, and_(experiment_grants.c.experiment == experiments.c.name,
                                                          experiment_grants.c.user_name == principal.user)))
        if names is not None:
            q = q.where(experiments.c.name.in_(names))
        if principal.role != "admin":
            q = q.where(or_(experiment_grants.c.level.is_not(None), experiments.c.created_by == principal.user))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = {}
        for name, creator, grant in rows:
            found = experiment_level(principal.role, principal.user, creator, grant)
            if found is not None:
                out[name] = found
        return out

    # ---- audit ----------------------------------------------------------------------------------

    def audit(self, actor: str | None, action: str, target: str | None, **detail: Any) -> None:
        """Append to the audit log: who (None: the server's own CLI), what, on what, details."""
        with self.engine.begin() as conn:
            conn.execute(insert(audit_log).values(ts=time.time(), user_name=actor, action=action, target=target,
                                                  detail=json.dumps(detail, default=str) if detail else None))

    def audit_entries(self, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before is not None:
            q = q.where(audit_log.c.id < before)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]


def experiment_level(role: str, user: str, creator: str | None, grant: str | None) -> str | None:
    """The rule: an admin has MANAGE everywhere; a member has MANAGE on the experiments it created;
    elsewhere a user has exactly its grant (None: nothing, not even the name); a viewer is capped at READ."""
    if role == "admin":
        return "MANAGE"
    found = grant
    if role == "member" and creator == user:
        found = "MANAGE"
    if found is None:
        return None
    if role == "viewer":
        return "READ"
    return found


def at_least(level: str | None, wanted: str) -> bool:
    """Whether ``level`` is ``wanted`` or more (READ < EDIT < MANAGE)."""
    return _rank(level) >= _rank(wanted)
