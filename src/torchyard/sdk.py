"""The SDK's :class:`Workspace` (L5): the workspace folder (persistence, L2) plus the views the SDK
hangs on it — experiments, runs, compute targets — and submit, which goes through the runtime's one
submit path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchyard.workspace.workspace import WorkspaceFolder

if TYPE_CHECKING:
    from torchyard.compute.registry import ComputeRegistry
    from torchyard.experiment import Experiment
    from torchyard.run import Run
    from torchyard.spec.job import JobSpec


class Workspace(WorkspaceFolder):
    """Where runs, metrics and artifacts live.

    ``Workspace()`` finds ``./.torchyard`` (or a parent's), else creates it in the working directory.
    ``Workspace(path=...)`` or ``TORCHYARD_WORKSPACE`` choose the folder; ``db_url=...`` or
    ``TORCHYARD_DB_URL`` put the metadata store in PostgreSQL (or any SQLAlchemy URL) instead of SQLite.

    ``Workspace(url="http://HOST:PORT", token=...)`` (or ``TORCHYARD_SERVER``, or a URL in
    ``TORCHYARD_WORKSPACE``) is a team server's workspace: the same calls, over HTTP (``token``
    defaults to ``TORCHYARD_TOKEN`` or what ``torchyard login`` saved).
    """

    def __new__(cls, path: Any = None, *, db_url: str | None = None, url: str | None = None,
                token: str | None = None) -> Any:
        url = url or server_url(path)
        if url:
            from torchyard.remote.workspace import RemoteWorkspace  # noqa: PLC0415

            return RemoteWorkspace(url, token)
        return super().__new__(cls)

    def __init__(self, path: Any = None, *, db_url: str | None = None, url: str | None = None,
                 token: str | None = None) -> None:
        super().__init__(path, db_url=db_url)

    @property
    def experiments(self) -> dict[str, Experiment]:
        """The workspace's experiments, by name."""
        from torchyard.experiment import Experiment  # noqa: PLC0415

        return {name: Experiment(self, name) for name in self.store.list_experiments()}

    def get_run(self, run_id: str) -> Run:
        """The run with this id, in any experiment; NotFoundError otherwise."""
        from torchyard.experiment import Experiment  # noqa: PLC0415
        from torchyard.run import Run  # noqa: PLC0415

        row = self.store.get_run(run_id)
        return Run(Experiment(self, row["experiment"]), run_id)

    @property
    def compute_targets(self) -> ComputeRegistry:
        """The compute targets attached to this workspace (``ComputeTarget.attach``)."""
        from torchyard.compute.registry import ComputeRegistry  # noqa: PLC0415 - targets load lazily

        return ComputeRegistry(self.path)

    def submit(self, experiment: str, spec: JobSpec, *, tags: dict[str, str] | None = None,
               parent_id: str | None = None, run_id: str | None = None, created_by: str | None = None) -> str:
        """Validate, snapshot, record the run (NotStarted → Queued) and start its supervisor; its id.
        ``created_by``: the team server's user submitting it."""
        from torchyard.runtime.submit import submit_run  # noqa: PLC0415

        return submit_run(self, experiment, spec, tags=tags, parent_id=parent_id, run_id=run_id,
                          created_by=created_by)

    def record_run(self, experiment: str, spec: JobSpec, *, tags: dict[str, str] | None = None,
                   parent_id: str | None = None, run_id: str | None = None) -> str:
        """Validate, snapshot and record a run without starting it (a test's or a tool's step)."""
        from torchyard.runtime.submit import record_run  # noqa: PLC0415

        return record_run(self, experiment, spec, tags=tags, parent_id=parent_id, run_id=run_id)


def server_url(path: Any = None) -> str | None:
    """The team server a workspace argument names: ``path`` if it is an http(s) URL, else (without a
    path) ``TORCHYARD_SERVER`` or an http(s) ``TORCHYARD_WORKSPACE``; None for a folder."""
    if path is not None:
        text = os.fspath(path) if not isinstance(path, str) else path
        return text if text.startswith(("http://", "https://")) else None
    for name in ("TORCHYARD_SERVER", "TORCHYARD_WORKSPACE"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value
    return None
