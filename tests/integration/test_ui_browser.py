"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
``torchyard ui`` process. Every test fails on a console error or a JavaScript dialog, and writes a
screenshot of each page it looks at under the folder printed at the start (run with ``-s``)."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uiserver import XSS, UiServer, log_point, make_run, make_sweep, make_system_run, ui_server

from torchyard.status import RunStatus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("no Chromium (apt-get install -y chromium)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("TORCHYARD_UI_SHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the dashboard tests: {folder}")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from torchyard import Workspace

    root = tmp_path_factory.mktemp("uibrowser")
    ws = Workspace(path=root / ".torchyard")
    src = root / "src"
    src.mkdir()
    (src / "train.py").write_text("import torch\nprint('<b>not bold</b>')\n")
    n = 20000
    loss = [2.0 * math.exp(-i / 4000) + 0.02 * math.sin(i / 7) for i in range(n)]
    loss[15000] = 50.0
    make_run(ws, "done", experiment="digits", display_name="finished run", tags={"owner": "ana"},
             series={"loss": (loss, list(range(n))), "acc": ([0.5, 0.7, 0.9], [0, 1, 2])},
             logs={0: "rank zero output\n", 1: "line from rank 1\n"},
             artifacts={"outputs/model.pt": b"weights"}, source=src)
    make_run(ws, "live", experiment="digits", display_name="running run",
             statuses=(RunStatus.PREPARING, RunStatus.RUNNING),
             series={"loss": ([3.0 - i / 100 for i in range(100)], list(range(100)))}, logs={0: "starting\n"})
    make_run(ws, "xss", experiment="digits", display_name=XSS, tags={XSS: XSS}, logs={0: XSS + "\n", 1: XSS + "\n"},
             series={XSS: ([1.0, 2.0, 1.5], [0, 1, 2])}, artifacts={f"outputs/{XSS}.txt": b"x"})
    make_sweep(ws, "sw", [({"lr": 0.1, "layers": 2, "opt": "sgd"}, [0.5, 0.7, 0.9], "completed"),
                          ({"lr": 0.01, "layers": 3, "opt": "adam"}, [0.3, 0.35], "early"),
                          ({"lr": 0.05, "layers": 4, "opt": "adam"}, [0.6, 0.8], "completed"),
                          ({"lr": 0.001, "layers": 2, "opt": "sgd"}, [0.2, 0.25], "early"),
                          ({"lr": 0.02, "layers": 3, "opt": "sgd"}, [0.55, 0.75], "running")])
    yield ws


@pytest.fixture(scope="module")
def server(workspace: Any) -> Iterator[UiServer]:
    with ui_server(workspace.path) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page that records console errors, page errors and dialogs."""

    def __init__(self, page: Any, base: str, shots: Path, name: str) -> None:
        self.page, self.base, self.shots, self.name = page, base, shots, name
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("dialog", self._dialog)
        self.count = 0

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: str) -> Any:
        self.page.goto("about:blank")
        self.page.goto(self.base.rstrip("/") + path)
        self.page.wait_for_selector("body[data-ready='1']", timeout=15000)
        return self.page

    def shot(self, label: str, docs: str | None = None) -> None:
        """A full-page screenshot into the test's folder; with ``docs`` and TORCHYARD_DOCS_SHOTS set (to
        docs/images), also the page as a reader sees it there, under that name: the docs' pictures of the
        dashboard are these (docs/development.md says how to refresh them)."""
        self.count += 1
        self.page.screenshot(path=str(self.shots / f"{self.name}-{self.count:02d}-{label}.png"), full_page=True)
        folder = os.environ.get("TORCHYARD_DOCS_SHOTS")
        if docs and folder:
            os.makedirs(folder, exist_ok=True)
            self.page.screenshot(path=os.path.join(folder, docs))


@pytest.fixture
def page(browser: Any, server: UiServer, shots: Path, request: pytest.FixtureRequest) -> Iterator[Watched]:
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the pages' CSP forbids; it also
    # makes the XSS test prove that user text is rendered as text, not merely that the CSP blocks it
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    watched = Watched(context.new_page(), server.url, shots, request.node.name)
    try:
        yield watched
        assert watched.errors == []
        assert watched.dialogs == []
    finally:
        context.close()


def drawn_pixels(page: Any, selector: str) -> int:
    """How many pixels of the canvas are not transparent."""
    return int(page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n; }"""))


