"""node_count × process_count_per_node on local compute, with real launchers, torch.distributed and mpirun."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import EXAMPLES, run_processes, wait_until, write_script

from torchyard import Experiment, PyTorch
from torchyard.launch.contract import AZURE_NAMES, TORCH_NAMES, TORCHYARD_NAMES

needs_mpi = pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (mpirun) is not installed")

ENV_SCRIPT = """
import json, os
from torchyard import Run
run = Run.get_context()
rank = os.environ["RANK"]
os.makedirs("outputs", exist_ok=True)
with open(f"outputs/env_{rank}.json", "w") as fh:
    json.dump(dict(os.environ), fh)
run.log("rank_seen", int(rank))
"""


@pytest.fixture
def envsrc(tmp_path: Path) -> Path:
    folder = tmp_path / "envsrc"
    write_script(folder, "env.py", ENV_SCRIPT)
    write_script(folder, "sleepy.py", """
        import os, sys, time
        from torchyard import Run
        run = Run.get_context()
        print("rank", os.environ["RANK"], "up", flush=True)
        open(f"up_{os.environ['RANK']}", "w").close()
        fail_rank = int(sys.argv[1]) if len(sys.argv) > 1 else -1
        for i in range(600):
            run.log("tick", i)
            if i == 5 and int(os.environ["RANK"]) == fail_rank:
                raise RuntimeError(f"rank {fail_rank} gives up")
            time.sleep(0.1)
    """)
    return folder


def _submit(ws, folder, script, nodes, ppn, backend, args=None, **kw):
    est = PyTorch(str(folder), entry_script=script, node_count=nodes, process_count_per_node=ppn,
                  distributed_backend=backend, script_params=args, **kw)
    return Experiment(ws, "dist").submit(est)


CASES = [("pytorch", 1, 1), ("pytorch", 1, 2), ("pytorch", 2, 1), ("pytorch", 2, 2),
         pytest.param("mpi", 1, 2, marks=needs_mpi), pytest.param("mpi", 2, 1, marks=needs_mpi)]


@pytest.mark.parametrize(("backend", "nodes", "ppn"), CASES)
def test_every_rank_sees_the_env_contract(ws, envsrc, backend, nodes, ppn):
    run = _submit(ws, envsrc, "env.py", nodes, ppn, backend)
    assert run.wait_for_completion(timeout=120)["status"] == "Completed"
    world = nodes * ppn
    envs = {}
    for rank in range(world):
        with open(os.path.join(run.workdir, "outputs", f"env_{rank}.json")) as fh:
            envs[rank] = json.load(fh)
    masters = {(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs.values()}
    assert len(masters) == 1
    addr, port = masters.pop()
    for rank, env in envs.items():
        for name in TORCH_NAMES + AZURE_NAMES + TORCHYARD_NAMES:
            assert name in env, (rank, name)
        assert env["RANK"] == str(rank)
        assert env["WORLD_SIZE"] == str(world)
        assert env["LOCAL_RANK"] == str(rank % ppn)
        assert env["LOCAL_WORLD_SIZE"] == str(ppn)
        assert env["NODE_RANK"] == str(rank // ppn)
        assert env["AZ_BATCHAI_TASK_INDEX"] == str(rank)
        assert env["AZ_BATCH_MASTER_NODE"] == f"{addr}:{port}"
        assert env["AZ_BATCHAI_MPI_MASTER_NODE"] == addr
        assert env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == f"tcp://{addr}:{port}"
        assert env["AZUREML_NODE_COUNT"] == str(nodes)
        assert (env["PET_NODE_RANK"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == (str(rank // ppn), str(nodes), str(ppn))
        assert (env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"]) == (addr, port)
        assert env["TORCHYARD_RUN_ID"] == run.id
        assert env["TORCHYARD_EXPERIMENT"] == "dist"
        assert env["TORCHYARD_WORKSPACE"] == ws.path
        assert env["TORCHYARD_OUTPUT_DIR"] == os.path.join(run.workdir, "outputs")
        assert env["TORCHYARD_LOG_DIR"] == os.path.join(run.workdir, "logs")
        assert env["TORCHYARD_TENSORBOARD_DIR"] == os.path.join(run.workdir, "logs", "tensorboard", f"rank_{rank}")
        if importlib.util.find_spec("mlflow") is not None:  # the ranks run this interpreter
            assert env["MLFLOW_TRACKING_URI"] == "torchyard://" + ws.path
            assert env["MLFLOW_RUN_ID"] == run.id
        if backend == "mpi":
            assert env["OMPI_COMM_WORLD_RANK"] == str(rank)
            assert env["OMPI_COMM_WORLD_SIZE"] == str(world)
            assert "OMPI_COMM_WORLD_LOCAL_RANK" in env and "OMPI_COMM_WORLD_LOCAL_SIZE" in env
            assert env["TORCHYARD_DIST_BACKEND"] == "mpi"
        elif world > 1:
            assert env["TORCHYARD_DIST_BACKEND"] == "gloo"
    assert run.get_metrics(rank="all") == {r: {"rank_seen": r} for r in range(world)}
    assert run.get_metrics(rank=world - 1) == {"rank_seen": world - 1}


def _params(run, world):
    return [torch.load(os.path.join(run.workdir, "outputs", f"params_rank{r}.pt")) for r in range(world)]


def test_ddp_digits_2x2_matches_1x1(ws):
    digits = EXAMPLES / "digits"
    args = {"--epochs": 8}
    ddp = _submit(ws, digits, "train.py", 2, 2, "gloo", args)
    single = _submit(ws, digits, "train.py", 1, 1, None, args)
    assert ddp.wait_for_completion(timeout=300)["status"] == "Completed"
    assert single.wait_for_completion(timeout=300)["status"] == "Completed"
    params = _params(ddp, 4)
    for p in params[1:]:
        assert torch.equal(p, params[0])
    acc_ddp = ddp.get_metrics()["accuracy"][-1]
    acc_single = single.get_metrics()["accuracy"][-1]
    assert abs(acc_ddp - acc_single) <= 0.02, (acc_ddp, acc_single)
    every = ddp.get_metrics(rank="all")
    assert sorted(every) == [0, 1, 2, 3]
    assert len({every[r]["param_checksum"] for r in every}) == 1
    assert "model.pt" in os.listdir(os.path.join(ddp.workdir, "outputs"))


@needs_mpi
def test_mpi4py_allreduce_and_torch_script_under_mpi(ws, tmp_path):
    pytest.importorskip("mpi4py")
    folder = tmp_path / "mpi"
    write_script(folder, "allreduce.py", """
        from mpi4py import MPI
        from torchyard import Run
        comm = MPI.COMM_WORLD
        total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
        Run.get_context().log("total", total)
        print("rank", comm.Get_rank(), "of", comm.Get_size(), "total", total, flush=True)
    """)
    run = _submit(ws, folder, "allreduce.py", 1, 3, "mpi")
    assert run.wait_for_completion(timeout=120)["status"] == "Completed"
    assert run.get_metrics(rank="all") == {r: {"total": 6} for r in range(3)}
    digits = _submit(ws, EXAMPLES / "digits", "train.py", 1, 2, "mpi", {"--epochs": 3})
    assert digits.wait_for_completion(timeout=300)["status"] == "Completed"
    params = _params(digits, 2)
    assert torch.equal(params[0], params[1])


def _live(procs):
    import psutil

    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("backend", ["pytorch", pytest.param("mpi", marks=needs_mpi)])
def test_sigkill_of_one_rank_fails_the_whole_run_fast(ws, envsrc, backend):
    run = _submit(ws, envsrc, "sleepy.py", 2, 2, backend)
    wait_until(lambda: all(os.path.exists(os.path.join(run.workdir, f"up_{r}")) for r in range(4)), timeout=60)
    procs = run_processes(run.workdir)
    victim = next(p for p in procs if "sleepy.py" in " ".join(p.cmdline()) and p.cmdline()[0] != "sh"
                  and p.environ().get("RANK") == "2")
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    details = run.wait_for_completion(raise_on_error=False, timeout=30)
    assert details["status"] == "Failed"
    wait_until(lambda: not _live(procs), timeout=5)
    assert time.time() - killed_at < 5 + 1  # 5 s to stop everything, 1 s for the status to be written
    error = details["error"]
    assert error["rank"] == 2
    assert error["node_rank"] == 1
    assert error["signal"] == "SIGKILL" or error["exit_code"] == 137
    wait_until(lambda: not run_processes(run.workdir), timeout=5)


def test_rank_raising_names_the_rank_and_its_last_lines(ws, envsrc):
    run = _submit(ws, envsrc, "sleepy.py", 1, 2, "pytorch", {"1": ""})
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert details["error"]["rank"] == 1
    assert details["error"]["exit_code"] == 1
    assert any("rank 1 gives up" in line for line in details["error"]["last_lines"])
    assert "rank 1 on node 0" in details["error"]["message"]
    wait_until(lambda: not run_processes(run.workdir), timeout=5)


def test_cancel_2x2_reaches_every_rank(ws, envsrc):
    run = _submit(ws, envsrc, "sleepy.py", 2, 2, "pytorch")
    wait_until(lambda: all(os.path.exists(os.path.join(run.workdir, f"up_{r}")) for r in range(4)), timeout=60)
    procs = run_processes(run.workdir)
    run.cancel()
    assert run.wait_for_completion(raise_on_error=False, timeout=30)["status"] == "Canceled"
    wait_until(lambda: not _live(procs), timeout=10)


def test_show_output_all_ranks_prefixes(ws, envsrc, capsys):
    run = _submit(ws, envsrc, "sleepy.py", 1, 2, "pytorch", {"0": ""})
    run.wait_for_completion(show_output=True, raise_on_error=False, ranks="all", timeout=60)
    out = capsys.readouterr().out
    assert "[rank 0] rank 0 up" in out and "[rank 1] rank 1 up" in out


def test_torchrun_launcher(ws, envsrc):
    run = _submit(ws, envsrc, "env.py", 1, 2, "pytorch", launcher="torchrun")
    assert run.wait_for_completion(timeout=120)["status"] == "Completed"
    for rank in range(2):
        with open(os.path.join(run.workdir, "outputs", f"env_{rank}.json")) as fh:
            env = json.load(fh)
        assert env["RANK"] == str(rank)
        assert env["WORLD_SIZE"] == "2"
        assert env["TORCHYARD_RUN_ID"] == run.id
        assert "TORCHELASTIC_RESTART_COUNT" in env  # really started by torch.distributed.run
    assert run.get_metrics(rank="all") == {0: {"rank_seen": 0}, 1: {"rank_seen": 1}}
    assert os.path.exists(os.path.join(run.workdir, "logs", "torchrun_node_0.txt"))
