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
