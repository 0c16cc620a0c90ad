"""Alerts: webhooks told of run events, against a real HTTP receiver in the test (signatures checked,
a receiver that fails twice then succeeds gets each event once), from real runs and a script's
run.alert(), and through the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import wait_until, write_script

from torchyard import Experiment, ScriptRunConfig, Workspace
from torchyard.workspace.alerts import AlertRegistry


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 500 to the first ``fail_first`` tries of each delivery."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.tries: dict[str, int] = {}
        self.got: list[dict[str, Any]] = []  # (headers, body) of the deliveries it accepted
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                delivery = self.headers["x-torchyard-delivery"]
                receiver.tries[delivery] = receiver.tries.get(delivery, 0) + 1
                if receiver.tries[delivery] <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                if not any(g["delivery"] == delivery for g in receiver.got):  # a repeat is dropped
                    receiver.got.append({"delivery": delivery, "event": self.headers["x-torchyard-event"],
                                         "signature": self.headers["x-torchyard-signature"], "body": body})
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def _verified(secret: str, got: dict[str, Any]) -> dict[str, Any]:
    expected = "sha256=" + hmac.new(secret.encode(), got["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, got["signature"])
    return dict(json.loads(got["body"]))


def test_a_failed_run_and_a_scripts_alert_reach_the_webhook_once_each(ws: Workspace, tmp_path: Path,
                                                                      receiver: Receiver) -> None:
    sub = AlertRegistry(ws.path).add(receiver.url, events=["Failed", "alert"], experiment="alerts")
    other = AlertRegistry(ws.path).add(receiver.url, events=["Completed"], experiment="elsewhere")
    write_script(tmp_path / "src", "bad.py", """
        from torchyard import Run
        run = Run.get_context()
        run.alert("loss diverged", "loss=inf at step 7", "WARN")
        import time; time.sleep(1)
        raise SystemExit(3)
    """)
    run = Experiment(ws, "alerts").submit(ScriptRunConfig(str(tmp_path / "src"), script="bad.py"))
    assert run.wait_for_completion(timeout=60, raise_on_error=False)["status"] == "Failed"
    wait_until(lambda: len(receiver.got) >= 2, timeout=30)
    events = {g["event"]: _verified(sub["secret"], g) for g in receiver.got}
    assert set(events) == {"alert", "Failed"}  # the other experiment's subscription got nothing
    assert events["alert"]["title"] == "loss diverged" and events["alert"]["level"] == "WARN"
    assert events["alert"]["message"] == "loss=inf at step 7" and events["alert"]["run_id"] == run.id
    assert events["Failed"]["run_id"] == run.id and "exit" in events["Failed"]["message"]
    assert all(n == 3 for n in receiver.tries.values())  # two 500s, then accepted: once each
    assert run.get_details()["alerts"][0]["title"] == "loss diverged"
    history = AlertRegistry(ws.path).history()
    assert {(h["event"], h["ok"], h["tries"]) for h in history} == {("alert", True, 3), ("Failed", True, 3)}
    assert other["id"] not in {h["subscription"] for h in history}


def test_the_cli_adds_lists_tests_and_removes_a_slack_hook(ws: Workspace, receiver: Receiver) -> None:
    def ty(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "torchyard", "--workspace", str(ws.path), *args],
                              capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)

    added = ty("alert", "add", receiver.url, "--event", "Completed", "--format", "slack", "-o", "json")
    assert added.returncode == 0, added.stderr
    sub = json.loads(added.stdout)
    listed = json.loads(ty("alert", "list", "-o", "json").stdout)
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
    tested = ty("alert", "test", sub["id"])
    assert tested.returncode == 0 and "delivered (HTTP 204, 3 tries" in tested.stdout, tested.stdout + tested.stderr
    body = _verified(sub["secret"], receiver.got[0])
    assert set(body) == {"text"} and "a test event" in body["text"]  # Slack's message shape
    bad = ty("alert", "add", "ftp://nowhere")
    assert bad.returncode == 2 and "http(s) URL" in bad.stderr
    assert ty("alert", "remove", sub["id"]).returncode == 0
    assert json.loads(ty("alert", "list", "-o", "json").stdout) == []
    assert ty("alert", "remove", sub["id"]).returncode == 2
