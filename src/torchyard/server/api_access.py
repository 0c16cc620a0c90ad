"""The team server's access routes: login/logout, who am I, users, tokens, experiment grants, audit.

Every route is declared with :func:`torchyard.server.app.endpoint` like the rest; ``public`` only for
logging in. Permission changes are written to the audit log.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from torchyard.errors import NotSupportedError, SpecError
from torchyard.server.auth import SESSION_COOKIE, SESSION_SECONDS, Forbidden, current, require_experiment
from torchyard.server.routing import ADMIN, PUBLIC, READ, WRITE, _ctx, _int, _json, endpoint
from torchyard.server.wire import AddUser, CreateToken, Login, PutGrant, SetRole, parsed
from torchyard.workspace.access import LEVELS, SCOPES

MAX_TOKEN_DAYS = 366


def _str(value: str | None, name: str, *, required: bool = True, limit: int = 256) -> str | None:
    """A string field's value (its type checked by ``server/wire.py``): non-empty, at most ``limit``."""
    if value is None and not required:
        return None
    if not value or len(value) > limit:
        raise SpecError(name, f"must be a non-empty string of at most {limit} characters")
    return value


def _users(request: Request) -> Any:
    auth = _ctx(request).auth
    if not getattr(auth, "users", False):
        raise NotSupportedError("users", "this is `torchyard ui` (one local user); `torchyard server` has users")
    return auth


# ---- sessions ---------------------------------------------------------------------------------------


@endpoint("POST", "/api/v1/login", permission=PUBLIC, body=Login)
async def login(request: Request) -> Response:
    """Log in with {"user", "password"}: sets an HttpOnly session cookie (12 h). 429 after 5 failures."""
    import asyncio  # noqa: PLC0415

    auth = _users(request)
    body = parsed(request, Login)
    user = _str(body.user, "user", limit=128) or ""
    password = _str(body.password, "password", limit=1024) or ""
    client = request.client.host if request.client else "?"
    keys = (f"ip:{client}", f"user:{user}")
    wait = auth.limiter.retry_after(*keys)
    if wait is not None:
        return Response(json.dumps({"error": {"status": 429, "message": "too many failed logins; try later"}}),
                        status_code=429, media_type="application/json",
                        headers={"retry-after": str(max(1, int(wait + 0.999)))})
    row = await asyncio.to_thread(auth.access.authenticate, user, password)
    if row is None:
        auth.limiter.failed(*keys)
        await asyncio.to_thread(auth.audit, user, "login.failed", user, client=client)
        return Response(json.dumps({"error": {"status": 401, "message": "wrong user name or password"}}),
                        status_code=401, media_type="application/json")
    auth.limiter.succeeded(*keys)
    scope = "admin" if row["role"] == "admin" else "write" if row["role"] == "member" else "read"
    _id, token = await asyncio.to_thread(auth.access.create_token, user, scope=scope, expires_in=SESSION_SECONDS,
                                         kind="session", description="browser session")
    response = _json({"user": user, "role": row["role"]})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/")
    return response


