"""Hangs that explain themselves (issue #25, item 5): when hang_timeout_seconds fires, every rank's
Python stacks land in logs/stacks_rank_N.txt before the ranks are stopped, the straggler is named
and the failure's cause is `hung`. Real ranks on local compute, a real torch.distributed collective."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from tests.conftest import run_processes, wait_until, write_script

from torchyard import Experiment, PyTorch

pytest.importorskip("torch")

HANG = 6  # torch and its rendezvous start in silence: a shorter one can fire before the hang

SCRIPT = """
import time
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
print("ready", rank, flush=True)
open(f"outputs/ready_{rank}", "w").close()


def stuck_forever():
    while True:
        time.sleep(0.5)


if rank == 1:
    stuck_forever()  # the straggler: it never joins the all_reduce rank 0 waits in
dist.all_reduce(torch.ones(1))
"""


needs_mpi = pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (mpirun) is not installed")
CASES = [(1, 2, "torchyard", "pytorch"), (2, 1, "torchyard", "pytorch"), (1, 2, "torchrun", "pytorch"),
         pytest.param(2, 1, "torchyard", "mpi", marks=needs_mpi)]


@pytest.mark.parametrize(("nodes", "ppn", "launcher", "backend"), CASES)
def test_a_hung_collective_leaves_every_ranks_stacks_and_names_the_straggler(ws, tmp_path, nodes, ppn, launcher,
                                                                             backend):
    folder = tmp_path / "hang"
    write_script(folder, "hang.py", SCRIPT)
    run = Experiment(ws, "hang").submit(
        PyTorch(str(folder), entry_script="hang.py", node_count=nodes, process_count_per_node=ppn,
                distributed_backend=backend, launcher=launcher, hang_timeout_seconds=HANG))
    logs = os.path.join(run.workdir, "logs")
    wait_until(lambda: all(Path(run.workdir, "outputs", f"ready_{r}").exists() for r in (0, 1)), timeout=60)
    quiet_since = time.time()
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert time.time() - quiet_since < HANG + 10
    assert details["status"] == "Failed"
    error = details["error"]
    assert error["hang"] is True and error["cause"] == "hung"
    assert error["stragglers"] == [1]
    assert "straggler: rank 1 at stuck_forever" in error["message"], error["message"]
    assert error["stacks"] == {"0": "logs/stacks_rank_0.txt", "1": "logs/stacks_rank_1.txt"}
    rank0 = Path(logs, "stacks_rank_0.txt").read_text()
    rank1 = Path(logs, "stacks_rank_1.txt").read_text()
    assert "in all_reduce" in rank0 and 'hang.py", line' in rank0
    assert "in stuck_forever" in rank1
    assert {"logs/stacks_rank_0.txt", "logs/stacks_rank_1.txt"} <= set(run.get_file_names())
    wait_until(lambda: not run_processes(run.workdir), timeout=10)