def test_runs_page_lists_finished_and_running_runs(page: Watched, workspace: Any) -> None:
    p = page.open("/")
    p.wait_for_selector("tr[data-run='done']")
    assert p.inner_text("tr[data-run='done'] td.st") == "Completed"
    assert p.inner_text("tr[data-run='live'] td.st") == "Running"
    assert "sw_0" not in p.inner_text("#runs")  # trials live on their sweep's page
    page.shot("runs", docs="runs.png")
    make_run(workspace, "late", experiment="digits", statuses=(RunStatus.RUNNING,))
    p.wait_for_selector("tr[data-run='late']", timeout=5000)  # a new run shows up live
    workspace.store.set_status("late", RunStatus.COMPLETED)
    p.wait_for_function("document.querySelector(\"tr[data-run='late'] td.st\").innerText === 'Completed'",
                        timeout=5000)
    p.click("th:has-text('Name')")
    p.wait_for_function("location.search.includes('sort=name')")
    p.fill("input[aria-label='tag']", "owner=ana")
    p.press("input[aria-label='tag']", "Enter")
    p.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1")
    page.shot("filtered")


def test_run_chart_draws_and_a_new_point_arrives_within_2_s(page: Watched, workspace: Any) -> None:
    p = page.open("/runs/live#metrics")
    p.wait_for_selector(".chart[data-metric='loss'] canvas[data-drawn='1']", timeout=10000)
    canvas = ".chart[data-metric='loss'] canvas"
    assert drawn_pixels(p, canvas) > 2000
    before = p.eval_on_selector(canvas, "c => c.toDataURL()")
    page.shot("chart", docs="run-metrics.png")
    logged = time.monotonic()
    log_point(workspace, "live", "loss", 10.0, 150)
    p.wait_for_function(f"document.querySelector(\"{canvas}\").dataset.lastX === '150'", timeout=2000)
    assert time.monotonic() - logged <= 2.0
    assert p.eval_on_selector(canvas, "c => c.toDataURL()") != before
    page.shot("chart-live")


def test_finished_run_chart_keeps_the_spike_and_zooms(page: Watched) -> None:
    p = page.open("/runs/done#metrics")
    canvas = ".chart[data-metric='loss'] canvas"
    p.wait_for_selector(canvas + "[data-drawn='1']")
    assert p.eval_on_selector(canvas, "c => Number(c.dataset.maxY)") == 50.0  # the one spike is drawn
    box = p.locator(canvas).bounding_box()
    with p.expect_response(lambda r: "/metrics/loss" in r.url and "from=" in r.url) as resp:
        p.mouse.move(box["x"] + box["width"] * 0.70, box["y"] + 60)
        p.mouse.down()
        p.mouse.move(box["x"] + box["width"] * 0.80, box["y"] + 60, steps=5)
        p.mouse.up()
    body = resp.value.json()
    assert 10000 < body["from"] < body["to"] < 20000
    page.shot("zoomed")
    for tab in ("Overview", "Outputs", "Snapshot"):
        p.click(f".tabs button:has-text('{tab}')")
        p.wait_for_timeout(300)
        page.shot(tab.lower())
    p.click("text=train.py")
    p.wait_for_function("document.querySelector('#code').innerText.includes('<b>not bold</b>')")


def test_logs_of_rank_1_show_and_follow(page: Watched, workspace: Any) -> None:
    p = page.open("/runs/done#logs")
    p.click("#rank-tabs button[data-rank='1']")
    p.wait_for_function("document.querySelector('#log').innerText.includes('line from rank 1')")
    page.shot("rank1")
    p = page.open("/runs/live#logs")  # a running run's log tails live
    with open(Path(workspace.run_dir("live"), "logs", "rank_0.txt"), "a") as fh:
        fh.write("a live line\n")
    p.wait_for_function("document.querySelector('#log').innerText.includes('a live line')", timeout=5000)


def test_sweep_page_draws_parallel_coordinates(page: Watched) -> None:
    p = page.open("/sweeps/sw")
    p.wait_for_selector("#parcoords[data-drawn='1']")
    assert drawn_pixels(p, "#parcoords") > 3000
    rows = p.eval_on_selector_all("#trials tbody tr", "rs => rs.map(r => [r.dataset.run, r.className])")
    assert [r[0] for r in rows] == ["sw_0", "sw_2", "sw_4", "sw_1", "sw_3"]
    assert [r[1] for r in rows] == ["", "", "", "early", "early"]
    page.shot("sweep", docs="sweep.png")
    box = p.locator("#parcoords").bounding_box()
    x = box["x"] + box["width"] - 80  # the primary metric's axis, the last one
    p.mouse.move(x, box["y"] + 10)  # above the axis top: the brush starts at the best value
    p.mouse.down()
    p.mouse.move(x, box["y"] + box["height"] * 0.35, steps=5)
    p.mouse.up()
    p.wait_for_function("document.querySelectorAll('#trials tbody tr.dim').length > 0")
    dimmed = p.eval_on_selector_all("#trials tbody tr.dim", "rs => rs.map(r => r.dataset.run)")
    assert "sw_0" not in dimmed and "sw_3" in dimmed
    page.shot("sweep-brushed")


