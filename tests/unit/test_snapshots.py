"""Content-addressed snapshots: dedupe, ignore rules, limits, materialize/restore, git facts."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from torchyard.errors import NotFoundError, SpecError
from torchyard.workspace import snapshots as snapshots_mod
from torchyard.workspace.snapshots import SnapshotStore, git_info


def make_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
    return root


def paths(snap) -> list[str]:
    return [f.path for f in snap.files]


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(str(tmp_path / "store"))


# ---- dedupe ---------------------------------------------------------------------------------------


def test_second_snapshot_stores_nothing_and_one_change_stores_one_file(tmp_path, store):
    src = make_tree(
        tmp_path / "src",
        {"train.py": "print('hi')\n", "pkg/model.py": "x = 1\n" * 100, "pkg/data.bin": os.urandom(5000)},
    )
    first = store.take(src)
    assert first.file_count == 3
    assert first.total_bytes == 12 + 600 + 5000
    assert first.new_bytes == first.total_bytes
    assert paths(first) == ["pkg/data.bin", "pkg/model.py", "train.py"]

    second = store.take(src)
    assert second.manifest_id == first.manifest_id
    assert second.new_bytes == 0

    (src / "train.py").write_text("print('changed!')\n")  # 18 bytes
    third = store.take(src)
    assert third.manifest_id != first.manifest_id
    assert third.new_bytes == 18
    assert third.total_bytes == 18 + 600 + 5000


def test_identical_content_is_stored_once(tmp_path, store):
    src = make_tree(tmp_path / "src", {"a.txt": "same", "b/c.txt": "same", "d.txt": "other"})
    snap = store.take(src)
    assert snap.new_bytes == 4 + 5
    objects = [p for p in (tmp_path / "store" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 2
    for obj in objects:
        assert stat.S_IMODE(obj.stat().st_mode) == 0o444
        assert obj.parent.name == obj.name[:2]
    other = make_tree(tmp_path / "other", {"x.txt": "same"})
    assert store.take(other).new_bytes == 0


def test_manifest_lists_sorted_files_with_modes_and_totals(tmp_path, store):
    import json

    src = make_tree(tmp_path / "src", {"z.py": "z", "a/run.sh": "#!/bin/sh\n"})
    os.chmod(src / "a/run.sh", 0o755)
    snap = store.take(src)
    with open(tmp_path / "store" / "manifests" / f"{snap.manifest_id}.json") as fh:
        doc = json.load(fh)
    assert [f["path"] for f in doc["files"]] == ["a/run.sh", "z.py"]
    assert [f["mode"] for f in doc["files"]] == [0o755, 0o644]
    assert doc["file_count"] == 2 and doc["total_bytes"] == 11
    assert store.load(snap.manifest_id).files == snap.files


def test_unchanged_tree_is_not_read_again(tmp_path, store, monkeypatch):
    src = make_tree(tmp_path / "src", {f"d{i % 7}/f{i}.py": f"v = {i}\n" for i in range(200)})
    time.sleep(snapshots_mod._RACY_NS / 1e9 + 0.05)  # older than the racy window: cacheable
    first = store.take(src)

    def must_not_hash(self, todo):
        raise AssertionError(f"re-read {len(todo)} unchanged files")

    monkeypatch.setattr(snapshots_mod._ObjectWriter, "store_all", must_not_hash)
    again = store.take(src)
    assert again.manifest_id == first.manifest_id and again.new_bytes == 0


def test_same_size_edit_right_after_a_snapshot_is_seen(tmp_path, store):
    src = make_tree(tmp_path / "src", {"a.py": "x = 1\n"})
    first = store.take(src)
    (src / "a.py").write_text("x = 2\n")  # same size, likely the same mtime tick
    second = store.take(src)
    assert second.manifest_id != first.manifest_id
    assert second.new_bytes == 6


def test_missing_source_directory(tmp_path, store):
    with pytest.raises(NotFoundError):
        store.take(tmp_path / "nope")


# ---- ignore rules ---------------------------------------------------------------------------------

TREE = {
    "train.py": "t",
    "data/big.csv": "d",
    "sub/data/nested.csv": "n",
    "model.ckpt": "m",
    "keep.ckpt": "k",
    "sub/other.ckpt": "o",
    "notes.txt": "x",
    "logs/run.log": "l",
}


def test_gitignore_patterns(tmp_path, store):
    src = make_tree(tmp_path / "src", {**TREE, ".gitignore": "data/\n*.ckpt\n!keep.ckpt\n# comment\n"})
    got = paths(store.take(src))
    assert got == [".gitignore", "keep.ckpt", "logs/run.log", "notes.txt", "train.py"]


def test_data_pattern_matches_folders_only(tmp_path, store):
    src = make_tree(tmp_path / "src", {"data": "a file named data", "x/data/y.txt": "y", ".gitignore": "data/\n"})
    assert paths(store.take(src)) == [".gitignore", "data"]


def test_torchyardignore_wins_over_amlignore_and_gitignore(tmp_path, store):
    src = make_tree(
        tmp_path / "src",
        {**TREE, ".torchyardignore": "*.txt\n", ".amlignore": "data/\n", ".gitignore": "*.ckpt\n"},
    )
    got = paths(store.take(src))
    assert "notes.txt" not in got
    assert "data/big.csv" in got and "model.ckpt" in got


def test_amlignore_wins_over_gitignore(tmp_path, store):
    src = make_tree(tmp_path / "src", {**TREE, ".amlignore": "logs/\n", ".gitignore": "*.ckpt\n"})
    got = paths(store.take(src))
    assert "logs/run.log" not in got
    assert "model.ckpt" in got


def test_only_the_root_ignore_file_is_read(tmp_path, store):
    src = make_tree(tmp_path / "src", {**TREE, "sub/.gitignore": "*.csv\n"})
    assert "sub/data/nested.csv" in paths(store.take(src))


def test_default_excludes_apply_anywhere_and_always(tmp_path, store):
    src = make_tree(
        tmp_path / "src",
        {
            "train.py": "t",
            ".git/HEAD": "ref",
            "outputs/model.pt": "o",
            "sub/__pycache__/m.cpython-311.pyc": "c",
            "sub/stale.pyc": "c",
            "nb/.ipynb_checkpoints/a.ipynb": "{}",
            ".torchyard/store.db": "db",
            "deep/er/.torchyard-run/run.json": "{}",
            ".torchyardignore": "!outputs/\n",
        },
    )
    assert paths(store.take(src)) == [".torchyardignore", "train.py"]


def test_symlinks_inside_are_files_dangling_and_outside_are_skipped(tmp_path, store):
    outside = make_tree(tmp_path / "outside", {"secret.txt": "s"})
    src = make_tree(tmp_path / "src", {"real/a.py": "a"})
    os.symlink("real/a.py", src / "alias.py")
    os.symlink("real", src / "linked_dir")
    os.symlink("missing.py", src / "dangling.py")
    os.symlink(outside / "secret.txt", src / "secret.txt")
    os.symlink("..", src / "real" / "loop")  # a cycle must not hang
    snap = store.take(src)
    assert paths(snap) == ["alias.py", "linked_dir/a.py", "real/a.py"]
    assert sorted(snap.skipped) == ["dangling.py", "secret.txt"]
    dest = tmp_path / "dest"
    store.restore(snap.manifest_id, dest)
    assert not (dest / "alias.py").is_symlink()
    assert (dest / "alias.py").read_text() == "a"


# ---- limits -------------------------------------------------------------------------------------


def test_too_many_files_names_total_limit_and_largest_entries(tmp_path, store, monkeypatch):
    files: dict[str, bytes | str] = {f"data/part{i}.csv": "x" * 100 for i in range(30)}
    files.update({f"src/m{i}.py": "y" for i in range(5)})
    files["train.py"] = "t"
    src = make_tree(tmp_path / "src", files)

    def must_not_hash(self, todo):
        raise AssertionError("hashed before checking the limits")

    monkeypatch.setattr(snapshots_mod._ObjectWriter, "store_all", must_not_hash)
    with pytest.raises(SpecError) as info:
        store.take(src, max_files=10)
    err = info.value
    assert err.context["field"] == "source_directory"
    msg = str(err)
    assert "36 files" in msg  # the total
    assert "10 files" in msg  # the limit
    assert "data/ (2.9 KiB, 30 files)" in msg  # the largest entries, human-readable
    assert "src/" in msg and "train.py" in msg
    assert msg.index("data/") < msg.index("src/")
    assert ".torchyardignore" in msg and "max_files" in msg


def test_too_many_bytes_names_total_limit_and_largest_entries(tmp_path, store):
    src = make_tree(
        tmp_path / "src",
        {"checkpoints/a.pt": b"\0" * 3_000_000, "big.bin": b"\1" * 2_000_000, "train.py": "t", "tiny/x": "x"},
    )
    with pytest.raises(SpecError) as info:
        store.take(src, max_bytes=1024 * 1024)
    msg = str(info.value)
    assert "4.8 MiB" in msg  # the total (5,000,002 bytes)
    assert "5,000,002 bytes" in msg
    assert "1.0 MiB" in msg and "1,048,576 bytes" in msg  # the limit
    assert "checkpoints/ (2.9 MiB, 1 file)" in msg
    assert "big.bin (1.9 MiB)" in msg
    assert msg.index("checkpoints/") < msg.index("big.bin") < msg.index("train.py")
    assert "max_bytes" in msg


def test_limit_message_points_at_the_ignore_file_in_use(tmp_path, store):
    src = make_tree(tmp_path / "src", {".amlignore": "*.log\n", **{f"f{i}.txt": "x" for i in range(5)}})
    with pytest.raises(SpecError, match=r"\.amlignore \(the ignore file in use\)"):
        store.take(src, max_files=3)


def test_ignored_files_do_not_count_against_limits(tmp_path, store):
    src = make_tree(tmp_path / "src", {".gitignore": "data/\n", **{f"data/{i}": "x" * 1000 for i in range(50)}})
    assert store.take(src, max_files=5, max_bytes=100).file_count == 1


# ---- materialize / restore ------------------------------------------------------------------------


def test_materialize_recreates_bytes_and_exec_bits_and_is_isolated_from_the_source(tmp_path, store):
    payload = os.urandom(70_000)
    src = make_tree(tmp_path / "src", {"train.py": "print(1)\n", "bin/run.sh": "#!/bin/sh\necho hi\n", "w.bin": payload})
    os.chmod(src / "bin/run.sh", 0o755)
    snap = store.take(src)
    dest = tmp_path / "runs" / "r1"
    (dest / ".torchyard-run").mkdir(parents=True)
    (dest / ".torchyard-run" / "run.json").write_text("{}")
    store.materialize(snap.manifest_id, dest)

    assert (dest / "train.py").read_text() == "print(1)\n"
    assert (dest / "w.bin").read_bytes() == payload
    assert (dest / ".torchyard-run" / "run.json").read_text() == "{}"  # other content kept
    assert os.access(dest / "bin/run.sh", os.X_OK)
    assert not os.stat(dest / "train.py").st_mode & 0o111
    assert subprocess.run([str(dest / "bin/run.sh")], capture_output=True, text=True).stdout == "hi\n"
    # linked to the store where possible, but the exec file is a private copy
    assert os.stat(dest / "w.bin").st_ino == os.stat(store.object_path(snap.files[-1].sha256)).st_ino
    assert os.stat(dest / "bin/run.sh").st_nlink == 1

    (src / "train.py").write_text("print(2)\n")
    (src / "bin/run.sh").write_text("#!/bin/sh\necho changed\n")
    (src / "w.bin").write_bytes(b"overwritten in place")
    (src / "new.py").write_text("new")
    assert (dest / "train.py").read_text() == "print(1)\n"
    assert (dest / "w.bin").read_bytes() == payload
    assert "echo hi" in (dest / "bin/run.sh").read_text()
    assert not (dest / "new.py").exists()


def test_materialize_over_an_existing_copy_replaces_files_without_writing_through(tmp_path, store):
    src = make_tree(tmp_path / "src", {"a.py": "one"})
    first = store.take(src)
    (src / "a.py").write_text("two")
    second = store.take(src)
    dest = tmp_path / "dest"
    store.materialize(first.manifest_id, dest)
    store.materialize(second.manifest_id, dest)
    assert (dest / "a.py").read_text() == "two"
    assert Path(store.object_path(first.files[0].sha256)).read_text() == "one"


def test_restore_gives_writable_independent_copies(tmp_path, store):
    src = make_tree(tmp_path / "src", {"a/train.py": "print(1)\n", "tool.sh": "#!/bin/sh\n"})
    os.chmod(src / "tool.sh", 0o755)
    snap = store.take(src)
    dest = tmp_path / "restored"
    store.restore(snap.manifest_id, dest)
    for rel in ("a/train.py", "tool.sh"):
        st = os.stat(dest / rel)
        assert st.st_mode & stat.S_IWUSR
        assert st.st_nlink == 1
    assert stat.S_IMODE(os.stat(dest / "tool.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "a/train.py").st_mode) == 0o644
    (dest / "a/train.py").write_text("edited")
    assert Path(store.object_path(snap.files[0].sha256)).read_text() == "print(1)\n"


def test_unknown_manifest(tmp_path, store):
    with pytest.raises(NotFoundError):
        store.materialize("0" * 64, tmp_path / "d")
    with pytest.raises(NotFoundError):
        store.restore("../../etc/passwd", tmp_path / "d")


# ---- git ------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=Tester", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_info_in_a_checkout(tmp_path):
    repo = make_tree(tmp_path / "repo", {"train.py": "print(1)\n", "sub/util.py": "u"})
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")

    assert git_info(repo) == {"git.commit": head, "git.dirty": "false", "git.branch": "main"}
    assert git_info(repo / "sub")["git.commit"] == head

    (repo / "train.py").write_text("print(2)\n")
    assert git_info(repo)["git.dirty"] == "true"
    _git(repo, "checkout", "-q", "--", "train.py")
    (repo / "untracked.txt").write_text("u")
    assert git_info(repo)["git.dirty"] == "true"


def test_git_info_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    plain = make_tree(tmp_path / "plain", {"a.py": "a"})
    assert git_info(plain) == {}
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert git_info(repo) == {}


# ---- concurrency ----------------------------------------------------------------------------------


def _take_in_process(store_root: str, source: str, barrier, results) -> None:
    barrier.wait(timeout=60)
    snap = SnapshotStore(store_root).take(source)
    results.put(snap.manifest_id)


def test_concurrent_takes_from_four_processes(tmp_path):
    files: dict[str, bytes | str] = {f"pkg{i % 9}/m{i}.py": f"value = {i}\n" * 20 for i in range(300)}
    files.update({f"weights/w{i}.bin": os.urandom(1_500_000) for i in range(4)})
    src = make_tree(tmp_path / "src", files)
    root = str(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_take_in_process, args=(root, str(src), barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        ids = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
        results.close()
        results.join_thread()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(set(ids)) == 1
    store = SnapshotStore(root)
    again = store.take(src)
    assert again.manifest_id == ids[0] and again.new_bytes == 0
    assert os.listdir(store.tmp_dir) == []
    dest = tmp_path / "dest"
    store.materialize(ids[0], dest)
    assert (dest / "weights/w3.bin").read_bytes() == files["weights/w3.bin"]


def test_large_files_dedupe_without_the_stat_cache(tmp_path, store):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    first = store.take(make_tree(tmp_path / "a", {"w.bin": payload, "s.py": "s"}))
    assert first.new_bytes == len(payload) + 1
    second = store.take(make_tree(tmp_path / "b", {"copy/w.bin": payload}))  # another tree: no cache entry
    assert second.new_bytes == 0
    assert second.files[0].sha256 == first.files[1].sha256
    assert os.listdir(store.tmp_dir) == []
    (tmp_path / "store" / "statcache.json").write_text('{"version": 1, "trees": {"x": 3}}')  # garbage
    assert store.take(tmp_path / "a").manifest_id == first.manifest_id


def test_special_files_are_skipped(tmp_path, store):
    src = make_tree(tmp_path / "src", {"a.py": "a"})
    os.mkfifo(src / "pipe")
    os.symlink("pipe", src / "pipe_link")
    assert paths(store.take(src)) == ["a.py"]
