"""The team server in Chromium: logging in through the login page (the session cookie), the runs a
member may see and no other, and XSS payloads in run names, tags, metric names and logs shown as
text (the CSP bypassed, so the page itself must not interpret them)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from teamserver import PASSWORDS, access_store, make_users, team_server
from uiserver import XSS, make_run

from torchyard.status import RunStatus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("no Chromium (apt-get install -y chromium)", allow_module_level=True)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sqlalchemy import update

    from torchyard.workspace.schema import experiments

    folder = str(tmp_path_factory.mktemp("teambrowser") / ".torchyard")
    make_users(folder, None)  # SQLite: the single-machine form of the server
    ws, access = access_store(folder, None)
    make_run(ws, "xss_run", experiment="mine", display_name=XSS, tags={XSS: XSS}, logs={0: XSS + "\n"},
             series={XSS: ([1.0, 2.0], [0, 1])})
    make_run(ws, "hidden_run", experiment="not-mine", display_name="hidden one")
    make_run(ws, "running_mine", experiment="mine", statuses=(RunStatus.RUNNING,))
    access.grant("mine", "viewer", "READ", by="test")
    with ws.store.engine.begin() as conn:
        conn.execute(update(experiments).where(experiments.c.name == "mine").values(created_by="member"))
    with team_server(folder) as srv:
        yield srv
    ws.store.dispose()


def test_login_page_then_xss_as_text(server: Any) -> None:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            dialogs: list[str] = []
            errors: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_url("**/login")  # no session: the login page
            page.fill("input[name=user]", "member")
            page.fill("input[name=password]", "wrong-password")
            page.click("button[type=submit]")
            page.wait_for_function("document.querySelector('#message').textContent.length > 0")
            assert "wrong" in page.inner_text("#message")
            page.fill("input[name=password]", PASSWORDS["member"])
            page.click("button[type=submit]")
            page.wait_for_selector("tr[data-run='xss_run']")
            assert page.query_selector("tr[data-run='hidden_run']") is None
            assert "hidden one" not in page.inner_text("body")
            for path, wait in (("/runs/xss_run", ".kv"), ("/runs/xss_run#logs", "#log")):
                page.goto("about:blank")  # a hash change alone would not reload the page
                page.goto(server.url + path)
                page.wait_for_selector(wait)
                page.wait_for_timeout(300)
                assert page.query_selector_all("img") == []
            page.wait_for_function(f"document.querySelector('#log').innerText.includes({XSS!r})")
            assert XSS in page.inner_text("body")
            cookies = context.cookies()
            assert any(c["name"] == "torchyard_session" and c["httpOnly"] for c in cookies)
            assert dialogs == [] and errors == []
            context.close()
        finally:
            browser.close()


def _login(page: Any, server: Any, user: str) -> None:
    page.goto(server.url + "/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_selector("tr[data-run='running_mine']")


def test_cancel_and_rerun_buttons_only_for_who_may_use_them(server: Any) -> None:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for user, shown in (("viewer", False), ("member", True)):
                context = browser.new_context()
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                _login(page, server, user)
                page.goto(server.url + "/runs/running_mine")
                page.wait_for_selector("body[data-ready='1'] .kv")
                assert page.is_visible("#cancel-run") is shown, user
                assert (page.query_selector("#rerun") is not None) is shown, user
                assert errors == []
                context.close()
        finally:
            browser.close()
