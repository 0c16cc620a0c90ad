"""The env contract: every variable a rank sees, on every compute target and backend. One place.

torch.distributed names: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE,
NODE_RANK (and GROUP_RANK, as torchrun sets it).
Azure ML names: AZ_BATCH_MASTER_NODE (addr:port), AZ_BATCHAI_MPI_MASTER_NODE (addr),
AZ_BATCHAI_PYTORCH_INIT_METHOD (tcp://addr:port), AZ_BATCHAI_TASK_INDEX (global rank),
AZUREML_NODE_COUNT. Under ``mpi``, Open MPI's OMPI_COMM_WORLD_* come from ``mpirun`` itself.
torchyard's own: TORCHYARD_RUN_ID, TORCHYARD_EXPERIMENT, TORCHYARD_WORKSPACE, TORCHYARD_OUTPUT_DIR,
TORCHYARD_LOG_DIR, TORCHYARD_JOURNAL_DIR, TORCHYARD_UPLOAD_DIR, TORCHYARD_DIST_BACKEND.
GPUs (``use_gpu``): each local rank sees exactly one device through CUDA_VISIBLE_DEVICES, chosen
round-robin from the node's devices, so every script uses ``cuda:0``.

Stdlib only: the launcher imports this, and it must start fast.
"""

from __future__ import annotations

import os
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
)
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
) -> dict[str, str]:
    """The variables shared by every rank of one node (ranks add :func:`rank_env`).

    ``socket_ifname``: the interface that routes to ``master_addr`` (:func:`interface_to`), given to
    Gloo and NCCL as GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME unless the user set them."""
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
        "PYTHONUNBUFFERED": "1",
    }
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
    }
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[local_rank % len(gpus)]
    return env


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
