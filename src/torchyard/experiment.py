"""Experiment: a named group of runs, and where jobs are submitted (Azure ML's shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torchyard.errors import SpecError
from torchyard.run import Run

if TYPE_CHECKING:
    from torchyard.workspace.workspace import WorkspaceFolder as Workspace


class Experiment:
    """A named group of runs in a workspace."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        from torchyard.workspace.workspace import check_name  # noqa: PLC0415

        self.workspace = workspace
        self.name = check_name(name)

    def submit(self, config: Any, tags: Mapping[str, Any] | None = None) -> Run:
        """Submit a ``PyTorch`` estimator, a ``ScriptRunConfig`` or a ``JobSpec``; returns the Run.
        A ``HyperDriveConfig`` starts a sweep and returns its ``HyperDriveRun``."""
        if getattr(self.workspace, "is_remote", False):  # a team server's workspace (torchyard.remote)
            return self.workspace.submit_config(self.name, config, tags)  # type: ignore[attr-defined]
        from torchyard.runtime.submit import start_sweep, submit_run  # noqa: PLC0415
        from torchyard.spec.job import JobSpec  # noqa: PLC0415

        if getattr(config, "__torchyard_sweep__", False):
            from torchyard.sweeps.run import HyperDriveRun  # noqa: PLC0415

            return HyperDriveRun(self, start_sweep(self.workspace, self.name, config, dict(tags) if tags else None))
        spec = config if isinstance(config, JobSpec) else getattr(config, "to_job_spec", lambda: None)()
        if not isinstance(spec, JobSpec):
            raise SpecError("config", f"cannot submit {type(config).__name__}; pass a PyTorch estimator or ScriptRunConfig")
        run_id = submit_run(self.workspace, self.name, spec, tags=dict(tags) if tags else None)
        return Run(self, run_id)

    def get_runs(self, status: str | None = None, limit: int | None = None) -> list[Run]:
        """This experiment's runs, newest first."""
        if getattr(self.workspace, "is_remote", False):
            return self.workspace.runs_of(self.name, status, limit)  # type: ignore[attr-defined]
        rows = self.workspace.store.list_runs(experiment=self.name, status=status, limit=limit)
        return [Run(self, r["id"], _row=r) for r in rows]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.path!r})"
