"""What the integration tests share: one throwaway PostgreSQL server for the whole session, and a
fresh database on it per test that asks (dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pgserver
import pytest


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The admin URL of one throwaway PostgreSQL server for the whole session (skips without one)."""
    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(f"no throwaway PostgreSQL server: {reason}")
    server = pgserver.PgServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_admin(pg_url: str) -> str:
    """The same server's admin URL, by the name some modules use."""
    return pg_url


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server, dropped when the test ends."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        yield pg_url.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()
