"""Runs on a real two-node Slurm cluster started by the tests (tests/integration/slurmcluster.py).

Both "nodes" are slurmd daemons on this machine with NodeAddr 127.0.0.1: sbatch, srun, scontrol and
scancel are real, the network between nodes is loopback. After each test no job of the run is left
in the queue and no process of the run is alive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurmcluster
import torch
from tests.conftest import EXAMPLES, run_processes, wait_until, write_script

from torchyard import ComputeError, ComputeTarget, Experiment, PyTorch
from torchyard.compute.slurm import SlurmCompute

REASON = slurmcluster.unavailable_reason()
pytestmark = pytest.mark.skipif(bool(REASON), reason=str(REASON))


@pytest.fixture(scope="module")
def cluster():
    with slurmcluster.SlurmCluster(nodes=2, cpus=2) as c:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = c.conf  # sbatch/scontrol here, and the supervisors, find the cluster
        try:
            yield c
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


@pytest.fixture
def hpc(ws, cluster):
    # two slurmd on one host share its PMIx rendezvous files, so srun --mpi=pmix (the default, tested
    # on separate machines in test_machines_slurm.py) cannot start a step here: mpirun's path is tested
    ComputeTarget.attach(ws, "hpc", SlurmCompute(mpi_launch="mpirun"))
    yield ws
    wait_until(lambda: not cluster.jobs(), timeout=20, interval=0.2)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slurmsrc")
    write_script(folder, "env.py", """
        import json, os
        from torchyard import Run
        run = Run.get_context()
        rank = os.environ["RANK"]
        os.makedirs("outputs", exist_ok=True)
        with open(f"outputs/env_{rank}.json", "w") as fh:
            json.dump(dict(os.environ), fh)
        run.log("rank_seen", int(rank))
    """)
    write_script(folder, "sleepy.py", """
        import os, sys, time
        from torchyard import Run
        run = Run.get_context()
        rank = int(os.environ["RANK"])
        print("rank", rank, "up", flush=True)
        open(f"up_{rank}", "w").close()
        fail_rank = int(sys.argv[1]) if len(sys.argv) > 1 else -1
        for i in range(1200):
            run.log("tick", i)
            if i == 5 and rank == fail_rank:
                raise RuntimeError(f"rank {fail_rank} gives up")
            time.sleep(0.1)
    """)
    return folder


def _submit(ws, folder, script, nodes=2, ppn=1, backend="pytorch", args=None, **kw):
    est = PyTorch(str(folder), entry_script=script, node_count=nodes, process_count_per_node=ppn,
                  distributed_backend=backend, script_params=args, compute_target="hpc", **kw)
    return Experiment(ws, "slurm").submit(est)


def _job_id(run) -> str:
    path = Path(run.workdir, ".torchyard-run", "slurm_job_id")
    return wait_until(lambda: path.exists() and path.read_text().strip(), timeout=60)


def _statuses(run) -> list[str]:
    return [e["status"] for e in run.get_details()["statusHistory"]]


def test_ddp_digits_1x2_and_2x1_give_identical_parameters(hpc, cluster):
    args = {"--epochs": 2}
    one_node = _submit(hpc, EXAMPLES / "digits", "train.py", nodes=1, ppn=2, args=args)
    two_nodes = _submit(hpc, EXAMPLES / "digits", "train.py", nodes=2, ppn=1, args=args)
    for run in (one_node, two_nodes):
        details = run.wait_for_completion(raise_on_error=False, timeout=240)
        assert details["status"] == "Completed", details.get("error")
        assert "Running" in _statuses(run)
        assert details["compute"]["slurm_job_id"].isdigit()
        assert details["compute"]["slurm_state"] == "COMPLETED"
    params = [torch.load(os.path.join(r.workdir, "outputs", f"params_rank{k}.pt")) for r in (one_node, two_nodes)
              for k in range(2)]
    for p in params[1:]:
        assert torch.equal(p, params[0])  # world size 2 either way: the same training, bit for bit
    every = two_nodes.get_metrics(rank="all")
    assert sorted(every) == [0, 1] and len(every[1]["loss"]) == 2
    names = set(two_nodes.get_file_names())
    assert {"logs/rank_0.txt", "logs/rank_1.txt", "logs/slurm.txt", "outputs/model.pt"} <= names
    script = Path(two_nodes.workdir, ".torchyard-run", "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and f"#SBATCH --job-name={two_nodes.id}" in script


def test_env_contract_and_mpi_backend_across_two_slurm_nodes(hpc, cluster, scripts):
    runs = {backend: _submit(hpc, scripts, "env.py", backend=backend) for backend in ("pytorch", "mpi")}
    for backend, run in runs.items():
        details = run.wait_for_completion(raise_on_error=False, timeout=120)
        assert details["status"] == "Completed", (backend, details.get("error"))
        envs = [json.loads(Path(run.workdir, "outputs", f"env_{r}.json").read_text()) for r in range(2)]
        for rank, env in enumerate(envs):
            assert env["RANK"] == str(rank) and env["WORLD_SIZE"] == "2" and env["NODE_RANK"] == str(rank)
            assert env["MASTER_ADDR"] == "127.0.0.1"  # the first node's NodeAddr, not its name n1
            assert env["MASTER_PORT"] == envs[0]["MASTER_PORT"] != "0"
            assert env["AZUREML_NODE_COUNT"] == "2" and env["TORCHYARD_RUN_ID"] == run.id
            assert env["SLURM_JOB_ID"] == envs[0]["SLURM_JOB_ID"]
            if backend == "mpi":
                assert env["OMPI_COMM_WORLD_RANK"] == str(rank) and env["OMPI_COMM_WORLD_SIZE"] == "2"
                assert env["TORCHYARD_DIST_BACKEND"] == "mpi"
            else:
                assert env["SLURM_NODEID"] == str(rank)  # each node's launcher ran in its own srun task
        assert run.get_metrics(rank="all") == {0: {"rank_seen": 0}, 1: {"rank_seen": 1}}


def test_shared_dir_apart_from_the_workspace_streams_back(ws, cluster, scripts, tmp_path):
    shared = tmp_path / "shared"
    ComputeTarget.attach(ws, "scratch", SlurmCompute(shared_dir=str(shared)))
    est = PyTorch(str(scripts), entry_script="env.py", node_count=2, distributed_backend="pytorch",
                  compute_target="scratch")
    run = Experiment(ws, "slurm").submit(est)
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Completed", details.get("error")
    env = json.loads(Path(run.workdir, "outputs", "env_1.json").read_text())  # collected from the shared copy
    assert env["TORCHYARD_OUTPUT_DIR"] == str(shared / "runs" / run.id / "outputs")
    assert run.get_metrics(rank="all") == {0: {"rank_seen": 0}, 1: {"rank_seen": 1}}  # journals synced back
    assert "logs/rank_1.txt" in run.get_file_names()
    wait_until(lambda: not (shared / "runs" / run.id).exists(), timeout=10)  # released


def test_one_failing_rank_fails_the_job_naming_it(hpc, cluster, scripts):
    run = _submit(hpc, scripts, "sleepy.py", args={"1": ""})
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Failed"
    error = details["error"]
    assert error["rank"] == 1 and error["node_rank"] == 1 and error["exit_code"] == 1
    assert "rank 1 on node 1 exited with code 1" in error["message"]
    assert any("rank 1 gives up" in line for line in error["last_lines"])
    wait_until(lambda: not run_processes(run.workdir), timeout=20)


def test_cancel_scancels_and_leaves_no_process(hpc, cluster, scripts):
    run = _submit(hpc, scripts, "sleepy.py")
    wait_until(lambda: all(os.path.exists(os.path.join(run.workdir, f"up_{r}")) for r in range(2)), timeout=90)
    wait_until(lambda: run.get_status() == "Running", timeout=10)
    procs = run_processes(run.workdir)
    assert any("sleepy.py" in " ".join(p.cmdline()) for p in procs)
    job_id = _job_id(run)
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Canceled"
    assert job_id not in cluster.jobs() or "CANCELLED" in cluster.scontrol("show", "job", job_id)
    wait_until(lambda: not run_processes(run.workdir), timeout=20)


def test_a_job_whose_supervisor_dies_ends_itself(ws, cluster, scripts):
    """The supervisor is killed (SIGKILL) mid-run: the launchers see its heartbeat stop and end the
    Slurm job after orphan_timeout, instead of leaving it running to its --time."""
    import signal

    ComputeTarget.attach(ws, "hpc", SlurmCompute(mpi_launch="mpirun", orphan_timeout=5))
    run = _submit(ws, scripts, "sleepy.py")
    wait_until(lambda: all(os.path.exists(os.path.join(run.workdir, f"up_{r}")) for r in range(2)), timeout=90)
    job_id = _job_id(run)
    os.kill(ws.store.get_run(run.id)["supervisor_pid"], signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: job_id not in cluster.jobs(), timeout=40, interval=0.5)
    assert time.time() - killed < 30
    wait_until(lambda: not run_processes(run.workdir), timeout=20)
    assert "supervisor has been silent" in Path(run.workdir, "logs", "slurm.txt").read_text() + "".join(
        p.read_text() for p in Path(run.workdir, ".torchyard-run").glob("launcher_node_*.log"))


def test_a_killed_supervisor_is_replaced_and_the_slurm_job_runs_on(ws, cluster, tmp_path):
    """REATTACH on Slurm: the supervisor is SIGKILLed mid-run; the first reader starts a replacement,
    which follows the same job id (no new sbatch), keeps the launchers' orphan check fed, and stores
    every value once."""
    import signal

    ComputeTarget.attach(ws, "hpc", SlurmCompute(mpi_launch="mpirun", orphan_timeout=60))
    write_script(tmp_path / "src", "count.py", """
        import os, time
        from torchyard import Run
        run = Run.get_context()
        rank = int(os.environ["RANK"])
        run.log("pid", float(os.getpid()))
        for i in range(40):
            run.log("i", float(i), step=i)
            if i == 5:
                open(f"up_{rank}", "w").close()
            time.sleep(0.15)
    """)
    run = _submit(ws, tmp_path / "src", "count.py")
    wait_until(lambda: all(os.path.exists(os.path.join(run.workdir, f"up_{r}")) for r in range(2)), timeout=90)
    job_id = _job_id(run)
    old = ws.store.get_run(run.id)["supervisor_pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: ws.store.get_run(run.id)["supervisor_pid"] != old or run.get_status() != "Running", timeout=30)
    details = run.wait_for_completion(timeout=120)
    assert details["status"] == "Completed"
    assert [s["replaced"] for s in details["supervisors"]] == [old]
    assert details["compute"]["slurm_job_id"] == job_id and Path(run.workdir, ".torchyard-run", "slurm_job_id"
                                                                  ).read_text().strip() == job_id
    every = run.get_metrics(rank="all")
    for rank in range(2):
        assert every[rank]["i"] == [float(i) for i in range(40)], rank
    wait_until(lambda: not run_processes(run.workdir), timeout=20)


def test_priority_maps_to_sbatch_nice(ws, cluster, scripts):
    """A target with nice_per_priority passes a job's priority to Slurm: priority -2 → Nice=20."""
    ComputeTarget.attach(ws, "hpc", SlurmCompute(mpi_launch="mpirun", nice_per_priority=10))
    run = _submit(ws, scripts, "env.py", nodes=1, priority=-2)
    job_id = _job_id(run)
    fields = parse_scontrol_job_fields(job_id)
    assert run.wait_for_completion(timeout=120)["status"] == "Completed"
    assert fields.get("Nice") == "20", fields


