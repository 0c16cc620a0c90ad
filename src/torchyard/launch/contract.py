"""The env contract: every variable a rank sees, on every compute target and backend. One place.

torch.distributed names: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE,
NODE_RANK (and GROUP_RANK, as torchrun sets it); torchrun's and Kubeflow's PET_NODE_RANK, PET_NNODES,
PET_NPROC_PER_NODE, PET_MASTER_ADDR, PET_MASTER_PORT.
Azure ML names: AZ_BATCH_MASTER_NODE (addr:port), AZ_BATCHAI_MPI_MASTER_NODE (addr),
AZ_BATCHAI_PYTORCH_INIT_METHOD (tcp://addr:port), AZ_BATCHAI_TASK_INDEX (global rank),
AZUREML_NODE_COUNT. Under ``mpi``, Open MPI's OMPI_COMM_WORLD_* come from ``mpirun`` itself.
torchyard's own: TORCHYARD_RUN_ID, TORCHYARD_EXPERIMENT, TORCHYARD_WORKSPACE, TORCHYARD_OUTPUT_DIR,
TORCHYARD_LOG_DIR, TORCHYARD_JOURNAL_DIR, TORCHYARD_UPLOAD_DIR, TORCHYARD_DIST_BACKEND, and
TORCHYARD_TENSORBOARD_DIR (``logs/tensorboard/rank_N``: where a rank's SummaryWriter writes).
Checkpoints (issue #25): TORCHYARD_CHECKPOINT_DIR (this node's folder for the run's checkpoints,
``checkpoints/`` in the run folder: committed ``step_N/`` folders), TORCHYARD_ATTEMPT (the attempt
number, 0 first) and, on a resumed attempt only, TORCHYARD_RESUME_FROM (the folder of the latest
committed checkpoint; unset on a fresh start). torchyard.tracking.checkpoint is the SDK over them.
TORCHYARD_PREEMPT_FLAG names a file that exists once the run is being preempted: the ranks then have
the job's preempt_grace_seconds after SIGTERM to commit a checkpoint (``run.preempted``).
Hang stacks: TORCHYARD_STACKS_DIR (torchyard's own) and :data:`RANKBOOT` prepended to PYTHONPATH,
whose ``sitecustomize`` registers ``faulthandler`` on SIGRTMIN+4 in every Python rank.
MLflow: MLFLOW_TRACKING_URI (``torchyard://<workspace>``) and MLFLOW_RUN_ID (the run id) when mlflow
is importable by the rank's interpreter and the user did not set MLFLOW_TRACKING_URI, so
``mlflow.log_metric`` lands in the run (torchyard.integrations.mlflow is the store behind the URI);
MLFLOW_REGISTRY_URI then defaults to the same URI (MLflow's own default, set to save it a lookup).
GPUs (``use_gpu``): each local rank sees exactly one device through CUDA_VISIBLE_DEVICES, chosen
round-robin from the node's devices, so every script uses ``cuda:0``; TORCHYARD_GPUS names the same
device. The node's devices are the launcher's CUDA_VISIBLE_DEVICES (a local target that allocates GPUs
sets it to the run's own; Slurm to the job step's), else every NVIDIA device.

Stdlib only: the launcher imports this, and it must start fast.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from torchyard.paths import RunPaths

TORCH_NAMES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")
AZURE_NAMES = (
    "AZ_BATCH_MASTER_NODE",
    "AZ_BATCHAI_MPI_MASTER_NODE",
    "AZ_BATCHAI_PYTORCH_INIT_METHOD",
    "AZ_BATCHAI_TASK_INDEX",
    "AZUREML_NODE_COUNT",
)
TORCHYARD_NAMES = (
    "TORCHYARD_RUN_ID",
    "TORCHYARD_EXPERIMENT",
    "TORCHYARD_WORKSPACE",
    "TORCHYARD_OUTPUT_DIR",
    "TORCHYARD_LOG_DIR",
    "TORCHYARD_JOURNAL_DIR",
    "TORCHYARD_UPLOAD_DIR",
    "TORCHYARD_CHECKPOINT_DIR",
    "TORCHYARD_ATTEMPT",
    "TORCHYARD_PREEMPT_FLAG",
)
#: set only on a resumed attempt: the folder of the latest committed checkpoint
RESUME_NAME = "TORCHYARD_RESUME_FROM"
#: the folder whose ``sitecustomize.py`` installs the stack dump (stdlib only) in every Python rank
RANKBOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rankboot")
MLFLOW_NAMES = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")
#: the names torchrun (its PET_* defaults) and Kubeflow's operators read, on every target (issue #17)
PET_NAMES = ("PET_NODE_RANK", "PET_NNODES", "PET_NPROC_PER_NODE", "PET_MASTER_ADDR", "PET_MASTER_PORT")
MPI_NAMES = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")


def interface_to(addr: str) -> str | None:
    """The network interface this machine reaches ``addr`` through (``lo`` for a loopback address),
    or None when it cannot tell. Gloo and NCCL must bind that one: left to themselves they take the
    address the hostname resolves to, which is a loopback one on many machines (127.0.1.1 in Debian's
    /etc/hosts), and the other machines of a job cannot reach it."""
    import fcntl  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import struct  # noqa: PLC0415

    try:
        infos = socket.getaddrinfo(addr, 9, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(infos[0][4])  # UDP: nothing is sent, the kernel picks the route
            local = probe.getsockname()[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _index, name in socket.if_nameindex():
                try:
                    packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                except OSError:
                    continue
                if socket.inet_ntoa(packed[20:24]) == local:
                    return name
    except (OSError, IndexError, UnicodeError):
        return None
    return "lo" if local.startswith("127.") else None


def node_env(
    *,
    run_id: str,
    experiment: str,
    workspace: str,
    workdir: str,
    master_addr: str,
    master_port: int,
    node_rank: int,
    node_count: int,
    process_count_per_node: int,
    dist_backend: str | None,
    user_env: Mapping[str, str],
    socket_ifname: str | None = None,
    python: str | None = None,
    attempt: int = 0,
    resume_from: str | None = None,
) -> dict[str, str]:
    """The variables shared by every rank of one node (ranks add :func:`rank_env`).

    ``socket_ifname``: the interface that routes to ``master_addr`` (:func:`interface_to`), given to
    Gloo and NCCL as GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME unless the user set them.
    ``python`` is the ranks' interpreter (default: this one); it decides whether MLflow is wired in.
    ``attempt``: the attempt number (0 first); ``resume_from``: the checkpoint a resumed attempt starts
    from (TORCHYARD_RESUME_FROM, left unset when None)."""
    world = node_count * process_count_per_node
    paths = RunPaths(workdir)
    env = {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(process_count_per_node),
        "NODE_RANK": str(node_rank),
        "GROUP_RANK": str(node_rank),
        "AZ_BATCH_MASTER_NODE": f"{master_addr}:{master_port}",
        "AZ_BATCHAI_MPI_MASTER_NODE": master_addr,
        "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://{master_addr}:{master_port}",
        "AZUREML_NODE_COUNT": str(node_count),
        "TORCHYARD_RUN_ID": run_id,
        "TORCHYARD_EXPERIMENT": experiment,
        "TORCHYARD_WORKSPACE": workspace,
        "TORCHYARD_OUTPUT_DIR": paths.outputs,
        "TORCHYARD_LOG_DIR": paths.logs,
        "TORCHYARD_JOURNAL_DIR": paths.journal,
        "TORCHYARD_UPLOAD_DIR": paths.uploads,
        "TORCHYARD_CHECKPOINT_DIR": paths.checkpoints,
        "TORCHYARD_ATTEMPT": str(attempt),
        "TORCHYARD_PREEMPT_FLAG": paths.preempted,
        "TORCHYARD_STACKS_DIR": paths.stacks,
        # per rank in rank_env (and the mpi shim); under torchrun, which names ranks itself, per node
        "TORCHYARD_TENSORBOARD_DIR": os.path.join(paths.logs, "tensorboard", f"node_{node_rank}"),
        "PYTHONUNBUFFERED": "1",
        # PET_NAMES (torchrun's and Kubeflow's)
        "PET_NODE_RANK": str(node_rank),
        "PET_NNODES": str(node_count),
        "PET_NPROC_PER_NODE": str(process_count_per_node),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
    }
    if "MLFLOW_TRACKING_URI" not in user_env and "MLFLOW_TRACKING_URI" not in os.environ and module_importable(
        "mlflow", python
    ):
        env["MLFLOW_TRACKING_URI"] = mlflow_uri(workspace)
        env["MLFLOW_RUN_ID"] = run_id
        if "MLFLOW_REGISTRY_URI" not in user_env and "MLFLOW_REGISTRY_URI" not in os.environ:
            # what MLflow would default to anyway; set, it spares MLflow a Spark-session lookup (a failing
            # `import pyspark`) on every log call, ~10x its per-call cost
            env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
    if resume_from:
        env[RESUME_NAME] = resume_from
    if dist_backend:
        env["TORCHYARD_DIST_BACKEND"] = dist_backend
    if socket_ifname and world > 1:
        for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            if name not in user_env and name not in os.environ:
                env[name] = socket_ifname
    if world > 1 and "OMP_NUM_THREADS" not in user_env and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = "1"  # as torchrun does: N ranks must not each take every core
    env.update(user_env)
    return env


def rank_env(node: Mapping[str, str], local_rank: int, gpus: Sequence[str] | None) -> dict[str, str]:
    """The variables that differ per rank on top of :func:`node_env`."""
    nproc = int(node["LOCAL_WORLD_SIZE"])
    rank = int(node["NODE_RANK"]) * nproc + local_rank
    env = {
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "AZ_BATCHAI_TASK_INDEX": str(rank),
        "TORCHYARD_TENSORBOARD_DIR": tensorboard_dir(node["TORCHYARD_LOG_DIR"], rank),
    }
    if gpus:  # TORCHYARD_GPUS: the same device id, kept when a script narrows CUDA_VISIBLE_DEVICES itself
        env["CUDA_VISIBLE_DEVICES"] = env["TORCHYARD_GPUS"] = gpus[local_rank % len(gpus)]
    return env


def with_rankboot(env: Mapping[str, str]) -> str:
    """PYTHONPATH for a rank: :data:`RANKBOOT` first, then whatever ``env`` had."""
    before = env.get("PYTHONPATH")
    return RANKBOOT + (os.pathsep + before if before else "")


def node_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPUs this node may hand out: CUDA_VISIBLE_DEVICES if set, else every NVIDIA device found."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        entries = os.listdir("/proc/driver/nvidia/gpus")
    except OSError:
        return []
    return [str(i) for i in range(len(entries))]


def tensorboard_dir(log_dir: str, rank: int) -> str:
    """Where rank ``rank`` writes TensorBoard event files: ``<logs>/tensorboard/rank_N``."""
    return os.path.join(log_dir, "tensorboard", f"rank_{rank}")


def mlflow_uri(workspace: str) -> str:
    """The MLflow tracking URI of a workspace folder: ``torchyard:///abs/path``."""
    return "torchyard://" + os.path.abspath(workspace)


