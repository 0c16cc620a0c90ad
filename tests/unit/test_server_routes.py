"""Fail-closed routes: every route of the team server declares a permission, only the login page and
its assets are public, and the app refuses to build with a route that declares none."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from starlette.routing import Route  # noqa: E402

from torchyard.server import app as server_app  # noqa: E402
from torchyard.server.routing import PERMISSIONS, Endpoint  # noqa: E402

PUBLIC_ROUTES = {("POST", "/api/v1/login"), ("GET", "/login"), ("GET", "/static/{name}")}


@pytest.fixture
def team_app(tmp_path):
    from torchyard import Workspace

    ws = Workspace(path=tmp_path / ".torchyard")
    yield server_app.create_app(ws, hosts=None, users=True)
    ws.store.dispose()


def test_every_route_declares_a_known_permission(team_app) -> None:
    routes = [r for r in team_app.routes if isinstance(r, Route)]
    assert len(routes) == len(team_app.routes) >= 40  # nothing mounted around the declarations
    for route in routes:
        assert getattr(route.endpoint, "permission", None) in PERMISSIONS, route.path
    declared = {(ep.method, ep.path) for ep in server_app.ENDPOINTS}
    served = {(m, r.path) for r in routes for m in (r.methods or ()) if m != "HEAD"}
    assert served == declared


def test_only_the_login_page_is_public() -> None:
    public = {(ep.method, ep.path) for ep in server_app.ENDPOINTS if ep.permission == "public"}
    assert public == PUBLIC_ROUTES


def test_writes_are_never_read_routes() -> None:
    for ep in server_app.ENDPOINTS:
        if ep.method in ("POST", "PUT", "DELETE", "PATCH") and (ep.method, ep.path) not in PUBLIC_ROUTES:
            # reading-scoped exceptions: a session ends itself and users manage their own tokens
            allowed_read = {("POST", "/api/v1/logout"), ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/{token_id}")}
            assert ep.permission != "read" or (ep.method, ep.path) in allowed_read, ep.path


def test_a_route_without_a_permission_is_refused(tmp_path) -> None:
    from torchyard import Workspace

    def handler(request):  # pragma: no cover - never served
        raise AssertionError

    ws = Workspace(path=tmp_path / ".torchyard")
    server_app.ENDPOINTS.append(Endpoint("GET", "/api/v1/undeclared", handler, "", "undeclared"))
    try:
        with pytest.raises(RuntimeError, match="declares no permission"):
            server_app.create_app(ws, hosts=None, users=True)
    finally:
        server_app.ENDPOINTS.pop()
        ws.store.dispose()


def test_endpoint_rejects_an_unknown_permission() -> None:
    with pytest.raises(ValueError, match="permission"):
        server_app.endpoint("GET", "/x", permission="everyone")
