"""Checkpoint cost (issue #25): how long training is blocked per checkpoint of a 1 GiB state. Prints
one table; figures go to BENCHMARKS.md.

Inside ONE torchyard run (local compute, 1 rank), interleaved, ``--repeat`` rounds (default 3) of:

1. ``torch.save(state, plain/state.pt)``: a plain synchronous save into a folder of the run's working
   folder (the same disk), the file removed after each round;
2. ``with run.checkpoint(step=i, keep_last=1) as folder: torch.save(state, folder / "state.pt")``: the
   whole block, i.e. what training waits for; beside it the part after ``torch.save`` (the rank's
   marker, the journal flush, the manifest with the folder's size, the rename, retention).

Each twice: without fsync (the save returns once the bytes are in the page cache: noisy, it depends on
what the kernel is still writing back) and with ``os.fsync`` of the file inside the save (until the
bytes are on disk). One untimed save comes first (a process's first 1 GiB write is slower: 2.6 s
against 0.4 s here). Every save starts after an untimed ``os.sync()``, and the order of 1 and 2
alternates between rounds. The copy into the run's artifacts (hard links) and any upload happen in
the supervisor, outside the rank.

Usage: python bench/bench_checkpoint.py [--repeat N] [--gib G]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

SCRIPT = r"""
import json, os, shutil, sys, time
import torch
from torchyard import Run

repeat, gib = int(sys.argv[1]), float(sys.argv[2])
run = Run.get_context()
state = {"w": torch.randn(int(gib * 2**30 / 4))}  # float32
nbytes = state["w"].numel() * 4
plain = os.path.abspath("plain")
os.makedirs(plain, exist_ok=True)
out = {k: [] for k in ("plain", "checkpoint", "commit", "plain_fsync", "checkpoint_fsync", "commit_fsync")}
out["bytes"] = nbytes


def save(path, fsync):
    with open(path, "wb") as fh:
        torch.save(state, fh)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def plain_save(fsync):
    os.sync()  # each save starts with nothing left to write back (not timed)
    t0 = time.perf_counter()
    save(os.path.join(plain, "state.pt"), fsync)
    out["plain_fsync" if fsync else "plain"].append(time.perf_counter() - t0)
    os.remove(os.path.join(plain, "state.pt"))


step = 0
def checkpoint_save(fsync):
    global step
    os.sync()
    t0 = time.perf_counter()
    with run.checkpoint(step=step, keep_last=1, metrics={"round": step}) as folder:
        save(folder / "state.pt", fsync)
        t1 = time.perf_counter()
    t2 = time.perf_counter()
    step += 1
    suffix = "_fsync" if fsync else ""
    out["checkpoint" + suffix].append(t2 - t0)
    out["commit" + suffix].append(t2 - t1)


save(os.path.join(plain, "warmup.pt"), False)  # untimed: the process's first 1 GiB write costs more
os.remove(os.path.join(plain, "warmup.pt"))
for i in range(repeat):  # interleaved, the order alternating
    for fsync in (False, True):
        for fn in ((plain_save, checkpoint_save) if i % 2 == 0 else (checkpoint_save, plain_save)):
            fn(fsync)
os.makedirs("outputs", exist_ok=True)
with open("outputs/bench.json", "w") as fh:
    json.dump(out, fh)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()

    from torchyard import Experiment, ScriptRunConfig, Workspace

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        with open(os.path.join(src, "bench.py"), "w") as fh:
            fh.write(textwrap.dedent(SCRIPT))
        ws = Workspace(path=os.path.join(tmp, ".torchyard"))
        run = Experiment(ws, "bench").submit(ScriptRunConfig(src, script="bench.py", arguments=[
            str(args.repeat), str(args.gib)]))
        run.wait_for_completion(timeout=3600)
        with open(os.path.join(run.workdir, "outputs", "bench.json")) as fh:
            got = json.load(fh)
        found = run.get_checkpoints()
        assert [c["step"] for c in found] == [2 * args.repeat - 1] and found[0]["where"] == "artifacts", found
        ws.store.dispose()

    size = got["bytes"] / 2**30
    rows = []
    for suffix, how in (("", "no fsync: until the bytes are in the page cache"), ("_fsync", "with fsync: until they are on disk")):
        med = {k: statistics.median(got[k + suffix]) for k in ("plain", "checkpoint", "commit")}
        rows += [
            [f"torch.save of {size:.2f} GiB into a plain folder, {how}", f"{med['plain']:.3f} s",
             ", ".join(f"{t:.3f}" for t in got["plain" + suffix]), "1.00x"],
            ["the same inside `with run.checkpoint(step)` (the whole block)", f"{med['checkpoint']:.3f} s",
             ", ".join(f"{t:.3f}" for t in got["checkpoint" + suffix]), f"{med['checkpoint'] / med['plain']:.2f}x"],
            ["  of which the commit (after torch.save)", f"{med['commit'] * 1e3:.1f} ms",
             ", ".join(f"{t * 1e3:.1f}" for t in got["commit" + suffix]), f"{med['commit'] / med['plain']:.3f}x"],
        ]
    print_table(["training blocked per checkpoint", f"median of {args.repeat}", "each round", "vs plain"], rows)
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
