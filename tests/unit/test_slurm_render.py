"""The Slurm target's pure parts: settings, the rendered sbatch scripts (golden files), scontrol parsing,
and the launcher's ``${NAME}`` plan values.

Regenerate the golden files after an intended change: ``TORCHYARD_UPDATE_GOLDEN=1 pytest tests/unit/test_slurm.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torchyard import PyTorch
from torchyard.compute.base import ComputeTarget, Feature, PreparedJob
from torchyard.compute.registry import get_target
from torchyard.compute.slurm import (
    SlurmCompute,
    exit_code,
    parse_scontrol_job,
    queue_reason,
    slurm_time,
)
from torchyard.errors import SpecError
from torchyard.launch.launcher import resolve_plan
from torchyard.launch.plan import NodeFill, NodePlan

GOLDEN = Path(__file__).parent / "golden"
PY = "/opt/venv/bin/python"


@pytest.fixture
def srcdir(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    return tmp_path


def _job(srcdir: Path, **kw) -> PreparedJob:
    spec = PyTorch(str(srcdir), entry_script="train.py", **kw).to_job_spec()
    return PreparedJob(
        run_id="digits_1795680000_ab12cd34", experiment="digits", workspace="/shared/ws/.torchyard",
        workdir="/shared/ws/.torchyard/runs/digits_1795680000_ab12cd34", spec=spec,
        rank_argv=[PY, "train.py", "--epochs", "3"], launcher_python=PY,
    )  # fmt: skip


CASES = {
    "pytorch_2x1": (SlurmCompute(name="hpc"), {"node_count": 2, "distributed_backend": "pytorch"}),
    "pytorch_1x4_gpu_all_options": (
        SlurmCompute(partition="gpu", account="lab42", qos="high", time_limit="04:00:00",
                     extra_sbatch_args=["--mem=16G", "--constraint=a100"], name="hpc"),
        {"process_count_per_node": 4, "distributed_backend": "nccl", "use_gpu": True, "max_run_duration_seconds": 3600},
    ),
    "mpi_2x2_time_limit": (
        SlurmCompute(partition="cpu", time_limit="30", mpi_launch="mpirun", name="hpc"),
        {"node_count": 2, "process_count_per_node": 2, "distributed_backend": "mpi"},
    ),
    "mpi_2x2_srun_pmix": (SlurmCompute(name="hpc"), {"node_count": 2, "process_count_per_node": 2,
                                                     "distributed_backend": "mpi"}),
    "pytorch_2x1_priority_nice": (SlurmCompute(nice_per_priority=100, name="hpc"),
                                  {"node_count": 2, "distributed_backend": "pytorch", "priority": -3}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_sbatch_matches_golden(srcdir, case):
    target, kw = CASES[case]
    plan = target.dryrun(_job(srcdir, **kw))
    script = plan.files[plan.script_path]
    path = GOLDEN / f"slurm_{case}.sbatch"
    if os.environ.get("TORCHYARD_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(script)
    assert script == path.read_text(), f"rendered script differs from {path} (TORCHYARD_UPDATE_GOLDEN=1 to accept)"


def test_plan_leaves_node_rank_and_master_to_the_node(srcdir):
    plan = SlurmCompute(name="hpc").dryrun(_job(srcdir, node_count=2, distributed_backend="pytorch"))
    node = plan.nodes[0].plan
    assert node.fill == NodeFill(node_rank="SLURM_NODEID", master_addr="TORCHYARD_MASTER_ADDR",
                                 master_port="TORCHYARD_MASTER_PORT")
    assert len(plan.nodes) == 2
    described = plan.describe()
    assert "#SBATCH --nodes=2" in described and "srun" in described  # the dry run shows the script
    resolved = resolve_plan(node, {"SLURM_NODEID": "1", "TORCHYARD_MASTER_ADDR": "10.0.0.5", "TORCHYARD_MASTER_PORT": "2345"})
    assert (resolved.node_rank, resolved.master_addr, resolved.master_port) == (1, "10.0.0.5", 2345)
    assert resolved.status_path.endswith("launcher_node_1.json")
    assert resolved.fill == NodeFill()


def test_mpi_ranks_start_through_srun_pmix_by_default(srcdir):
    plan = SlurmCompute(name="hpc").dryrun(_job(srcdir, node_count=2, process_count_per_node=2, distributed_backend="mpi"))
    assert [n.node_rank for n in plan.nodes] == [0]
    node = resolve_plan(plan.nodes[0].plan, {"TORCHYARD_MASTER_ADDR": "10.0.0.5", "TORCHYARD_MASTER_PORT": "1"})
    assert node.mpi_launcher == "srun" and node.hosts == [] and node.heartbeat_seconds > 0
    from torchyard.launch.launcher import Launcher

    argv = Launcher._mpirun_argv(type("L", (), {"plan": node, "paths": node.paths, "workdir": node.workdir,
                                                "gpus": None, "node": {}, "_rank_argv": lambda self: ["py", "t.py"]})(),
                                 {})
    assert argv[:6] == ["srun", "--mpi=pmix", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--cpus-per-task=1"]
    assert argv[-2:] == ["py", "t.py"]


def test_mpi_plan_runs_one_launcher_with_hosts_from_the_allocation(srcdir):
    plan = SlurmCompute(name="hpc", mpi_launch="mpirun").dryrun(_job(srcdir, node_count=2, process_count_per_node=2, distributed_backend="mpi"))
    assert [n.node_rank for n in plan.nodes] == [0]
    node = plan.nodes[0].plan
    resolved = resolve_plan(node, {"TORCHYARD_HOSTS": " 10.0.0.5 10.0.0.6", "TORCHYARD_MASTER_ADDR": "10.0.0.5",
                                   "TORCHYARD_MASTER_PORT": "1"})
    assert resolved.hosts == [("10.0.0.5", 2), ("10.0.0.6", 2)]
    # on one machine every node has the same address: its slots add up (Open MPI refuses repeats)
    same = resolve_plan(node, {"TORCHYARD_HOSTS": "127.0.0.1 127.0.0.1", "TORCHYARD_MASTER_ADDR": "127.0.0.1",
                               "TORCHYARD_MASTER_PORT": "1"})
    assert same.hosts == [("127.0.0.1", 4)]


def test_a_missing_node_variable_is_named():
    plan = NodePlan(run_id="r", experiment="e", workspace="/w", workdir="/w/r", fill=NodeFill(node_rank="SLURM_NODEID"))
    with pytest.raises(SystemExit, match=r"from \$SLURM_NODEID"):
        resolve_plan(plan, {})
    plain = plan.replace(fill=NodeFill(), node_rank=3, hosts=[("localhost", 2)])
    assert resolve_plan(plain, {}) == plain  # a plan with nothing to fill is untouched
    assert NodePlan.from_json(plain.to_json()) == plain


def test_shared_dir_other_than_the_workspace_moves_the_node_folder(srcdir):
    job = _job(srcdir, node_count=2, distributed_backend="pytorch")
    same = SlurmCompute(shared_dir="/shared/ws/.torchyard", name="hpc").dryrun(job)
    assert same.node_workdir == job.workdir
    other = SlurmCompute(shared_dir="/scratch/me", name="hpc").dryrun(job)
    assert other.node_workdir == "/scratch/me/runs/digits_1795680000_ab12cd34"
    assert "#SBATCH --chdir=/scratch/me/runs/digits_1795680000_ab12cd34" in other.files[other.script_path]
    nodes_python = SlurmCompute(python="/cluster/py/bin/python", name="hpc").dryrun(job)
    assert nodes_python.nodes[0].plan.argv[0] == "/cluster/py/bin/python"
    assert "/cluster/py/bin/python -m torchyard.launch.launcher" in nodes_python.files[nodes_python.script_path]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"partition": "gpu queue"}, "partition"),
        ({"account": ""}, "account"),
        ({"time_limit": "1h"}, "time_limit"),
        ({"extra_sbatch_args": ["mem=8G"]}, "extra_sbatch_args"),
        ({"extra_sbatch_args": ["--nodes=4"]}, "extra_sbatch_args"),
        ({"extra_sbatch_args": ["-N4"]}, "extra_sbatch_args"),
        ({"extra_sbatch_args": ["--output=/tmp/x"]}, "extra_sbatch_args"),
        ({"shared_dir": ""}, "shared_dir"),
        ({"python": ""}, "python"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(SpecError) as info:
        SlurmCompute(**kwargs)
    assert info.value.field == field


def test_attach_round_trips_the_settings(ws, tmp_path):
    target = SlurmCompute(partition="debug", qos="low", time_limit="1-00:00:00", extra_sbatch_args=["--mem=1G"],
                          shared_dir=str(tmp_path / "shared"), python="/usr/bin/python3")
    ComputeTarget.attach(ws, "hpc", target)
    with open(os.path.join(ws.path, "computes", "hpc.json")) as fh:
        assert json.load(fh)["kind"] == "slurm"
    again = get_target("hpc", ws.path)
    assert isinstance(again, SlurmCompute)
    assert again.name == "hpc"
    assert again.to_config() == target.to_config()
    assert Feature.GPU in again.features and Feature.MPI in again.features


def test_scontrol_fields_and_codes():
    line = ("JobId=12 JobName=r1 JobState=PENDING Reason=ReqNodeNotAvail,_UnavailableNodes:n3 Dependency=(null) "
            "ExitCode=0:0 NodeList= BatchHost=n1 TimeLimit=00:16:00 Command=/a/b job.sbatch\n")
    fields = parse_scontrol_job(line)
    assert fields["JobState"] == "PENDING" and fields["NodeList"] == "" and fields["TimeLimit"] == "00:16:00"
    assert queue_reason("PENDING", fields["Reason"]) == "Slurm: PENDING (ReqNodeNotAvail, UnavailableNodes:n3)"
    assert queue_reason("PENDING", "None") == "Slurm: PENDING"
    assert exit_code("0:0") == 0 and exit_code("3:0") == 3 and exit_code("0:15") == 143 and exit_code("x") == 1
    assert slurm_time(3600) == "61" and slurm_time(1) == "2"


def _handle(srcdir, tmp_path, state: str, rc: int, canceled: bool = False, gone: bool = False):
    from torchyard.compute.slurm import SlurmHandle  # noqa: PLC0415

    job = _job(srcdir, node_count=2, distributed_backend="pytorch")
    job = PreparedJob(**{**job.__dict__, "workdir": str(tmp_path / "run")})
    handle = SlurmHandle("12", SlurmCompute(name="hpc").dryrun(job))
    handle.state, handle.rc, handle.canceled, handle.gone = state, rc, canceled, gone
    handle.fields = {"TimeLimit": "00:02:00"}
    return handle


@pytest.mark.parametrize(
    ("state", "canceled", "gone", "verdict"),
    [
        ("TIMEOUT", False, False, ("Failed", "Slurm job 12 ended TIMEOUT: it reached its time limit (00:02:00)")),
        ("NODE_FAIL", False, False, ("Failed", "Slurm job 12 ended NODE_FAIL: it lost a node")),
        ("OUT_OF_MEMORY", False, False, ("Failed", "Slurm job 12 ended OUT_OF_MEMORY: it ran out of memory")),
        ("CANCELLED", False, False, ("Canceled", "Slurm job 12 was cancelled outside torchyard (scancel)")),
        ("CANCELLED", True, False, None),  # torchyard's own cancel: the run says why itself
        ("FAILED", False, False, ("Failed", "Slurm job 12 ended FAILED (exit code 1) before any rank reported")),
        ("RUNNING", False, True, ("Failed", "Slurm job 12 left the queue (last seen RUNNING) without its launchers "
                                            "reporting; see logs/slurm.txt")),
    ],
)
def test_slurm_states_become_the_runs_verdict(srcdir, tmp_path, state, canceled, gone, verdict):
    assert _handle(srcdir, tmp_path, state, 1, canceled, gone).ended_by() == verdict


def test_a_rank_failure_is_left_to_the_launchers_report(srcdir, tmp_path):
    handle = _handle(srcdir, tmp_path, "FAILED", 1)
    folder = tmp_path / "run" / ".torchyard-run"
    folder.mkdir(parents=True)
    (folder / "launcher_node_1.json").write_text(json.dumps(
        {"node_rank": 1, "reason": "rank_failed", "exit_code": 1, "first_failure": {"rank": 1, "node_rank": 1}}))
    assert handle.ended_by() is None
    assert [s["node_rank"] for s in handle.node_statuses()] == [1]


def test_a_job_slurm_forgot_resolves_from_the_launchers_reports(srcdir, tmp_path):
    handle = _handle(srcdir, tmp_path, "RUNNING", None)
    handle._scontrol = lambda: {}  # what `scontrol show job` answers after MinJobAge: "Invalid job id"
    folder = tmp_path / "run" / ".torchyard-run"
    folder.mkdir(parents=True)
    for k in range(2):
        (folder / f"launcher_node_{k}.json").write_text(json.dumps({"node_rank": k, "reason": "completed", "exit_code": 0}))
    assert handle.poll() == 0 and handle.state == "COMPLETED" and handle.ended_by() is None
