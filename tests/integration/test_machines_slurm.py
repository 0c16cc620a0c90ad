"""Slurm on simulated separate machines (tests/integration/machines.py): slurmctld on the submitting
machine at the bridge address, ``slurmd -N nK`` on machine K with the machine's own address as its
NodeAddr and its own hostname (resolving to 127.0.1.1, as on Debian). The target's ``shared_dir`` is
the cluster's shared filesystem (a folder every machine sees); the submitter's workspace, sources
and data (under /tmp) are not on the machines.

What this proves that one machine cannot: ranks rendezvous across addresses, the job's environment
and inputs are placed on the nodes (in the shared cache), outputs and logs come back through the
shared folder, mpi ranks start through Slurm itself (``srun --mpi=pmix``, no ssh), a machine that
dies fails the run naming the node, and a sweep's policy stops a trial on the machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import machines
import psutil
import pytest
import slurmcluster
from tests.conftest import EXAMPLES, REPO, wait_until, write_script

from torchyard import ComputeTarget, Datastore, Experiment, PyTorch, SpecError
from torchyard.compute.slurm import SlurmCompute

REASON = machines.unavailable_reason() or slurmcluster.unavailable_reason()
pytestmark = pytest.mark.skipif(bool(REASON), reason=str(REASON))


@pytest.fixture(scope="module")
def cluster():
    with machines.Machines(2, keep=[str(REPO), sys.prefix]) as m, slurmcluster.SlurmCluster(machines=m) as c:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = c.conf
        # the machines reach no package registry: jobs' packages come from a local index
        index = Path(m.root) / "index" / "simple"
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(index / "tomli-w"),
             "tomli-w==1.2.0"], capture_output=True, text=True)
        assert got.returncode == 0, got.stderr
        try:
            yield m, c, index
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


@pytest.fixture
def hpc(ws, cluster, monkeypatch):
    m, c, index = cluster
    monkeypatch.setenv("PIP_INDEX_URL", f"file://{index}")  # the supervisor hands it to sbatch's job
    ComputeTarget.attach(ws, "hpc", SlurmCompute(shared_dir=c.shared_dir))
    yield ws
    wait_until(lambda: not c.jobs(), timeout=60, interval=0.5)
    for k in (1, 2):  # nothing of the run is left on a machine but slurmd itself
        left = [p for p in machines.alive(m.pids_on(k)) if "slurmd" not in _cmdline(p)]
        assert not left, f"processes left on machine {k}: {[_cmdline(p) for p in left]}"


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except Exception:  # noqa: BLE001 - gone meanwhile
        return ""


def _est(folder, script, **kw):
    kw.setdefault("node_count", 2)
    kw.setdefault("process_count_per_node", 1)
    kw.setdefault("distributed_backend", "pytorch")
    return PyTorch(str(folder), entry_script=script, compute_target="hpc", **kw)


def test_ddp_digits_and_the_env_contract_across_two_machines(hpc, cluster, tmp_path):
    m, _c, _index = cluster
    write_script(tmp_path / "src", "env.py", """
        import json, os, socket
        from torchyard import Run
        run = Run.get_context()
        rank = os.environ["RANK"]
        os.makedirs("outputs", exist_ok=True)
        with open(f"outputs/env_{rank}.json", "w") as fh:
            json.dump({**os.environ, "HOSTNAME_SEEN": socket.gethostname()}, fh)
        run.log("rank_seen", int(rank))
    """)
    run = Experiment(hpc, "machines").submit(_est(tmp_path / "src", "env.py"))
    details = run.wait_for_completion(timeout=180, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    envs = [json.loads((Path(run.workdir) / "outputs" / f"env_{r}.json").read_text()) for r in (0, 1)]
    assert {e["HOSTNAME_SEEN"] for e in envs} == {"tynode1", "tynode2"}  # one rank per machine
    for e in envs:
        assert e["MASTER_ADDR"] == m.ip(1)  # node 0's routable address, never loopback
        assert e["WORLD_SIZE"] == "2" and e["AZUREML_NODE_COUNT"] == "2"
        assert e["GLOO_SOCKET_IFNAME"].startswith("tyv")  # the interface that routes to MASTER_ADDR
        assert not e["TORCHYARD_OUTPUT_DIR"].startswith(hpc.path)  # the nodes never see the workspace
    assert sorted(int(e["NODE_RANK"]) for e in envs) == [0, 1]

    est = _est(EXAMPLES / "digits", "train.py", script_params={"--epochs": 3})
    run = Experiment(hpc, "machines").submit(est)
    details = run.wait_for_completion(timeout=300, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert every[0]["param_checksum"] == every[1]["param_checksum"]
    assert "outputs/model.pt" in run.get_file_names()
    assert not (Path(_c.shared_dir) / "runs" / run.id).exists()  # the node folder is removed after collection


def test_environment_and_inputs_are_placed_on_the_nodes(hpc, cluster, tmp_path):
    """The pip environment is built once in the shared cache from the local index, nothing on the
    submitter; a local datastore on the shared filesystem works; one under the submitter's /tmp is
    refused at submit naming the datastore and the target."""
    _m, c, _index = cluster
    data = Path(c.shared_dir) / "data"
    data.mkdir(exist_ok=True)
    (data / "n.txt").write_text("5\n")
    store = Datastore.register_local(hpc, "nfs", str(data))
    write_script(tmp_path / "src", "use.py", """
        import os, sys
        import tomli_w
        from torchyard import Run
        run = Run.get_context()
        folder = sys.argv[sys.argv.index("--data") + 1]
        run.log("n", int(open(os.path.join(folder, "n.txt")).read()))
        run.log("shared_cache", int(sys.executable.startswith(sys.argv[sys.argv.index("--cache") + 1])))
    """)
    est = _est(tmp_path / "src", "use.py", pip_packages=["tomli-w==1.2.0"],
               script_params={"--data": store.path("").as_download(), "--cache": os.path.join(c.shared_dir, "cache")})
    run = Experiment(hpc, "machines").submit(est)
    details = run.wait_for_completion(timeout=400, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert every[0] == every[1] == {"n": 5.0, "shared_cache": 1.0}
    assert not (Path(hpc.path) / "envs").exists()  # nothing built on the submitting machine
    assert details["environment"]["placed_on"] == "nodes"

    hidden = tmp_path / "private"
    hidden.mkdir()
    private = Datastore.register_local(hpc, "private", str(hidden))
    with pytest.raises(SpecError) as refused:
        Experiment(hpc, "machines").submit(_est(tmp_path / "src", "use.py",
                                                script_params={"--data": private.path("").as_download()}))
    assert "'private'" in str(refused.value) and "'hpc'" in str(refused.value) and c.shared_dir in str(refused.value)


def test_mpi_ranks_start_through_srun_pmix_across_machines(hpc, cluster, tmp_path):
    pytest.importorskip("mpi4py")
    write_script(tmp_path / "src", "mpi.py", """
        import os, socket
        from mpi4py import MPI
        from torchyard import Run
        comm = MPI.COMM_WORLD
        total = comm.allreduce(comm.Get_rank() + 1)
        hosts = sorted(set(comm.allgather(socket.gethostname())))
        run = Run.get_context()
        assert int(os.environ["RANK"]) == comm.Get_rank(), (os.environ["RANK"], comm.Get_rank())
        run.log("total", total)
        run.log("hosts", len(hosts))
        run.log("world", int(os.environ["WORLD_SIZE"]))
    """)
    run = Experiment(hpc, "machines").submit(_est(tmp_path / "src", "mpi.py", distributed_backend="mpi",
                                                  process_count_per_node=2))
    details = run.wait_for_completion(timeout=180, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert sorted(every) == [0, 1, 2, 3]
    assert all(v == {"total": 10.0, "hosts": 2.0, "world": 4.0} for v in every.values())
    assert "srun --mpi=pmix" in (Path(run.workdir) / "logs" / "slurm.txt").read_text()


def test_a_sweep_on_the_machines_stops_a_poor_trial(hpc, cluster, tmp_path):
    from torchyard import BanditPolicy, GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

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
    hd = HyperDriveConfig(run_config=_est(tmp_path / "sw", "t.py", script_params={"--level": 0}),
                          hyperparameter_sampling=GridParameterSampling({"--level": choice(1, 10)}),
                          policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=2),
                          primary_metric_name="score", primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                          max_total_runs=2, max_concurrent_runs=2)
    sweep = Experiment(hpc, "machines-sweep").submit(hd)
    details = sweep.wait_for_completion(timeout=400, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    by_level = {c.get_tags()["hyperparameters"]: c for c in sweep.get_children()}
    poor = by_level['{"--level": 1}'].get_details()
    assert poor["status"] == "Canceled" and "BanditPolicy" in poor["cancel_reason"]
    assert poor["compute"]["slurm_nodes"] == "n[1-2]"  # it ran on the two machines
    assert by_level['{"--level": 10}'].get_status() == "Completed"
    assert details["sweep"]["early_terminated"] == 1


def test_forwarded_credentials_reach_the_nodes_and_no_file(hpc, cluster, tmp_path, aws_env, monkeypatch):
    """An S3 datastore on a server the machines reach: with the nodes' own credentials (they have
    none) the run fails at Preparing; with ``credentials="forward"`` the submitter's reach the
    run's processes, and no file the run left, on any machine, holds the secret."""
    import uuid

    import boto3
    import s3server

    if s3server.unavailable_reason():
        pytest.skip(s3server.unavailable_reason())
    m, c, _index = cluster
    secret = f"tysecret{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with s3server.S3Server(host=m.host_ip) as server:
        client = boto3.client("s3", endpoint_url=server.endpoint_url)
        client.create_bucket(Bucket="tydata")
        client.put_object(Bucket="tydata", Key="in/n.txt", Body=b"7\n")
        client.close()
        write_script(tmp_path / "src", "use.py", """
            import os, sys
            from torchyard import Run
            folder = sys.argv[sys.argv.index("--data") + 1]
            Run.get_context().log("n", int(open(os.path.join(folder, "n.txt")).read()))
        """)
        own = Datastore.register_s3(hpc, "blobs", "tydata", endpoint_url=server.endpoint_url)
        forward = Datastore.register_s3(hpc, "blobs-fwd", "tydata", endpoint_url=server.endpoint_url,
                                        credentials="forward")
        failed = Experiment(hpc, "machines").submit(
            _est(tmp_path / "src", "use.py", script_params={"--data": own.path("in").as_download()}))
        details = failed.wait_for_completion(timeout=180, raise_on_error=False)
        assert details["status"] == "Failed" and "could not be prepared" in details["error"]["message"], details
        run = Experiment(hpc, "machines").submit(
            _est(tmp_path / "src", "use.py", script_params={"--data": forward.path("in").as_download()}))
        details = run.wait_for_completion(timeout=180, raise_on_error=False)
        assert details["status"] == "Completed", details.get("error")
        assert run.get_metrics(rank="all") == {0: {"n": 7.0}, 1: {"n": 7.0}}
    # every file the runs left: the workspace (runs, artifacts, store, logs), the shared folder and
    # each machine's own disk; Slurm's own state folder keeps each job's environment, as for any
    # sbatch job, and is left out (it is the cluster's, readable by SlurmUser)
    found = machines.files_holding(secret, (hpc.path, m.root), skip=os.path.join(c.dir, "state"))
    assert not found, f"the forwarded secret was written to {found}"


