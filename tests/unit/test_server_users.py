"""Users, tokens and the access rule of the team server, on a real SQLite store."""

from __future__ import annotations

import time

import pytest

from torchyard.errors import NotFoundError, SpecError, WorkspaceError
from torchyard.workspace.access import (
    AccessStore,
    Principal,
    at_least,
    check_password,
    experiment_level,
    hash_password,
)


@pytest.fixture
def access(tmp_path):
    from torchyard import Workspace

    ws = Workspace(path=tmp_path / ".torchyard")
    yield AccessStore(ws.store.engine)
    ws.store.dispose()


def test_passwords_are_salted_scrypt_hashes() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one.startswith("scrypt$") and one != two and "correct" not in one
    assert check_password("correct horse", one) and check_password("correct horse", two)
    assert not check_password("correct hors", one)
    assert not check_password("x", "not-a-hash")
    with pytest.raises(SpecError, match="password"):
        hash_password("short")


def test_users_roles_and_no_default_password(access: AccessStore) -> None:
    assert not access.has_admin()
    access.add_user("ana", "ana-password", "admin")
    access.add_user("bo", "bo-password")
    assert access.has_admin()
    assert access.authenticate("ana", "ana-password")["role"] == "admin"
    assert access.authenticate("ana", "wrong-password") is None
    assert access.authenticate("nobody", "whatever-pass") is None
    with pytest.raises(WorkspaceError, match="exists"):
        access.add_user("bo", "another-pass")
    with pytest.raises(SpecError, match="role"):
        access.add_user("cy", "cy-password", "root")
    with pytest.raises(SpecError, match="user"):
        access.add_user("../x", "xx-password")
    access.set_role("bo", "viewer")
    assert {u["name"]: u["role"] for u in access.list_users()} == {"ana": "admin", "bo": "viewer"}


def test_tokens_hashed_scoped_expiring_revocable(access: AccessStore) -> None:
    access.add_user("ana", "ana-password", "member")
    token_id, token = access.create_token("ana", scope="read")
    secret = token.split("_", 2)[2]
    stored = access.list_tokens("ana")
    assert [t["id"] for t in stored] == [token_id] and secret not in repr(stored)
    from sqlalchemy import select

    from torchyard.workspace.schema import api_tokens

    with access.engine.connect() as conn:
        assert secret not in repr(conn.execute(select(api_tokens)).all())  # only its hash is at rest
    found = access.resolve_token(token)
    assert found == Principal(user="ana", role="member", scope="read", kind="api", run_id=None, token_id=token_id)
    assert access.resolve_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert access.resolve_token("ty_" + "0" * 16 + "_nope") is None
    assert access.resolve_token("garbage") is None
    access.revoke_token(token_id)
    assert access.resolve_token(token) is None
    _id, short = access.create_token("ana", expires_in=0.05)
    assert access.resolve_token(short) is not None
    time.sleep(0.1)
    assert access.resolve_token(short) is None
    with pytest.raises(NotFoundError):
        access.revoke_token("ffffffffffffffff")
    with pytest.raises(SpecError, match="scope"):
        access.create_token("ana", scope="root")


@pytest.mark.parametrize(("role", "creator", "grant", "expected"), [
    ("admin", None, None, "MANAGE"),
    ("member", "me", None, "MANAGE"),       # created it
    ("member", "other", None, None),        # no grant: nothing at all
    ("member", "other", "READ", "READ"),
    ("member", "other", "EDIT", "EDIT"),
    ("member", None, "MANAGE", "MANAGE"),
    ("viewer", "other", "MANAGE", "READ"),  # capped
    ("viewer", "other", "EDIT", "READ"),
    ("viewer", "other", None, None),
])
def test_the_access_rule(role: str, creator: str | None, grant: str | None, expected: str | None) -> None:
    assert experiment_level(role, "me", creator, grant) == expected


def test_levels_on_the_store(access: AccessStore) -> None:
    for name, role in (("ana", "member"), ("bo", "member"), ("vi", "viewer"), ("ad", "admin")):
        access.add_user(name, f"{name}-password", role)
    access.claim_experiment("ana-exp", "ana")
    access.claim_experiment("ana-exp", "bo")  # the first creator keeps it
    access.claim_experiment("other", "bo")
    access.grant("ana-exp", "vi", "EDIT", by="ana")
    access.grant("other", "ana", "READ", by="bo")
    p = {n: Principal(user=n, role=r, scope="admin") for n, r in
         (("ana", "member"), ("bo", "member"), ("vi", "viewer"), ("ad", "admin"))}
    assert access.levels(p["ana"]) == {"ana-exp": "MANAGE", "other": "READ"}
    assert access.levels(p["bo"]) == {"other": "MANAGE"}
    assert access.levels(p["vi"]) == {"ana-exp": "READ"}
    assert access.levels(p["ad"]) == {"ana-exp": "MANAGE", "other": "MANAGE"}
    access.grant("ana-exp", "vi", None, by="ana")
    assert access.levels(p["vi"]) == {}
    with pytest.raises(SpecError, match="level"):
        access.grant("other", "vi", "OWNER", by="bo")


def test_scope_and_role_both_bound_a_token() -> None:
    assert Principal("a", "admin", "admin").allows("admin")
    assert not Principal("a", "admin", "write").allows("admin")
    assert Principal("a", "member", "write").allows("write")
    assert not Principal("a", "member", "read").allows("write")
    assert not Principal("a", "viewer", "admin").allows("write")
    assert not Principal("a", "member", "admin").allows("admin")
    assert all(Principal("a", r, s).allows("read") for r in ("admin", "member", "viewer") for s in ("read", "write"))
    assert at_least("MANAGE", "EDIT") and not at_least("READ", "EDIT") and not at_least(None, "READ")


def test_login_limiter_counts_failures_per_key() -> None:
    from torchyard.server.auth import LoginLimiter

    limiter = LoginLimiter(attempts=3, window=60)
    for _ in range(2):
        limiter.failed("ip:1", "user:a")
    assert limiter.retry_after("ip:1", "user:a") is None
    limiter.failed("ip:1", "user:a")
    wait = limiter.retry_after("ip:2", "user:a")  # another address, same user: still limited
    assert wait is not None and 0 < wait <= 60
    assert limiter.retry_after("ip:2", "user:b") is None
    limiter.succeeded("ip:1", "user:a")
    assert limiter.retry_after("ip:1", "user:a") is None


def test_audit_log(access: AccessStore) -> None:
    access.audit("ana", "grant.set", "exp", user="bo", level="READ")
    access.audit(None, "token.revoke", "abc")
    entries = access.audit_entries()
    assert [e["action"] for e in entries] == ["token.revoke", "grant.set"]
    assert '"level": "READ"' in entries[1]["detail"]
