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


def test_the_page_shell_inlines_what_is_safe_and_keeps_the_order_of_deferred_scripts(tmp_path, monkeypatch):
    """A script that could end (``</script``) or never end (``<!--``) its inline block stays a file,
    and so does every deferred script after a deferred one that stayed a file."""
    (tmp_path / "index.html").write_text(
        '<html><head><script src="/static/a.js" async></script><link rel="stylesheet" href="/static/s.css">'
        '<script src="/static/b.js" defer></script><script src="/static/c.js" defer></script>'
        '<script src="/static/d.js" defer></script></head><body><main></main></body></html>')
    (tmp_path / "a.js").write_text("window.a = 1;")
    (tmp_path / "s.css").write_text("main { color: red }")
    (tmp_path / "b.js").write_text("window.b = 2;")
    (tmp_path / "c.js").write_text("const s = '<!-- x';")
    (tmp_path / "d.js").write_text("window.d = 4;")
    monkeypatch.setattr(server_app, "STATIC", str(tmp_path))
    monkeypatch.setattr(server_app, "_SHELL", {})
    resp = server_app._shell()
    html = resp.body.decode()
    csp = resp.headers["content-security-policy"]
    assert "<script>window.a = 1;</script>" in html and "<style>main { color: red }</style>" in html
    assert '<script src="/static/c.js" defer></script>' in html and '<script src="/static/d.js" defer></script>' in html
    assert html.index("<main>") < html.index("<script>window.b = 2;</script>") < html.index("</body>")
    assert "window.d" not in html and "<!-- x" not in html
    assert csp.count("'sha256-") == 3 and "unsafe-inline" not in csp
    assert server_app._shell().body == resp.body  # built once