def test_presigned_inputs_reach_nodes_that_hold_no_credentials(hpc, cluster, tmp_path, aws_env, monkeypatch):
    """``credentials="presigned"``: the supervisor signs one URL per input object; the nodes get no
    AWS variable at all, fetch the objects (the second run from the shared cache), and no file
    anywhere holds the secret, Slurm's own state folder included (nothing was forwarded)."""
    import uuid

    import s3server

    if s3server.unavailable_reason():
        pytest.skip(s3server.unavailable_reason())
    m, c, _index = cluster
    secret = f"tysecret{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with s3server.S3Server(host=m.host_ip) as server:
        machines.put_presigned_inputs(server.endpoint_url, "tysigned")
        write_script(tmp_path / "src", "use.py", machines.PRESIGNED_SCRIPT)
        signed = Datastore.register_s3(hpc, "blobs-signed", "tysigned", endpoint_url=server.endpoint_url,
                                       credentials="presigned")
        est = _est(tmp_path / "src", "use.py", script_params={"--data": signed.path("in").as_download()})
        from torchyard.runtime.submit import plan

        dry = plan(hpc, "machines", est.to_job_spec()).describe()
        assert "<signed when the run starts>" in dry and "X-Amz-Signature" not in dry
        runs = []
        for _ in range(2):
            run = Experiment(hpc, "machines").submit(est)
            details = run.wait_for_completion(timeout=180, raise_on_error=False)
            assert details["status"] == "Completed", details.get("error")
            assert run.get_metrics(rank="all") == {k: {"n": 9.0, "m": 4.0, "aws_vars": 0.0} for k in (0, 1)}
            runs.append(run)
    second = "".join(p.read_text() for p in Path(runs[1]._row["run_dir"], "logs").glob("inputs_node_*.txt"))
    assert "0 B transferred, 2 file(s) from the cache" in second, second
    # the signed URLs lived in the node plan (mode 0600) in the shared run folder, gone with it
    assert not machines.files_holding("X-Amz-Signature", (hpc.path, m.root)), "a signed URL outlived its run"
    found = machines.files_holding(secret, (hpc.path, m.root, c.dir))
    assert not found, f"the secret was written to {found}"


def test_a_machine_that_dies_fails_the_run_naming_the_node(hpc, cluster, tmp_path):
    """Every process of machine 2 (its slurmd and the job's processes there) is killed mid-run;
    runs last, since the machine stays dead."""
    m, _c, _index = cluster
    write_script(tmp_path / "src", "sleepy.py", """
        import time
        from torchyard import Run
        run = Run.get_context()
        for i in range(3000):
            run.log("tick", i)
            time.sleep(0.1)
    """)
    run = Experiment(hpc, "machines").submit(_est(tmp_path / "src", "sleepy.py"))
    wait_until(lambda: len(run.get_metrics(rank="all")) == 2, timeout=180)
    died = time.time()
    m.kill_machine(2)
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    took = time.time() - died
    assert details["status"] == "Failed"
    message = details["error"]["message"]
    assert "node 1" in message and m.ip(2) in message, message
    assert took < 10, f"noticed after {took:.1f} s"
    assert not machines.alive(m.pids_on(2))