def module_importable(name: str, python: str | None = None) -> bool:
    """Whether top-level module ``name`` is importable by interpreter ``python`` (default: this one),
    without importing it: ``find_spec`` for this interpreter; for another one (a run's environment,
    a venv), its ``site-packages``, then its base's when the venv sees system site-packages."""
    if python is None or _prefix(python) == os.path.abspath(sys.prefix):
        return importlib.util.find_spec(name) is not None
    prefix = _prefix(python)
    if _in_site_packages(prefix, name):
        return True
    try:
        with open(os.path.join(prefix, "pyvenv.cfg")) as fh:
            cfg = dict(line.partition("=")[::2] for line in fh.read().splitlines() if "=" in line)
    except OSError:
        return False
    cfg = {k.strip().lower(): v.strip() for k, v in cfg.items()}
    if cfg.get("include-system-site-packages", "").lower() != "true" or not cfg.get("home"):
        return False
    # a venv that sees its base interpreter's site-packages (torchyard's layered environments)
    base = os.path.dirname(os.path.abspath(cfg["home"]))
    return _in_site_packages(base, name)


def _in_site_packages(prefix: str, name: str) -> bool:
    for site in glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")):
        if os.path.isdir(os.path.join(site, name)) or os.path.isfile(os.path.join(site, name + ".py")):
            return True
    return False


def _prefix(python: str) -> str:
    if os.sep not in python:  # a command such as `python train.py`: the one on PATH
        python = shutil.which(python) or python
    return os.path.dirname(os.path.dirname(os.path.abspath(python)))
