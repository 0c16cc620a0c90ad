"""Ray compute target: one placement-group bundle and one actor per node of the job.

Importing this module imports no ray; ray is needed only to run a job (``pip install torchyard[ray]``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from torchyard.compute.base import Capabilities, ComputeTarget, Handle, LaunchPlan, PreparedJob
from torchyard.errors import ComputeError, SpecError

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
    """

    kind = "ray"

    def __init__(
        self,
        address: str = "auto",
        placement: str = "STRICT_SPREAD",
        cpus_per_process: float = 1.0,
        collect_all_outputs: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not isinstance(address, str) or not address:
            raise SpecError("address", f'expected "auto", HOST:PORT or ray://HOST:PORT, got {address!r}')
        if placement not in PLACEMENTS:
            raise SpecError("placement", f"unknown placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
        if not isinstance(cpus_per_process, (int, float)) or cpus_per_process < 0:
            raise SpecError("cpus_per_process", f"must be a number >= 0, got {cpus_per_process!r}")
        self.address = address
        self.placement = placement
        self.cpus_per_process = float(cpus_per_process)
        self.collect_all_outputs = bool(collect_all_outputs)
        self.capabilities = Capabilities(
            max_nodes=None, gpu=True, backends=frozenset({"pytorch", "mpi"}), launchers=frozenset({"torchyard"})
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "placement": self.placement,
            "cpus_per_process": self.cpus_per_process,
            "collect_all_outputs": self.collect_all_outputs,
        }

    def check(self, spec: Any) -> None:
        super().check(spec)
        if importlib.util.find_spec("ray") is None:
            raise ComputeError(f"compute target {self.name!r}: {INSTALL_HINT}")

    def prepare(self, job: PreparedJob) -> LaunchPlan:
        from torchyard.compute import ray_backend  # noqa: PLC0415  (imports no ray either)

        return ray_backend.prepare(self, job)

    def submit(self, plan: LaunchPlan) -> Handle:
        if importlib.util.find_spec("ray") is None:
            raise ComputeError(INSTALL_HINT)
        from torchyard.compute import ray_backend  # noqa: PLC0415

        return ray_backend.submit(self, plan)