@endpoint("POST", "/api/v1/logout", permission=READ)
def logout(request: Request) -> Response:
    """End this session (its token is revoked) or, with a bearer token, revoke that token."""
    auth = _users(request)
    principal, _ = current()
    if principal.token_id:
        auth.access.revoke_token(principal.token_id)
    response = _json({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@endpoint("GET", "/api/v1/me", permission=READ)
def whoami(request: Request) -> Response:
    """The caller: user, role, the token's scope and kind."""
    principal, _ = current()
    return _json({"user": principal.user, "role": principal.role, "scope": principal.scope,
                  "kind": principal.kind, "run_id": principal.run_id})


# ---- users (admins) -----------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/users", permission=ADMIN)
def list_users(request: Request) -> Response:
    """Every user with its role."""
    return _json({"users": _users(request).access.list_users()})


@endpoint("POST", "/api/v1/users", permission=ADMIN, body=AddUser, status=201)
async def add_user(request: Request) -> Response:
    """Add a user: {"name", "password", "role": admin|member|viewer}."""
    import asyncio  # noqa: PLC0415

    auth = _users(request)
    body = parsed(request, AddUser)
    name, password = _str(body.name, "name", limit=100) or "", _str(body.password, "password", limit=1024) or ""
    role = _str(body.role, "role", required=False, limit=16) or "member"
    principal, _ = current()
    await asyncio.to_thread(auth.access.add_user, name, password, role)
    await asyncio.to_thread(auth.audit, principal.user, "user.add", name, role=role)
    return _json({"name": name, "role": role}, 201)


@endpoint("POST", "/api/v1/users/{name}/role", permission=ADMIN, body=SetRole)
async def set_role(request: Request) -> Response:
    """Change a user's role: {"role": admin|member|viewer}."""
    import asyncio  # noqa: PLC0415

    auth = _users(request)
    role = _str(parsed(request, SetRole).role, "role", limit=16) or ""
    name = request.path_params["name"]
    principal, _ = current()
    await asyncio.to_thread(auth.access.set_role, name, role)
    await asyncio.to_thread(auth.audit, principal.user, "user.role", name, role=role)
    return _json({"name": name, "role": role})


@endpoint("GET", "/api/v1/audit", permission=ADMIN, params=(
    ("limit", "integer", "entries, 1-1000 (default 100)"),
    ("before", "integer", "only entries older than this id (paging)"),
))
def audit(request: Request) -> Response:
    """The audit log, newest first: permission changes, tokens, cancels, deletes, failed logins."""
    auth = _users(request)
    limit = _int(request, "limit", 100, 1, 1000) or 100
    return _json({"entries": auth.access.audit_entries(limit, _int(request, "before", None, 0, 1 << 62))})


# ---- tokens (each user its own) -------------------------------------------------------------------


@endpoint("GET", "/api/v1/tokens", permission=READ)
def list_tokens(request: Request) -> Response:
    """The caller's tokens (ids, scopes, expiry; never their secrets)."""
    principal, _ = current()
    return _json({"tokens": _users(request).access.list_tokens(principal.user)})


@endpoint("POST", "/api/v1/tokens", permission=READ, body=CreateToken, status=201)
async def create_token(request: Request) -> Response:
    """A new API token for the caller: {"scope": read|write|admin, "days": N, "description"}; shown once.
    Its scope can be no wider than the caller's own token."""
    import asyncio  # noqa: PLC0415

    auth = _users(request)
    body = parsed(request, CreateToken)
    scope = _str(body.scope, "scope", required=False, limit=16) or "read"
    if scope not in SCOPES:
        raise SpecError("scope", f"must be one of {', '.join(SCOPES)}")
    principal, _ = current()
    if SCOPES.index(scope) > SCOPES.index(principal.scope):
        raise Forbidden(f"a {principal.scope}-scoped token cannot make a {scope}-scoped one")
    days = body.days
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise SpecError("days", f"must be a number of days between 0 and {MAX_TOKEN_DAYS}")
    token_id, token = await asyncio.to_thread(auth.access.create_token, principal.user, scope=scope,
                                              expires_in=float(days) * 86400,
                                              description=_str(body.description, "description", required=False, limit=200))
    await asyncio.to_thread(auth.audit, principal.user, "token.create", token_id, scope=scope, days=days)
    return _json({"id": token_id, "token": token, "scope": scope}, 201)


@endpoint("DELETE", "/api/v1/tokens/{token_id}", permission=READ)
def revoke_token(request: Request) -> Response:
    """Revoke one of the caller's tokens (an admin: anyone's)."""
    auth = _users(request)
    principal, _ = current()
    token_id = request.path_params["token_id"]
    auth.access.revoke_token(token_id, user=None if principal.role == "admin" and principal.scope == "admin"
                             else principal.user)
    auth.audit(principal.user, "token.revoke", token_id)
    return _json({"id": token_id, "revoked": True})


# ---- grants -----------------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/experiments/{name}/grants", permission=READ)
def list_grants(request: Request) -> Response:
    """Who has which grant on an experiment (needs MANAGE on it)."""
    ctx = _ctx(request)
    name = request.path_params["name"]
    require_experiment(ctx.auth, name, "MANAGE")
    return _json({"experiment": name, "grants": _users(request).access.grants_of(name)})


@endpoint("PUT", "/api/v1/experiments/{name}/grants/{user}", permission=WRITE, body=PutGrant)
async def put_grant(request: Request) -> Response:
    """Give a user READ, EDIT or MANAGE on an experiment: {"level": ...} (needs MANAGE on it)."""
    import asyncio  # noqa: PLC0415

    ctx = _ctx(request)
    auth = _users(request)
    name, user = request.path_params["name"], request.path_params["user"]
    level = _str(parsed(request, PutGrant).level, "level", limit=16) or ""
    if level not in LEVELS:
        raise SpecError("level", f"must be one of {', '.join(LEVELS)}")
    await asyncio.to_thread(require_experiment, ctx.auth, name, "MANAGE")
    principal, _ = current()
    await asyncio.to_thread(auth.access.grant, name, user, level, by=principal.user)
    await asyncio.to_thread(auth.audit, principal.user, "grant.set", name, user=user, level=level)
    return _json({"experiment": name, "user": user, "level": level})


@endpoint("DELETE", "/api/v1/experiments/{name}/grants/{user}", permission=WRITE)
def delete_grant(request: Request) -> Response:
    """Remove a user's grant on an experiment (needs MANAGE on it)."""
    ctx = _ctx(request)
    auth = _users(request)
    name, user = request.path_params["name"], request.path_params["user"]
    require_experiment(ctx.auth, name, "MANAGE")
    principal, _ = current()
    auth.access.grant(name, user, None, by=principal.user)
    auth.audit(principal.user, "grant.remove", name, user=user)
    return _json({"experiment": name, "user": user, "level": None})
