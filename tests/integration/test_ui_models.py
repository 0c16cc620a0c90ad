"""The dashboard's models and services: its JSON API against a real ``torchyard ui`` process, and
its pages in real Chromium (Playwright), over a workspace with registered versions (lineage to a
run, aliases, tags and descriptions carrying an XSS payload), a real local service and a real
endpoint with a traffic split. Screenshots go under the folder printed at the start (``-s``)."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from uiserver import XSS, UiServer, make_run, ui_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

SCORE = """
import os
def init():
    print("init: loaded <b>weights</b>", flush=True)
def run(raw_data):
    return {"ok": True}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from torchyard import Endpoint, InferenceConfig, Model, Webservice, Workspace
    from torchyard.workspace.models import ModelRegistry

    root = tmp_path_factory.mktemp("uimodels")
    ws = Workspace(path=root / ".torchyard")
    make_run(ws, "train_1", experiment="digits", display_name="training run")
    weights = root / "model.pt"
    weights.write_bytes(b"weights v1")
    reg = ModelRegistry(ws.store, ws.snapshots)
    reg.register("digits", weights, tags={"stage": "dev", XSS: XSS}, description=XSS,
                 properties={"accuracy": "0.91", "note": XSS}, run_id="train_1", experiment="digits")
    weights.write_bytes(b"weights v2")
    reg.register("digits", weights, tags={"stage": "prod"}, run_id="train_1", experiment="digits")
    reg.set_alias("digits", 2, "champion")
    reg.set_alias("digits", 1, "champion")
    reg.set_alias("digits", 2, "champion")
    reg.register("other", weights, tags={"team": "b"})
    src = root / "serve"
    src.mkdir()
    (src / "score.py").write_text(textwrap.dedent(SCORE))
    ic = InferenceConfig(entry_script="score.py", source_directory=str(src))
    svc = Model.deploy(ws, "digits-svc", [Model(ws, "digits", version=2)], ic)
    try:
        svc.wait_for_deployment(timeout_sec=60)
        ep = Endpoint.create(ws, "web")
        ep.deploy("blue", ["digits:1"], ic)
        ep.deploy("green", ["digits:2"], ic)
        ep.set_traffic({"blue": 80, "green": 20}, mirror=None)
        yield ws
    finally:
        for e in Endpoint.list(ws):
            e.delete()
        for s in Webservice.list(ws):
            s.delete()
        if ws._store is not None:
            ws._store.dispose()


@pytest.fixture(scope="module")
def server(workspace: Any) -> Iterator[UiServer]:
    with ui_server(workspace.path) as srv:
        yield srv


