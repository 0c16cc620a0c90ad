"""Snapshot benchmarks (issue: snapshots). Prints one table; figures go to BENCHMARKS.md.

1. re-snapshot of an unchanged 2,000-file tree (small files, nested folders, a .gitignore), median
   of N (target <= 300 ms, and 0 new bytes)
2. first snapshot and unchanged re-snapshot of a 100 MB tree (50 files of 2 MB random bytes)
3. the peer, in the same run: ``shutil.copytree`` of the same trees (what torchyard did before), and
   ``materialize`` (hard links) next to it, which is what a run's working folder costs now

The trees are left untouched for 0.2 s before the first snapshot, as a user's source is: files
modified within the last 0.1 s are hashed but not trusted to the stat cache ("racily clean").

Usage: python bench/bench_snapshot.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

from torchyard.workspace.snapshots import SnapshotStore


def make_small_tree(root: str, n_files: int = 2000) -> int:
    rng = random.Random(7)
    total = 0
    with open(os.path.join(root, ".gitignore"), "w") as fh:
        fh.write("data/\n*.ckpt\n!keep.ckpt\n*.log\n")
    total += os.path.getsize(os.path.join(root, ".gitignore"))
    for i in range(n_files - 1):
        folder = os.path.join(root, f"pkg{i % 20}", f"mod{(i // 20) % 10}", f"sub{(i // 200) % 3}")
        os.makedirs(folder, exist_ok=True)
        body = f"# file {i}\n" + "x = 1\n" * rng.randint(10, 600)
        with open(os.path.join(folder, f"f{i}.py"), "w") as fh:
            fh.write(body)
        total += len(body)
    return total


def make_big_tree(root: str, n_files: int = 50, size: int = 2 * 1024 * 1024) -> int:
    for i in range(n_files):
        folder = os.path.join(root, f"shard{i % 5}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"w{i}.bin"), "wb") as fh:
            fh.write(os.urandom(size))
    return n_files * size


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def median_time(n: int, fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(n):
        if before is not None:
            before()
        times.append(timed(fn)[0])
    return statistics.median(times)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.repeat
    work = tempfile.mkdtemp(prefix="tybench_snap_")
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        small = os.path.join(work, "small")
        big = os.path.join(work, "big")
        os.makedirs(small)
        os.makedirs(big)
        small_bytes = make_small_tree(small)
        big_bytes = make_big_tree(big)
        time.sleep(0.2)

        def fresh_dest() -> str:
            return tempfile.mkdtemp(dir=work, prefix="dest_")

        def copytree_of(src: str) -> Callable[[], object]:
            holder: dict[str, str] = {}

            def before() -> None:
                holder["dest"] = os.path.join(fresh_dest(), "tree")

            def run() -> object:
                return shutil.copytree(src, holder["dest"], symlinks=True)

            run.before = before  # type: ignore[attr-defined]
            return run

        # ---- 2,000 small files ----
        store = SnapshotStore(os.path.join(work, "store"))
        first_s, first = timed(lambda: store.take(small))
        assert first.file_count == 2000, first.file_count
        snaps = []

        def again() -> None:
            snaps.append(store.take(small))

        again_s = median_time(n, again)
        new_bytes = max(s.new_bytes for s in snaps)
        assert all(s.manifest_id == first.manifest_id for s in snaps)
        copy = copytree_of(small)
        copy_s = median_time(n, copy, copy.before)  # type: ignore[attr-defined]
        mat_s = median_time(n, lambda: store.materialize(first.manifest_id, fresh_dest()))
        rows.append(
            (
                f"re-snapshot, unchanged 2,000 files ({small_bytes / 1e6:.1f} MB), median of {n}",
                f"{ms(again_s)}, new bytes {new_bytes}",
                "shutil.copytree",
                ms(copy_s),
                "<= 300 ms, 0 new bytes",
            )
        )
        rows.append(("first snapshot, 2,000 files (empty store)", ms(first_s), "", "", ""))
        rows.append(
            (f"materialize 2,000 files (hard links), median of {n}", ms(mat_s), "shutil.copytree", ms(copy_s), "")
        )

        # ---- 100 MB ----
        store_big = SnapshotStore(os.path.join(work, "store_big"))
        bfirst_s, bfirst = timed(lambda: store_big.take(big))
        bsnaps = []

        def bagain() -> None:
            bsnaps.append(store_big.take(big))

        bagain_s = median_time(n, bagain)
        bcopy = copytree_of(big)
        bcopy_s = median_time(n, bcopy, bcopy.before)  # type: ignore[attr-defined]
        bmat_s = median_time(n, lambda: store_big.materialize(bfirst.manifest_id, fresh_dest()))
        rows.append(
            (
                f"first snapshot, 50 x 2 MB ({big_bytes / 1e6:.0f} MB)",
                f"{ms(bfirst_s)}, new bytes {bfirst.new_bytes:,}",
                "shutil.copytree",
                ms(bcopy_s),
                "",
            )
        )
        rows.append(
            (
                f"re-snapshot, unchanged 100 MB, median of {n}",
                f"{ms(bagain_s)}, new bytes {max(s.new_bytes for s in bsnaps)}",
                "shutil.copytree",
                ms(bcopy_s),
                "0 new bytes",
            )
        )
        rows.append((f"materialize 100 MB (hard links), median of {n}", ms(bmat_s), "shutil.copytree", ms(bcopy_s), ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = ("what", "torchyard", "peer", "peer figure", "target")
    print_table(header, rows)


if __name__ == "__main__":
    main()
