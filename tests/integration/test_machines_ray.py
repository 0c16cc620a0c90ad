"""Ray on simulated separate machines (tests/integration/machines.py): the head on the submitting
machine with no CPUs (no job node can land where the workspace is visible), a worker on each of two
machines with its own address, hostname (resolving to 127.0.1.1, as on Debian), /tmp and disk. The
submitter's workspace, sources and data folders (under /tmp) are not there.

What this proves that one machine cannot: ranks rendezvous across addresses (a rank on a host whose
name resolves to loopback must not advertise it), the job's environment and inputs are placed on
each node, and outputs come back from a node that shares nothing with the submitter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import machines
import pytest
import raycluster
from tests.conftest import EXAMPLES, REPO, wait_until, write_script

from torchyard import ComputeTarget, Datastore, Experiment, PyTorch, RayCompute, SpecError

REASON = machines.unavailable_reason() or raycluster.unavailable_reason()
pytestmark = pytest.mark.skipif(bool(REASON), reason=str(REASON))


@pytest.fixture(scope="module")
def cluster():
    with machines.Machines(2, keep=[str(REPO), sys.prefix]) as m:
        # the machines reach no package registry: jobs' packages come from a local index (as on an
        # air-gapped cluster), which pip's PIP_INDEX_URL names and torchyard hands on to uv
        index = Path(m.root) / "index" / "simple"
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                              str(index / "tomli-w"), "tomli-w==1.2.0"], capture_output=True, text=True)
        assert got.returncode == 0, got.stderr

        def node_env(k: int) -> dict[str, str]:
            return {"TORCHYARD_RAY_NODE_DIR": os.path.join(m.folder(k), "ray-node"),
                    "TORCHYARD_NODE_CACHE": os.path.join(m.folder(k), "cache"),
                    "PIP_INDEX_URL": f"file://{index}", "UV_CACHE_DIR": os.path.join(m.folder(k), "uv")}

        with raycluster.RayCluster(cpus_per_node=2, machines=m, node_env=node_env) as ray:
            yield m, ray.address, ray


def _state(ray) -> dict:
    return ray.state()


@pytest.fixture
def far_ws(ws, cluster):
    _m, address, ray = cluster
    ComputeTarget.attach(ws, "far", RayCompute(address=address, collect_all_outputs=True, shared_dirs=[_m.root]))
    yield ws

    def clean() -> bool:
        state = _state(ray)
        return not state["placement_groups"] and not state["actors"]

    wait_until(clean, timeout=30, interval=1)


def test_ddp_digits_2x1_across_two_machines(far_ws, cluster):
    m, _address, _env = cluster
    est = PyTorch(str(EXAMPLES / "digits"), entry_script="train.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", script_params={"--epochs": 3}, compute_target="far")
    run = Experiment(far_ws, "machines").submit(est)
    details = run.wait_for_completion(timeout=300, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert every[0]["param_checksum"] == every[1]["param_checksum"]
    nodes = details["compute"]["nodes"]
    assert {n["ip"] for n in nodes} == {m.ip(1), m.ip(2)}  # one job node per machine, none on the submitter
    assert "outputs/model.pt" in run.get_file_names()
    assert (Path(run.workdir) / "outputs" / "node_1").is_dir()  # the other machine's outputs came back


def test_environment_and_inputs_are_placed_on_each_machine(far_ws, cluster, tmp_path):
    """A pip environment is built on each machine in its own cache (not on the submitter), and an
    input from a local datastore that is under /tmp — invisible to the machines — fails at
    Preparing naming the node, while one on every machine's disk works."""
    m, _address, _env = cluster
    shared = Path(m.root) / "shared-data"  # /var/tmp: every machine sees it (a cluster's NFS)
    shared.mkdir(exist_ok=True)
    (shared / "n.txt").write_text("5\n")
    store = Datastore.register_local(far_ws, "nfs", str(shared))
    write_script(tmp_path / "src", "use.py", """
        import os, socket, sys
        import tomli_w
        from torchyard import Run
        run = Run.get_context()
        folder = sys.argv[sys.argv.index("--data") + 1]
        run.log("n", int(open(os.path.join(folder, "n.txt")).read()))
        run.log("own_cache", int(sys.executable.startswith(os.environ["TORCHYARD_NODE_CACHE"])
                                 or "/ray-node/" in sys.executable))
        print("host", socket.gethostname(), flush=True)
    """)
    est = PyTorch(str(tmp_path / "src"), entry_script="use.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", pip_packages=["tomli-w==1.2.0"], compute_target="far",
                  script_params={"--data": store.path("").as_download()})
    run = Experiment(far_ws, "machines").submit(est)
    details = run.wait_for_completion(timeout=400, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert every[0] == every[1] == {"n": 5.0, "own_cache": 1.0}
    assert not (Path(far_ws.path) / "envs").exists()  # nothing built on the submitting machine
    logs = {r: (Path(run.workdir) / "logs" / f"rank_{r}.txt").read_text() for r in (0, 1)}
    assert {logs[0].split("host ")[1].split()[0], logs[1].split("host ")[1].split()[0]} == {"tynode1", "tynode2"}

    hidden = tmp_path / "private"  # under /tmp: the machines have their own /tmp
    hidden.mkdir()
    (hidden / "n.txt").write_text("1\n")
    private = Datastore.register_local(far_ws, "private", str(hidden))
    bad = PyTorch(str(tmp_path / "src"), entry_script="use.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", compute_target="far",
                  script_params={"--data": private.path("").as_download()})
    with pytest.raises(SpecError) as refused:  # refused at submit: not on the target's shared filesystem
        Experiment(far_ws, "machines").submit(bad)
    assert "'private'" in str(refused.value) and "'far'" in str(refused.value) and m.root in str(refused.value)

    # a target that claims /tmp is shared when it is not: the node finds no folder, and says so
    ComputeTarget.attach(far_ws, "far-claims", RayCompute(address=_address, shared_dirs=[m.root, str(tmp_path)]))
    bad = PyTorch(str(tmp_path / "src"), entry_script="use.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", compute_target="far-claims",
                  script_params={"--data": private.path("").as_download()})
    failed = Experiment(far_ws, "machines").submit(bad).wait_for_completion(timeout=300, raise_on_error=False)
    assert failed["status"] == "Failed"
    assert "could not be prepared" in failed["error"]["message"] and "does not exist" in failed["error"]["message"]


def test_a_sweep_across_machines_stops_a_poor_trial_on_a_remote_node(far_ws, cluster, tmp_path):
    """HyperDrive with 2x1 trials on the machines; the Bandit policy cancels the poor one."""
    from torchyard import BanditPolicy, GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    m, _address, _env = cluster
    write_script(tmp_path / "sw", "t.py", """
        import os, sys, time
        from torchyard import Run
        run = Run.get_context()
        level = float(sys.argv[sys.argv.index("--level") + 1])
        for i in range(40):
            if os.environ["RANK"] == "0":
                run.log("score", level + i * 0.01)
            time.sleep(0.5)
    """)
    est = PyTorch(str(tmp_path / "sw"), entry_script="t.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", compute_target="far", script_params={"--level": 0})
    hd = HyperDriveConfig(run_config=est, hyperparameter_sampling=GridParameterSampling({"--level": choice(1, 10)}),
                          policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=2),
                          primary_metric_name="score", primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                          max_total_runs=2, max_concurrent_runs=2)
    sweep = Experiment(far_ws, "machines-sweep").submit(hd)
    details = sweep.wait_for_completion(timeout=400, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    by_level = {c.get_tags()["hyperparameters"]: c for c in sweep.get_children()}
    poor = by_level['{"--level": 1}'].get_details()
    assert poor["status"] == "Canceled" and "BanditPolicy" in poor["cancel_reason"]
    assert {n["ip"] for n in poor["compute"]["nodes"]} == {m.ip(1), m.ip(2)}  # it ran on the machines
    assert by_level['{"--level": 10}'].get_status() == "Completed"
    assert details["sweep"]["early_terminated"] == 1


def test_mpi_ranks_across_two_machines(far_ws, cluster, tmp_path):
    """mpirun on node 0 reaches the other machine through the node agent's remote shell (no ssh)."""
    pytest.importorskip("mpi4py")
    m, _address, _env = cluster
    write_script(tmp_path / "src", "mpi.py", """
        import os, socket
        from mpi4py import MPI
        from torchyard import Run
        comm = MPI.COMM_WORLD
        run = Run.get_context()
        assert int(os.environ["RANK"]) == comm.Get_rank()
        run.log("total", comm.allreduce(comm.Get_rank() + 1))
        run.log("hosts", len(set(comm.allgather(socket.gethostname()))))
    """)
    est = PyTorch(str(tmp_path / "src"), entry_script="mpi.py", node_count=2, process_count_per_node=1,
                  distributed_backend="mpi", compute_target="far")
    run = Experiment(far_ws, "machines").submit(est)
    details = run.wait_for_completion(timeout=240, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    assert run.get_metrics(rank="all") == {0: {"total": 3.0, "hosts": 2.0}, 1: {"total": 3.0, "hosts": 2.0}}
    assert {n["ip"] for n in details["compute"]["nodes"]} == {m.ip(1), m.ip(2)}


def test_warm_agents_serve_run_after_run(far_ws, cluster, tmp_path):
    """``keep_agents=True``: one detached agent per machine serves both runs (the same process), no
    new actor per run; the runs' placement groups are still removed."""
    m, address, ray = cluster
    ComputeTarget.attach(far_ws, "warm", RayCompute(address=address, keep_agents=True, shared_dirs=[m.root]))
    write_script(tmp_path / "src", "hi.py", """
        import os
        from torchyard import Run
        Run.get_context().log("rank", int(os.environ["RANK"]))
    """)
    est = PyTorch(str(tmp_path / "src"), entry_script="hi.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", compute_target="warm")
    try:
        first = Experiment(far_ws, "machines").submit(est).wait_for_completion(timeout=240, raise_on_error=False)
        second = Experiment(far_ws, "machines").submit(est).wait_for_completion(timeout=240, raise_on_error=False)
        assert first["status"] == second["status"] == "Completed", (first.get("error"), second.get("error"))
        assert second["compute"]["warm_agents"] is True
        pids = [{n["ip"]: n["agent_pid"] for n in d["compute"]["nodes"]} for d in (first, second)]
        assert pids[0] == pids[1] and set(pids[0]) == {m.ip(1), m.ip(2)}  # the same agents, one per machine
        state = ray.state()
        assert not state["placement_groups"] and state["actors"].count("NodePool") == 2, state
    finally:
        code = ("import ray, ray._private.state as st\n"
                f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
                "for a in st.actors().values():\n"
                "    if a.get('ActorClassName') == 'NodePool' and a.get('State') != 'DEAD':\n"
                "        ray.kill(ray.get_actor(a['Name'], namespace='torchyard'))\n")
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=ray.env)


def test_forwarded_credentials_reach_the_ray_nodes_and_no_file(far_ws, cluster, tmp_path, aws_env, monkeypatch):
    """``credentials="forward"`` on Ray: the keys travel as an actor call's argument; the nodes
    (which have no AWS credentials of their own) download the input, and no file holds the secret."""
    import uuid

    import boto3
    import s3server

    if s3server.unavailable_reason():
        pytest.skip(s3server.unavailable_reason())
    m, _address, _ray = cluster
    secret = f"tysecret{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with s3server.S3Server(host=m.host_ip) as server:
        client = boto3.client("s3", endpoint_url=server.endpoint_url)
        client.create_bucket(Bucket="tyraydata")
        client.put_object(Bucket="tyraydata", Key="in/n.txt", Body=b"9\n")
        client.close()
        write_script(tmp_path / "src", "use.py", """
            import os, sys
            from torchyard import Run
            folder = sys.argv[sys.argv.index("--data") + 1]
            Run.get_context().log("n", int(open(os.path.join(folder, "n.txt")).read()))
        """)
        store = Datastore.register_s3(far_ws, "rayblobs", "tyraydata", endpoint_url=server.endpoint_url,
                                      credentials="forward")
        est = PyTorch(str(tmp_path / "src"), entry_script="use.py", node_count=2, process_count_per_node=1,
                      distributed_backend="pytorch", compute_target="far",
                      script_params={"--data": store.path("in").as_download()})
        details = Experiment(far_ws, "machines").submit(est).wait_for_completion(timeout=240, raise_on_error=False)
        assert details["status"] == "Completed", details.get("error")
    found = machines.files_holding(secret, (far_ws.path, m.root))
    assert not found, f"the forwarded secret was written to {found}"


def test_presigned_inputs_reach_the_ray_nodes_that_hold_no_credentials(far_ws, cluster, tmp_path, aws_env, monkeypatch):
    """``credentials="presigned"`` on Ray: the supervisor signs one URL per input object, the plan
    carrying them reaches each node through an actor call; the nodes (no AWS variable at all) fetch
    the objects, the second run from each machine's cache, and afterwards no file on the machines,
    in the workspace or in the Ray head's own folder holds the secret or a signed URL."""
    import uuid

    import s3server

    if s3server.unavailable_reason():
        pytest.skip(s3server.unavailable_reason())
    m, _address, ray = cluster
    secret = f"tysecret{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with s3server.S3Server(host=m.host_ip) as server:
        machines.put_presigned_inputs(server.endpoint_url, "tyraysigned")
        write_script(tmp_path / "src", "use.py", machines.PRESIGNED_SCRIPT)
        signed = Datastore.register_s3(far_ws, "raysigned", "tyraysigned", endpoint_url=server.endpoint_url,
                                       credentials="presigned")
        est = PyTorch(str(tmp_path / "src"), entry_script="use.py", node_count=2, process_count_per_node=1,
                      distributed_backend="pytorch", compute_target="far",
                      script_params={"--data": signed.path("in").as_download()})
        runs = []
        for _ in range(2):
            run = Experiment(far_ws, "machines").submit(est)
            details = run.wait_for_completion(timeout=240, raise_on_error=False)
            assert details["status"] == "Completed", details.get("error")
            assert run.get_metrics(rank="all") == {k: {"n": 9.0, "m": 4.0, "aws_vars": 0.0} for k in (0, 1)}
            runs.append(run)
    second = "".join(p.read_text() for p in Path(runs[1]._row["run_dir"], "logs").glob("inputs_node_*.txt"))
    assert second.count("0 B transferred, 2 file(s) from the cache") == 2, second
    roots = (far_ws.path, m.root, ray.temp_dir)
    assert not machines.files_holding("X-Amz-Signature", roots), "a signed URL outlived its run"
    assert not machines.files_holding(secret, roots), "the secret was written to a file"


def test_a_machine_that_dies_fails_the_run_naming_the_node(far_ws, cluster, tmp_path):
    """Every process of machine 2 is killed mid-run (runs last: the machine stays dead)."""
    m, _address, _env = cluster
    write_script(tmp_path / "src", "sleepy.py", """
        import time
        from torchyard import Run
        run = Run.get_context()
        for i in range(3000):
            run.log("tick", i)
            time.sleep(0.1)
    """)
    est = PyTorch(str(tmp_path / "src"), entry_script="sleepy.py", node_count=2, process_count_per_node=1,
                  distributed_backend="pytorch", compute_target="far")
    run = Experiment(far_ws, "machines").submit(est)
    wait_until(lambda: len(run.get_metrics(rank="all")) == 2, timeout=180)
    died = time.time()
    m.kill_machine(2)
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    took = time.time() - died
    assert details["status"] == "Failed"
    message = details["error"]["message"]
    assert m.ip(2) in message and "node" in message, message
    assert took < 10, f"noticed after {took:.1f} s"
    assert not machines.alive(m.pids_on(2))
