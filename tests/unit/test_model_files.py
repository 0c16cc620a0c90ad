"""SnapshotStore.put (a model's files, content-addressed) and model references: no store, no servers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from torchyard.cli.model import parse_ref
from torchyard.errors import NotFoundError, SpecError
from torchyard.workspace.models import check_alias, check_model_name
from torchyard.workspace.snapshots import SnapshotStore


def test_put_file_and_folder_dedup(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "store")
    f = tmp_path / "model.pt"
    f.write_bytes(b"x" * 5000)
    first = store.put(f)
    assert first.file_count == 1 and first.files[0].path == "model.pt"
    assert first.files[0].sha256 == hashlib.sha256(b"x" * 5000).hexdigest()
    assert first.new_bytes == 5000
    again = store.put(f)
    assert again.new_bytes == 0 and again.manifest_id == first.manifest_id
    folder = tmp_path / "m"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "x").write_text("kept")
    (folder / "w.pt").write_bytes(b"x" * 5000)  # same bytes as model.pt: stored once
    snap = store.put(folder)
    assert [f.path for f in snap.files] == [".git/x", "w.pt"]
    assert snap.new_bytes == 4
    with pytest.raises(NotFoundError):
        store.put(tmp_path / "missing")


def test_refs_and_names() -> None:
    assert parse_ref("digits") == ("digits", None, None)
    assert parse_ref("digits:3") == ("digits", 3, None)
    assert parse_ref("digits@champion") == ("digits", None, "champion")
    with pytest.raises(SpecError, match="model"):
        parse_ref("digits:three")
    with pytest.raises(SpecError, match="alias"):
        check_alias("2")
    with pytest.raises(SpecError, match="model_name"):
        check_model_name("a b")


def test_entry_script_shapes(tmp_path: Path) -> None:
    from torchyard.runtime.serving.app import EntryScriptError, inspect_entry_script

    def script(body: str) -> str:
        path = tmp_path / "score.py"
        path.write_text(body)
        return str(path)

    assert inspect_entry_script(script("def init():\n    pass\ndef run(raw):\n    return raw\n")) == "azure"
    assert inspect_entry_script(script("class M:\n    def load(self, d): ...\n    def predict(self, b): ...\n")) == "typed"
    with pytest.raises(EntryScriptError, match="no init"):
        inspect_entry_script(script("def run(raw):\n    return raw\n"))
    with pytest.raises(EntryScriptError, match="several classes"):
        inspect_entry_script(script("class A:\n    def load(self, d): ...\n    def predict(self, b): ...\n"
                                    "class B:\n    def load(self, d): ...\n    def predict(self, b): ...\n"))
    with pytest.raises(EntryScriptError, match="cannot be parsed"):
        inspect_entry_script(script("def init(:\n"))
    with pytest.raises(EntryScriptError, match="does not exist"):
        inspect_entry_script(str(tmp_path / "missing.py"))


def test_metrics_text_and_traffic_specs() -> None:
    from torchyard.models.endpoint import parse_traffic
    from torchyard.runtime.serving.app import Metrics

    m = Metrics('worker="1.0"', 8)
    m.observe(200, 0.0007)
    m.observe(200, 0.3)
    m.observe(429, 0.0001)
    m.observe_batch(3)
    text = m.render()
    assert 'torchyard_requests_total{worker="1.0",code="200"} 2' in text
    assert 'torchyard_requests_total{worker="1.0",code="429"} 1' in text
    assert 'torchyard_request_duration_seconds_bucket{worker="1.0",le="0.001"} 2' in text
    assert 'torchyard_request_duration_seconds_bucket{worker="1.0",le="+Inf"} 3' in text
    assert 'torchyard_batch_size_bucket{worker="1.0",le="2"} 0' in text
    assert 'torchyard_batch_size_bucket{worker="1.0",le="4"} 1' in text
    assert parse_traffic("blue=90, green=10") == {"blue": 90, "green": 10}
    assert parse_traffic("") == {}
    for bad in ("blue", "blue=x", "=10"):
        with pytest.raises(SpecError, match="traffic"):
            parse_traffic(bad)


def test_deploy_configuration_checks() -> None:
    from torchyard.models.webservice import InferenceConfig, LocalWebservice

    assert LocalWebservice.deploy_configuration(host="::1").host == "::1"
    assert LocalWebservice.deploy_configuration(host="0.0.0.0", auth_enabled=True).auth_enabled
    for kwargs, field in (({"host": "10.0.0.1"}, "host"), ({"port": 70000}, "port"), ({"workers": 0}, "workers"),
                          ({"max_batch_delay_ms": -1}, "max_batch_delay_ms"), ({"request_timeout_ms": 0},
                                                                               "request_timeout_ms")):
        with pytest.raises(SpecError) as info:
            LocalWebservice.deploy_configuration(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(SpecError, match="entry_script"):
        InferenceConfig(entry_script="")


def test_metrics_files_are_summed_over_workers(tmp_path: Path) -> None:
    """Each worker's counters live in its own mapped file; any worker renders the sum, and a dead
    worker's counts stay in it while its in-flight requests do not."""
    import struct

    from prometheus_client.parser import text_string_to_metric_families

    from torchyard.runtime.serving import app

    a = app.Metrics('service="s"', 1, str(tmp_path), "1.0")
    b = app.Metrics('service="s"', 1, str(tmp_path), "1.1")
    a.observe(200, 0.001)
    b.observe(200, 0.004)
    b.observe(500, 20.0)
    a.observe_batch(1)
    b.observe_batch(3000)
    a.inflight += 2
    dead = bytearray(tmp_path.joinpath("1.1.metrics").read_bytes())
    struct.pack_into("d", dead, 8 * app._PID, 2**22 + 12345.0)  # a pid no process has
    struct.pack_into("d", dead, 8 * app._INFLIGHT, 7.0)
    tmp_path.joinpath("0.9.metrics").write_bytes(bytes(dead))
    tmp_path.joinpath("junk.metrics").write_bytes(b"short")
    text = a.render()
    assert text == b.render()
    fams = {f.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)}
    assert fams["torchyard_requests"] == {("torchyard_requests_total", (("code", "200"), ("service", "s"))): 3,
                                          ("torchyard_requests_total", (("code", "500"), ("service", "s"))): 2}
    lat = fams["torchyard_request_duration_seconds"]
    assert lat[("torchyard_request_duration_seconds_bucket", (("le", "0.001"), ("service", "s")))] == 1
    assert lat[("torchyard_request_duration_seconds_bucket", (("le", "10.0"), ("service", "s")))] == 3
    assert lat[("torchyard_request_duration_seconds_bucket", (("le", "+Inf"), ("service", "s")))] == 5
    batch = fams["torchyard_batch_size"]
    assert batch[("torchyard_batch_size_bucket", (("le", "1024"), ("service", "s")))] == 1
    assert batch[("torchyard_batch_size_count", (("service", "s"),))] == 3
    assert fams["torchyard_inflight_requests"] == {("torchyard_inflight_requests", (("service", "s"),)): 2}
    assert fams["torchyard_workers"] == {("torchyard_workers", (("service", "s"),)): 2}
