"""Runs on a real two-node Ray cluster started by the tests (tests/integration/raycluster.py).

After each test nothing of the run may remain: no placement group, no live actor, no process of the
run, no node folder.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import raycluster
import torch
from tests.conftest import EXAMPLES, wait_until, write_script

from torchyard import ComputeTarget, Experiment, PyTorch, RayCompute

pytestmark = pytest.mark.skipif(bool(raycluster.unavailable_reason()), reason=str(raycluster.unavailable_reason()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    node_dir = tmp_path_factory.mktemp("raynodes")
    os.environ["TORCHYARD_RAY_NODE_DIR"] = str(node_dir)  # the nodes inherit it from `ray start`
    try:
        with raycluster.RayCluster(nodes=2) as c:
            c.node_dir = node_dir
            yield c
    finally:
        os.environ.pop("TORCHYARD_RAY_NODE_DIR", None)


@pytest.fixture
def ray_ws(ws, cluster, monkeypatch):
    monkeypatch.setenv("TORCHYARD_RAY_NODE_DIR", str(cluster.node_dir))
    ComputeTarget.attach(ws, "ray-a", RayCompute(address=cluster.address, collect_all_outputs=True))
    yield ws
    _assert_nothing_left(cluster)


def _run_procs(run_id: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if run_id in " ".join(proc.info.get("cmdline") or []) or run_id in (proc.info.get("cwd") or ""):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _assert_nothing_left(cluster) -> None:
    def clean() -> bool:
        state = cluster.state()
        return not state["placement_groups"] and not state["actors"]

    wait_until(clean, timeout=20, interval=0.5)
    runs = cluster.node_dir / "runs"
    wait_until(lambda: not runs.exists() or not any(runs.iterdir()), timeout=10)
    assert len(cluster.state()["alive_nodes"]) == 2


def _submit(ws, folder, script, nodes=2, backend="pytorch", args=None, **kw):
    est = PyTorch(str(folder), entry_script=script, node_count=nodes, process_count_per_node=1,
                  distributed_backend=backend, script_params=args, compute_target="ray-a", **kw)
    return Experiment(ws, "ray").submit(est)


@pytest.fixture
def sleepy(tmp_path: Path) -> Path:
    folder = tmp_path / "sleepy"
    write_script(folder, "sleepy.py", """
        import os, time
        from torchyard import Run
        run = Run.get_context()
        print("rank", os.environ["RANK"], "up in", os.getcwd(), flush=True)
        for i in range(3000):
            run.log("tick", i)
            time.sleep(0.1)
    """)
    write_script(folder, "where.py", """
        import os
        from torchyard import Run
        run = Run.get_context()
        node = os.environ["NODE_RANK"]
        run.log("own_node_folder", int(os.getcwd().endswith(f"node_{node}")))
        run.log("rank", int(os.environ["RANK"]))
        try:
            from mpi4py import MPI
            run.log("allreduce", MPI.COMM_WORLD.allreduce(int(os.environ["RANK"]) + 1))
        except ImportError:
            pass
    """)
    return folder


def test_ddp_digits_on_two_ray_nodes(ray_ws, cluster):
    run = _submit(ray_ws, EXAMPLES / "digits", "train.py", args={"--epochs": 4})
    details = run.wait_for_completion(timeout=240)
    assert details["status"] == "Completed"
    outputs = Path(run.workdir) / "outputs"
    p0 = torch.load(outputs / "params_rank0.pt")
    p1 = torch.load(outputs / "node_1" / "params_rank1.pt")  # node 1's outputs/ as outputs/node_1/
    assert torch.equal(p0, p1)
    every = run.get_metrics(rank="all")
    assert set(every) == {0, 1}
    assert every[0]["param_checksum"] == every[1]["param_checksum"]
    assert len(every[1]["loss"]) == 4
    names = run.get_file_names()
    assert {"logs/rank_0.txt", "logs/rank_1.txt", "outputs/model.pt"} <= set(names)
    compute = details["compute"]
    assert compute["strategy"] == "STRICT_SPREAD"
    assert len({n["ray_node_id"] for n in compute["nodes"]}) == 2  # one job node per Ray node


def test_mpi_backend_across_two_ray_nodes_through_the_cli(ray_ws, cluster, sleepy, tmp_path):
    job = tmp_path / "job.yml"
    job.write_text(
        f"command: python where.py\ncode: {sleepy}\ncompute: ray-a\n"
        "distribution:\n  type: mpi\n  process_count_per_instance: 1\nresources:\n  instance_count: 2\n"
    )
    # the submitting process exits right away: the run's supervisor goes on without it
    out = subprocess.run([sys.executable, "-m", "torchyard", "-w", ray_ws.path, "submit", str(job)],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, TORCHYARD_AGENT="0"))
    assert out.returncode == 0, out.stderr
    run = ray_ws.get_run(out.stdout.strip().splitlines()[-1])
    assert run.wait_for_completion(timeout=180)["status"] == "Completed"
    every = run.get_metrics(rank="all")
    assert set(every) == {0, 1}
    assert every[0]["own_node_folder"] == every[1]["own_node_folder"] == 1  # rank 1 ran in node 1's folder
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pass
    else:  # where mpi4py is there, the ranks must have used it (not skipped the check silently)
        assert every[0]["allreduce"] == every[1]["allreduce"] == 3
    assert "logs/rank_1.txt" in run.get_file_names()


def test_cancel_stops_every_rank_on_every_node(ray_ws, cluster, sleepy):
    run = _submit(ray_ws, sleepy, "sleepy.py")
    wait_until(lambda: len(run.get_metrics(rank="all")) == 2, timeout=120, interval=0.2)
    # `torchyard logs --follow` streams node 1's rank live, as on local compute
    follow = subprocess.Popen([sys.executable, "-m", "torchyard", "-w", ray_ws.path, "logs", run.id, "--follow",
                               "--rank", "all"], stdout=subprocess.PIPE, text=True)
    started = time.time()
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Canceled"
    assert time.time() - started < 15
    followed, _ = follow.communicate(timeout=30)
    assert "rank 1 up in" in followed and "node_1" in followed
    wait_until(lambda: not _run_procs(run.id), timeout=15)


def test_killed_rank_fails_the_run_within_10s_naming_it(ray_ws, cluster, sleepy):
    run = _submit(ray_ws, sleepy, "sleepy.py")
    wait_until(lambda: len(run.get_metrics(rank="all")) == 2, timeout=120, interval=0.2)
    victims = [p for p in _run_procs(run.id) if "sleepy.py" in " ".join(p.cmdline()) and "node_1" in p.cwd()]
    assert victims, "rank 1's process was not found"
    killed = time.time()
    for proc in victims:
        proc.send_signal(signal.SIGKILL)
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert time.time() - killed < 10
    assert details["error"]["rank"] == 1
    assert "SIGKILL" in details["error"]["message"]
    wait_until(lambda: not _run_procs(run.id), timeout=15)


def test_a_job_too_big_for_the_cluster_waits_queued_then_gives_up(ray_ws, cluster, sleepy):
    run = _submit(ray_ws, sleepy, "sleepy.py", nodes=3, max_run_duration_seconds=None)
    wait_until(lambda: run.get_status() == "Queued" and run.get_details().get("queue_reason"), timeout=60)
    reason = run.get_details()["queue_reason"]
    assert "waiting for 3 node(s) with 1 CPU" in reason and "has 2 node(s)" in reason
    run.cancel()
    assert run.wait_for_completion(raise_on_error=False, timeout=30)["status"] == "Canceled"


def test_max_queue_seconds_gives_up_cleanly(ray_ws, cluster, sleepy, tmp_path):
    job = tmp_path / "big.yml"
    job.write_text(
        f"command: python sleepy.py\ncode: {sleepy}\ncompute: ray-a\n"
        "distribution:\n  type: pytorch\nresources:\n  instance_count: 3\nlimits:\n  max_queue_seconds: 4\n"
    )
    from torchyard.spec.jobfile import load_job_file  # noqa: PLC0415

    loaded = load_job_file(str(job))
    run = Experiment(ray_ws, "ray").submit(loaded.spec)
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Queued"
    assert "max_queue_seconds=4" in details["error"]["message"]
    assert "waiting for 3 node(s)" in details["error"]["message"]


def test_unreachable_cluster_fails_the_run_with_a_clear_message(ws, cluster):
    ComputeTarget.attach(ws, "nowhere", RayCompute(address="127.0.0.1:9"))
    src = Path(ws.path).parent / "src"
    write_script(src, "ok.py", "print('hi')\n")
    est = PyTorch(str(src), entry_script="ok.py", compute_target="nowhere")
    details = Experiment(ws, "ray").submit(est).wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Failed"
    assert "cannot connect to the Ray cluster at '127.0.0.1:9'" in details["error"]["message"]


def test_a_dead_node_agent_fails_the_run_naming_the_node(ray_ws, cluster, sleepy):
    run = _submit(ray_ws, sleepy, "sleepy.py")
    wait_until(lambda: len(run.get_metrics(rank="all")) == 2, timeout=120, interval=0.2)
    launchers = [p for p in _run_procs(run.id)
                 if "torchyard.launch.launcher" in " ".join(p.cmdline()) and "node_1" in p.cwd()]
    assert len(launchers) == 1
    agent = launchers[0].parent()  # the NodeAgent actor's worker process: as good as the node dying
    killed = time.time()
    agent.send_signal(signal.SIGKILL)
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Failed"
    assert time.time() - killed < 10
    assert "node 1 of the job" in details["error"]["message"]
    wait_until(lambda: not _run_procs(run.id), timeout=15)


def test_each_node_builds_the_environment_in_its_own_cache(ray_ws, cluster, tmp_path):
    folder = tmp_path / "envjob"
    write_script(folder, "use_pkg.py", """
        import os, sys
        import tomli_w
        from torchyard import Run
        Run.get_context().log("in_node_env", int(sys.executable.startswith(os.environ["TORCHYARD_RAY_NODE_DIR"])))
    """)
    run = _submit(ray_ws, folder, "use_pkg.py", pip_packages=["tomli-w==1.2.0"])
    assert run.wait_for_completion(timeout=240)["status"] == "Completed"
    every = run.get_metrics(rank="all")
    assert every[0]["in_node_env"] == every[1]["in_node_env"] == 1
    assert {"logs/bootstrap_node_0.txt", "logs/bootstrap_node_1.txt"} <= set(run.get_file_names())
    envs = cluster.node_dir / "envs"
    assert [p.name for p in envs.iterdir() if (p / ".ready").exists()]  # the node cache keeps the build
    # built on the nodes only, not also on the submitting machine (it once was, twice over)
    assert not (Path(ray_ws.path) / "envs").exists()
    assert run.get_details()["environment"]["placed_on"] == "nodes"


def _client_server_logs(cluster) -> str:
    """The head's Ray Client proxy and per-connection server logs, for a failure's message."""
    out = []
    for path in sorted(glob.glob(os.path.join(cluster.temp_dir, "session_latest", "logs", "ray_client_server*"))):
        with open(path, errors="replace") as f:
            out.append(f"--- {os.path.basename(path)}\n{f.read()[-3000:]}")
    return "\n".join(out) or "(no ray_client_server logs)"


def test_ray_client_address_from_outside_the_cluster(ws, cluster, sleepy, monkeypatch):
    monkeypatch.setenv("TORCHYARD_RAY_NODE_DIR", str(cluster.node_dir))
    ComputeTarget.attach(ws, "ray-client", RayCompute(address=f"ray://{cluster.ip}:{cluster.client_port}"))
    est = PyTorch(str(sleepy), entry_script="where.py", node_count=2, distributed_backend="pytorch",
                  compute_target="ray-client")
    run = Experiment(ws, "ray").submit(est)
    details = run.wait_for_completion(raise_on_error=False, timeout=180)
    assert details["status"] == "Completed", (details.get("error"), _client_server_logs(cluster))
    every = run.get_metrics(rank="all")
    assert every[0]["own_node_folder"] == every[1]["own_node_folder"] == 1
    _assert_nothing_left(cluster)


def test_release_cleans_nodes_set_up_behind_the_handles_back(cluster, sleepy, tmp_path, monkeypatch):
    """Cancel while the handle still says "placing" though Ray already placed the group and the actors
    set up their node folders: release() must still clean them (and leave no group or actor)."""
    import shutil

    from torchyard.compute.base import PreparedJob
    from torchyard.spec.job import build_job_spec

    monkeypatch.setenv("TORCHYARD_RAY_NODE_DIR", str(cluster.node_dir))
    workdir = tmp_path / "wd"
    shutil.copytree(sleepy, workdir)
    target = RayCompute(address=cluster.address)
    spec = build_job_spec(source_directory=str(workdir), entry_script="sleepy.py", compute_target="r",
                          distribution={"backend": "pytorch", "node_count": 2, "process_count_per_node": 1})
    job = PreparedJob(run_id="behindtheback", experiment="e", workspace="w", workdir=str(workdir), spec=spec,
                      rank_argv=[sys.executable, "sleepy.py"], launcher_python=sys.executable,
                      rank_python=sys.executable)
    handle = target.schedule(target.dryrun(job))
    folders = [cluster.node_dir / "runs" / "behindtheback" / f"node_{k}" for k in range(2)]
    try:
        wait_until(lambda: all((f / "sleepy.py").exists() for f in folders), timeout=60, interval=0.2)
        assert handle.state == "placing"  # never polled: it has not looked
        handle.cancel()
        assert handle.poll() == 130
    finally:
        handle.release()
    _assert_nothing_left(cluster)


def test_mpi_rank_failing_on_the_second_node_is_named(ray_ws, cluster, tmp_path):
    folder = tmp_path / "mpifail"
    write_script(folder, "fail1.py", """
        import os, sys, time
        if os.environ["RANK"] == "1":
            print("rank 1 gives up", flush=True)
            sys.exit(3)
        time.sleep(60)
    """)
    run = _submit(ray_ws, folder, "fail1.py", backend="mpi")
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Failed"
    assert details["error"]["rank"] == 1 and details["error"]["exit_code"] == 3
    assert "rank 1 gives up" in details["error"]["message"]


def test_a_sweep_runs_its_trials_on_the_attached_ray_target(ray_ws, cluster, tmp_path):
    """Bug: a sweep on an attached target could not start ("unknown compute target 'ray-a'")."""
    from torchyard import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    write_script(tmp_path / "sw", "t.py", """
        import sys
        from torchyard import Run
        x = float(sys.argv[sys.argv.index("--x") + 1])
        Run.get_context().log("score", x)
    """)
    est = PyTorch(str(tmp_path / "sw"), entry_script="t.py", compute_target="ray-a", script_params={"--x": 0})
    hd = HyperDriveConfig(run_config=est, hyperparameter_sampling=GridParameterSampling({"--x": choice(1, 2)}),
                          primary_metric_name="score", primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                          max_total_runs=2, max_concurrent_runs=1)
    sweep = Experiment(ray_ws, "ray-sweep").submit(hd)
    sweep.wait_for_completion(timeout=180)
    children = sweep.get_children()
    assert sorted(c.get_status() for c in children) == ["Completed", "Completed"]
    assert all(c.get_details()["compute"].get("placement_group") or c.get_details()["compute"] for c in children)
    assert sweep.get_best_run_by_primary_metric().get_metrics()["score"] == 2
