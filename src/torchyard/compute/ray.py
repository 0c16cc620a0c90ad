"""Ray compute target: one placement-group bundle and one actor per node of the job.

Importing this module imports no ray; ray is needed only to run a job (``pip install torchyard[ray]``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from torchyard.compute.base import ComputeTarget, Feature, Handle, LaunchPlan, Option, PreparedJob
from torchyard.errors import ComputeError

PLACEMENTS = ("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK")
INSTALL_HINT = "Ray is not installed: pip install 'torchyard[ray]' (on the submitting machine and every node)"


class RayCompute(ComputeTarget):
    """A Ray cluster.

    ``address``: ``"auto"`` (a cluster started on this machine), ``"HOST:PORT"`` of the head node, or
    ``"ray://HOST:10001"`` (Ray Client). ``placement``: the placement-group strategy for the job's
    nodes; ``STRICT_SPREAD`` (default) puts each node of the job on its own Ray node, ``PACK`` or
    ``SPREAD`` let a small cluster hold more nodes than it has. ``cpus_per_process``: CPUs reserved
    per rank in each node's bundle (GPUs: one per rank with ``use_gpu``). ``collect_all_outputs``:
    also bring back the ``outputs/`` of nodes other than node 0 (as ``outputs/node_K/``).
    ``keep_agents``: keep one warm node agent per Ray node between runs (a detached actor with no
    resources of its own, ~90 MiB each), so a run starts no new actor.
    ``shared_dirs``: folders every Ray node mounts at the same path (an NFS mount, say); a local
    datastore is accepted only under one of them (nodes download everything else themselves).
    """

    kind = "ray"
    features = Feature.MULTI_NODE | Feature.GPU | Feature.MPI | Feature.QUEUEING | Feature.ENV_ON_NODE
    options = (
        Option(name="address", type=str, default="auto", example="ray://head:10001",
               help='"auto" (a cluster started on this machine), HOST:PORT of the head node, or ray://HOST:10001',
               check=lambda v: None if v else 'expected "auto", HOST:PORT or ray://HOST:PORT'),
        Option(name="placement", type=str, default="STRICT_SPREAD", choices=PLACEMENTS,
               help="placement-group strategy for the job's nodes (STRICT_SPREAD: one node per Ray node)"),
        Option(name="cpus_per_process", type=float, default=1.0,
               help="CPUs reserved per rank in each node's bundle (GPUs: one per rank with use_gpu)",
               check=lambda v: None if v >= 0 else "must be a number >= 0"),
        Option(name="collect_all_outputs", type=bool, default=False, flag="--all-outputs",
               help="also bring back other nodes' outputs/ (as outputs/node_K/)"),
        Option(name="keep_agents", type=bool, default=False, flag="--keep-agents",
               help="keep a warm node agent on each Ray node between runs (faster start; ~90 MiB per node)"),
        Option(name="shared_dirs", type=list, flag="--shared-dir", example="/mnt/nfs",
               help="folders every Ray node mounts at the same path (local datastores must be under one)",
               check=lambda v: None if all(isinstance(p, str) and p.startswith("/") for p in v)
               else "expected absolute folder paths"),
    )

    address: str
    placement: str
    cpus_per_process: float
    collect_all_outputs: bool
    shared_dirs: list[str]
    keep_agents: bool

    def __init__(self, address: str = "auto", placement: str = "STRICT_SPREAD", cpus_per_process: float = 1.0,
                 collect_all_outputs: bool = False, shared_dirs: list[str] | tuple[str, ...] | None = None,
                 keep_agents: bool = False, *, name: str | None = None) -> None:
        super().__init__(name, address=address, placement=placement, cpus_per_process=cpus_per_process,
                         collect_all_outputs=collect_all_outputs, keep_agents=keep_agents,
                         shared_dirs=list(shared_dirs) if isinstance(shared_dirs, tuple) else shared_dirs)

    def shared_paths(self, workspace: str) -> tuple[str, ...] | None:
        return tuple(self.shared_dirs or ())

    def check(self, spec: Any) -> None:
        super().check(spec)
        if importlib.util.find_spec("ray") is None:
            raise ComputeError(f"compute target {self.name!r}: {INSTALL_HINT}")

    def dryrun(self, job: PreparedJob) -> LaunchPlan:
        from torchyard.compute import ray_backend  # noqa: PLC0415  (imports no ray either)

        return ray_backend.prepare(self, job)

    def schedule(self, plan: LaunchPlan) -> Handle:
        if importlib.util.find_spec("ray") is None:
            raise ComputeError(INSTALL_HINT)
        from torchyard.compute import ray_backend  # noqa: PLC0415

        return ray_backend.submit(self, plan)