def test_user_written_text_is_never_html(page: Watched) -> None:
    for path, wait in (("/", "tr[data-run='xss']"), ("/runs/xss", ".kv"), ("/runs/xss#metrics", "canvas[data-drawn='1']"),
                       ("/runs/xss#logs", "#log"), ("/runs/xss#outputs", "table.files"),
                       ("/compare?runs=xss,done", "canvas[data-drawn='1']")):
        p = page.open(path)
        p.wait_for_selector(wait)
        p.wait_for_timeout(300)
        assert p.query_selector_all("img") == []
        page.shot(path.strip("/").replace("/", "_").replace("#", "-").replace("?", "-") or "runs")
    assert XSS in p.inner_text("body")
    p = page.open("/runs/xss#logs")
    p.wait_for_function(f"document.querySelector('#log').innerText.includes({XSS!r})")
    assert page.dialogs == []


LIVE_SCRIPT = """\
import os, sys, time
from torchyard import Run
run = Run.get_context()
run.log("live_loss", 1.0, step=0)
trigger, stamp = sys.argv[1], sys.argv[2]
deadline = time.time() + 60
while not os.path.exists(trigger) and time.time() < deadline:
    time.sleep(0.02)
run.log("live_loss", 5.0, step=1)
with open(stamp + ".tmp", "w") as fh:
    fh.write(repr(time.time()))
os.replace(stamp + ".tmp", stamp)
time.sleep(4)
"""


def test_a_value_a_real_script_logs_reaches_the_open_chart_within_2_s(page: Watched, workspace: Any,
                                                                      tmp_path: Path) -> None:
    """End to end: script's run.log → journal → supervisor → store → SSE → canvas."""
    from torchyard import Experiment, ScriptRunConfig

    src = tmp_path / "live_src"
    src.mkdir()
    (src / "live.py").write_text(LIVE_SCRIPT)
    trigger, stamp = tmp_path / "go", tmp_path / "logged_at"
    run = Experiment(workspace, "digits").submit(
        ScriptRunConfig(str(src), script="live.py", arguments=[str(trigger), str(stamp)]))
    try:
        p = page.open(f"/runs/{run.id}#metrics")
        canvas = ".chart[data-metric='live_loss'] canvas"
        p.wait_for_selector(canvas + "[data-drawn='1']", timeout=30000)
        trigger.write_text("go")
        p.wait_for_function(f"document.querySelector(\"{canvas}\").dataset.lastX === '1'", timeout=10000)
        seen = time.time()
        logged = float(stamp.read_text())
        page.shot("real-run-live")
        assert seen - logged <= 2.0, f"the point took {seen - logged:.2f} s to reach the chart"
        run.wait_for_completion(timeout=60)
    finally:
        run.cancel()


def test_system_tab_draws_a_chart_per_family_with_a_line_per_node(page: Watched, workspace: Any) -> None:
    make_system_run(workspace, "sysnodes", experiment="digits", nodes=2, per_node=2, gpus=2)
    p = page.open("/runs/sysnodes#metrics")
    p.wait_for_selector(".chart[data-metric='loss'] canvas[data-drawn='1']")
    assert p.query_selector_all(".chart[data-metric^='system/']") == []  # the script's own metrics only
    with p.expect_response(lambda r: "/runs/sysnodes/system" in r.url):
        p.click(".tabs button:has-text('System')")
    p.wait_for_selector("#system-charts .chart[data-metric='system/cpu_percent'] canvas[data-drawn='1']")
    families = p.eval_on_selector_all("#system-charts .chart", "cs => cs.map(c => c.dataset.metric)")
    assert families == ["system/cpu_percent", "system/memory_percent", "system/memory_used_gb",
                        "system/net_recv_mb_s", "system/gpu_*/utilization_percent", "system/gpu_*/power_w"]
    assert p.inner_text(".chart[data-metric='system/cpu_percent'] .title") == "CPU %"
    assert p.inner_text(".chart[data-metric='system/cpu_percent'] .legend").split() == ["node", "0", "node", "1"]
    gpu_legend = p.inner_text(".chart[data-metric='system/gpu_*/power_w'] .legend")
    assert all(f"node {n} · GPU {g}" in gpu_legend for n in (0, 1) for g in (0, 1))
    assert drawn_pixels(p, ".chart[data-metric='system/cpu_percent'] canvas") > 2000
    page.shot("system", docs="run-system.png")
    p = page.open("/runs/done#system")  # no samples: a sentence, not an empty grid
    p.wait_for_selector("#no-system")
    assert "TORCHYARD_SYSTEM_METRICS_SECONDS" in p.inner_text("#no-system")