def parse_scontrol_job_fields(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True, check=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def test_scancel_from_outside_ends_the_run_canceled(hpc, cluster, scripts):
    run = _submit(hpc, scripts, "sleepy.py", nodes=1)
    wait_until(lambda: os.path.exists(os.path.join(run.workdir, "up_0")), timeout=90)
    subprocess.run(["scancel", _job_id(run)], check=True, timeout=30)
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Canceled"
    assert "cancelled outside torchyard" in details["cancel_reason"]
    wait_until(lambda: not run_processes(run.workdir), timeout=20)


def test_three_nodes_wait_queued_with_slurms_reason_then_give_up(hpc, cluster, scripts, tmp_path):
    job = tmp_path / "big.yml"
    job.write_text(
        f"command: python sleepy.py\ncode: {scripts}\ncompute: hpc\n"
        "distribution:\n  type: pytorch\nresources:\n  instance_count: 3\nlimits:\n  max_queue_seconds: 6\n"
    )
    from torchyard.spec.jobfile import load_job_file  # noqa: PLC0415

    run = Experiment(hpc, "slurm").submit(load_job_file(str(job)).spec)
    wait_until(lambda: run.get_status() == "Queued" and run.get_details().get("queue_reason"), timeout=30)
    reason = run.get_details()["queue_reason"]
    assert reason.startswith("Slurm: PENDING (") and "n3" in reason, reason  # n3's slurmd never started
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Queued"
    assert "max_queue_seconds=6" in details["error"]["message"] and "Slurm: PENDING" in details["error"]["message"]
    assert "Running" not in _statuses(run)


def test_unknown_partition_fails_at_starting_saying_so(ws, cluster, scripts):
    ComputeTarget.attach(ws, "nopart", SlurmCompute(partition="nope"))
    est = PyTorch(str(scripts), entry_script="env.py", compute_target="nopart")
    details = Experiment(ws, "slurm").submit(est).wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Starting"
    assert "sbatch refused the job: invalid partition specified: nope" in details["error"]["message"]
    assert "sinfo" in details["error"]["message"]


def test_without_sbatch_on_path_submit_says_what_to_install(ws, scripts, tmp_path, monkeypatch):
    # two slurmd on one host share its PMIx rendezvous files, so srun --mpi=pmix (the default, tested
    # on separate machines in test_machines_slurm.py) cannot start a step here: mpirun's path is tested
    ComputeTarget.attach(ws, "hpc", SlurmCompute(mpi_launch="mpirun"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    est = PyTorch(str(scripts), entry_script="env.py", compute_target="hpc")
    with pytest.raises(ComputeError, match=r"sbatch, squeue, scontrol, scancel not found on PATH.*apt-get install slurm-client"):
        Experiment(ws, "slurm").submit(est)


def test_cli_compute_add_slurm_then_dry_run_shows_the_sbatch_script(tmp_path, scripts):
    def ty(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "torchyard", "-w", str(tmp_path / ".torchyard"), *args],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, TORCHYARD_AGENT="0"))

    added = ty("compute", "add", "slurm", "hpc", "--partition", "debug", "--qos", "low", "--time-limit", "01:00:00",
               "--sbatch-arg=--mem=500M", "--sbatch-arg=--constraint=x86")
    assert added.returncode == 0, added.stderr
    assert "slurm" in ty("compute", "list").stdout
    job = tmp_path / "job.yml"
    job.write_text(f"command: python env.py\ncode: {scripts}\ncompute: hpc\n"
                   "distribution:\n  type: pytorch\nresources:\n  instance_count: 2\n")
    dry = ty("submit", str(job), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --partition=debug", "#SBATCH --qos=low", "#SBATCH --time=01:00:00",
                 "#SBATCH --mem=500M", "#SBATCH --constraint=x86", "--kill-on-bad-exit=1", "torchyard.launch.launcher"):
        assert line in out, line
    assert not (tmp_path / ".torchyard" / "runs").exists() or not any((tmp_path / ".torchyard" / "runs").iterdir())
    bad = ty("compute", "add", "slurm", "bad", "--sbatch-arg=--nodes=5")
    assert bad.returncode == 2 and "--nodes is set by torchyard" in bad.stderr


def test_a_sweep_runs_its_trials_on_the_attached_slurm_target(hpc, cluster, tmp_path):
    """Bug: a sweep on an attached target could not start (the target was looked up without the
    workspace: "unknown compute target 'hpc'")."""
    from torchyard import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    write_script(tmp_path / "sw", "t.py", """
        import sys
        from torchyard import Run
        x = float(sys.argv[sys.argv.index("--x") + 1])
        Run.get_context().log("score", x)
    """)
    est = PyTorch(str(tmp_path / "sw"), entry_script="t.py", compute_target="hpc", script_params={"--x": 0})
    hd = HyperDriveConfig(run_config=est, hyperparameter_sampling=GridParameterSampling({"--x": choice(1, 2)}),
                          primary_metric_name="score", primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                          max_total_runs=2, max_concurrent_runs=2)
    sweep = Experiment(hpc, "slurm-sweep").submit(hd)
    sweep.wait_for_completion(timeout=120)
    children = sweep.get_children()
    assert sorted(c.get_status() for c in children) == ["Completed", "Completed"]
    assert {c.get_details()["target"] for c in children} == {"hpc"}
    assert all(c.get_details().get("compute") for c in children)  # each trial was a Slurm job
    assert sweep.get_best_run_by_primary_metric().get_metrics()["score"] == 2