def test_models_and_services_api(server: UiServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        models = client.get("/api/v1/models").json()["models"]
        assert [m["id"] for m in models] == ["digits:2", "digits:1", "other:1"]
        assert models[1]["tags"][XSS] == XSS and models[1]["run_id"] == "train_1"
        assert [m["id"] for m in client.get("/api/v1/models", params={"tag": "stage=prod"}).json()["models"]] == [
            "digits:2"]
        assert [m["id"] for m in client.get("/api/v1/models", params={"latest": "1"}).json()["models"]] == [
            "digits:2", "other:1"]
        one = client.get("/api/v1/models/digits").json()
        assert one["aliases"] == {"champion": 2} and [e["version"] for e in one["alias_history"]] == [2, 1, 2]
        version = client.get("/api/v1/models/digits/versions/2").json()
        assert version["model"]["aliases"] == ["champion"] and version["run_exists"] is True
        assert version["services"] == ["digits-svc", "web.green"]
        missing = client.get("/api/v1/models/nope")
        assert missing.status_code == 404 and "no model 'nope'" in missing.json()["error"]["message"]
        assert client.get("/api/v1/models/digits/versions/9").status_code == 404
        bad = client.get("/api/v1/models/digits/versions/x")
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "version"

        services = {s["name"]: s for s in client.get("/api/v1/services").json()["services"]}
        assert set(services) == {"digits-svc", "web.blue", "web.green"}
        svc = services["digits-svc"]
        assert svc["state"] == "Healthy" and svc["models"] == ["digits:2"] and svc["scoring_uri"].endswith("/score")
        assert svc["restarts"] == 0 and len(svc["workers"]) == 1 and svc["endpoint"] is None
        assert services["web.blue"]["endpoint"] == "web"
        detail = client.get("/api/v1/services/digits-svc", params={"lines": 50}).json()
        assert "init: loaded <b>weights</b>" in detail["logs"] and "keys" not in str(detail["service"]).lower()
        assert client.get("/api/v1/services/nope").status_code == 404
        eps = client.get("/api/v1/endpoints").json()["endpoints"]
        assert len(eps) == 1 and eps[0]["traffic"] == {"blue": 80, "green": 20} and eps[0]["state"] == "Healthy"
        assert eps[0]["deployments"]["green"]["models"] == ["digits:2"]
        ep = client.get("/api/v1/endpoints/web").json()
        assert "router started" in ep["logs"] and ep["endpoint"]["scoring_uri"] == eps[0]["scoring_uri"]
        assert client.get("/api/v1/endpoints/web", params={"lines": 0}).status_code == 400
        paths = client.get("/api/v1/openapi.json").json()["paths"]
        for path in ("/api/v1/models", "/api/v1/models/{name}/versions/{version}", "/api/v1/services/{name}",
                     "/api/v1/endpoints/{name}"):
            assert paths[path]["get"]["x-permission"] == "read"
        for page in ("/models", "/models/digits", "/models/digits/versions/1", "/services", "/services/web.blue",
                     "/endpoints/web"):
            r = client.get(page)
            assert r.status_code == 200 and "/static/models.js" in r.text


# ---- in Chromium -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium (apt-get install -y chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("TORCHYARD_UI_SHOTS") or tmp_path_factory.mktemp("ui-models-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the models and services pages: {folder}")
    return folder


@pytest.fixture
def page(browser: Any, server: UiServer) -> Iterator[Any]:
    """A page that fails the test on a console error, a page error or any dialog (an XSS alert)."""
    # bypass_csp: the XSS checks then prove the text is rendered as text, not merely that the CSP blocks it
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    p = context.new_page()
    problems: list[str] = []
    p.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    p.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    p.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    p.base = server.url.rstrip("/")
    try:
        yield p
        assert problems == []
    finally:
        context.close()


def _open(p: Any, path: str) -> None:
    p.goto(p.base + path)
    p.wait_for_selector("body[data-ready='1']", timeout=15000)


def test_models_pages_render_user_text_as_text(page: Any, shots: Path) -> None:
    _open(page, "/models")
    rows = page.locator("#models tbody tr")
    assert rows.count() == 2
    digits = page.locator("#models tr[data-model='digits']")
    assert "champion → 2" in digits.inner_text() and "stage=prod" in digits.inner_text()
    assert digits.locator("a.lineage").get_attribute("href") == "/runs/train_1"
    assert page.locator("img").count() == 0
    page.screenshot(path=str(shots / "models-01-list.png"), full_page=True)

    page.fill("input[aria-label='tag']", "team=b")
    page.press("input[aria-label='tag']", "Enter")
    page.wait_for_function("document.querySelectorAll('#models tbody tr').length === 1")
    assert page.locator("#models tbody tr").get_attribute("data-model") == "other"

    _open(page, "/models/digits")
    assert page.locator("#versions tbody tr").count() == 2
    assert page.locator("#versions tr[data-version='1']").inner_text().count(XSS) >= 2  # tag and description
    assert page.locator("#alias-history tbody tr").count() == 3
    assert page.locator("img").count() == 0
    page.screenshot(path=str(shots / "models-02-name.png"), full_page=True)

    _open(page, "/models/digits/versions/1")
    text = page.locator("main").inner_text()
    assert XSS in text and "training run" not in text  # the run is linked by id
    assert page.locator("a.lineage").get_attribute("href") == "/runs/train_1"
    assert page.locator("#properties").inner_text().count(XSS) == 1
    assert page.locator("#served-by a").all_inner_texts() == ["web.blue"]
    assert page.locator("img").count() == 0
    page.screenshot(path=str(shots / "models-03-version.png"), full_page=True)
    page.click("a.lineage")
    page.wait_for_selector("body[data-ready='1']")
    assert page.url.endswith("/runs/train_1")


def test_services_and_endpoint_pages(page: Any, shots: Path) -> None:
    _open(page, "/services")
    assert page.locator("#services tbody tr").count() == 3
    row = page.locator("#services tr[data-service='digits-svc']")
    assert row.locator("[data-state]").inner_text() == "Healthy" and "/score" in row.inner_text()
    assert "1/1" in row.inner_text()
    ep = page.locator("#endpoints tr[data-endpoint='web']")
    assert "blue 80%" in ep.inner_text() and "green 20%" in ep.inner_text()
    widths = ep.locator(".split i").evaluate_all("els => els.map((e) => e.style.width)")
    assert widths == ["80%", "20%"]
    page.screenshot(path=str(shots / "services-01-list.png"), full_page=True)

    _open(page, "/services/digits-svc")
    page.wait_for_function("document.getElementById('logs').textContent.includes('init: loaded')")
    assert "init: loaded <b>weights</b>" in page.locator("#logs").inner_text()
    assert page.locator("#logs b").count() == 0
    assert page.locator("#workers tbody tr").count() == 1
    page.screenshot(path=str(shots / "services-02-service.png"), full_page=True)

    _open(page, "/endpoints/web")
    assert page.locator("#deployments tbody tr").count() == 2
    assert "80%" in page.locator("#deployments tr[data-deployment='blue']").inner_text()
    assert "router started" in page.locator("#logs").inner_text()
    page.screenshot(path=str(shots / "services-03-endpoint.png"), full_page=True)