SAMPLED_SCRIPT = """\
import argparse, time
from torchyard import Run
p = argparse.ArgumentParser(); p.add_argument("--seconds", type=float, default=60)
a = p.parse_args()
run = Run.get_context()
run.log("seconds", a.seconds)
end = time.time() + a.seconds
while time.time() < end:
    sum(i * i for i in range(20000))
    time.sleep(0.05)
"""


def test_a_real_runs_system_tab_then_cancel_and_rerun_from_the_page(page: Watched, workspace: Any,
                                                                      tmp_path: Path) -> None:
    """End to end: the launcher's sampler (every 0.5 s here) → the System tab, live; Cancel through its
    dialog; Re-run with a changed argument lands on the new run's page."""
    from torchyard import Experiment, Run, ScriptRunConfig

    src = tmp_path / "sampled_src"
    src.mkdir()
    (src / "busy.py").write_text(SAMPLED_SCRIPT)
    run = Experiment(workspace, "digits").submit(ScriptRunConfig(
        str(src), script="busy.py", arguments=["--seconds", "60"],
        environment_variables={"TORCHYARD_SYSTEM_METRICS_SECONDS": "0.5"}))
    new_id = None
    try:
        p = page.open(f"/runs/{run.id}#system")
        canvas = ".chart[data-metric='system/cpu_percent'] canvas"
        p.wait_for_selector(canvas + "[data-drawn='1']", timeout=30000)  # shown live, once the first samples land
        first = float(p.eval_on_selector(canvas, "c => c.dataset.lastX"))
        p.wait_for_function(f"Number(document.querySelector(\"{canvas}\").dataset.lastX) > {first}", timeout=10000)
        assert p.inner_text(".chart[data-metric='system/cpu_percent'] .legend") == "node 0"
        p.click("#cancel-run")
        p.wait_for_selector("#cancel-dialog[open]")
        page.shot("cancel-dialog")
        p.click("#cancel-dialog button:has-text('Keep running')")
        p.wait_for_selector("#cancel-dialog", state="detached")
        assert run.get_status() == "Running"
        p.click("#cancel-run")
        p.click("#cancel-confirm")
        p.wait_for_function("['Canceled', 'CancelRequested'].includes("
                            "document.querySelector('#run-status .status').dataset.status)", timeout=20000)
        p.wait_for_selector("#cancel-run", state="hidden", timeout=20000)
        assert run.wait_for_completion(timeout=60, raise_on_error=False)["status"] == "Canceled"
        p.click("#rerun")
        p.fill("#rerun-set", "seconds")  # not KEY=VALUE: said in the form, nothing posted
        p.click("#rerun-submit")
        p.wait_for_selector("#rerun-dialog .error:not([hidden])")
        assert "KEY=VALUE" in p.inner_text("#rerun-dialog .error")
        p.fill("#rerun-set", "seconds=1")
        page.shot("rerun-dialog")
        p.click("#rerun-submit")
        p.wait_for_url(lambda url: "/runs/" in url and run.id not in url, timeout=30000)
        new_id = p.url.rsplit("/", 1)[-1]
        p.wait_for_selector("body[data-ready='1'] .kv")
        new = Run(Experiment(workspace, "digits"), new_id)
        assert new.get_tags()["rerun_of"] == run.id
        assert new.wait_for_completion(timeout=90, raise_on_error=False)["status"] == "Completed"
        assert new.get_metrics()["seconds"] == 1.0
        p.wait_for_function("document.querySelector('#run-status .status').dataset.status === 'Completed'",
                            timeout=10000)
    finally:
        run.cancel()
        if new_id:
            Run(Experiment(workspace, "digits"), new_id).cancel()
