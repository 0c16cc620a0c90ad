"""A workspace on a team server: ``Workspace(url="http://HOST:PORT", token=...)``.

The same calls as a local workspace — experiments, runs, submit — go over HTTP. Submit snapshots
the source folder into a local cache (``~/.cache/torchyard/snapshots``; its stat cache makes an
unchanged tree cost no reading), asks the server which contents it lacks and uploads only those.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchyard.errors import NotSupportedError, SpecError
from torchyard.remote.client import Client, q, token_for

PACK_OBJECT = 1 << 20  # objects up to this size travel packed together ...
PACK_BYTES = 8 << 20  # ... in requests of about this size


def cache_dir() -> str:
    base = os.environ.get("TORCHYARD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "torchyard")
    return os.path.join(base, "snapshots")


class RemoteStore:
    """The few Store reads the CLI makes, answered by the server (rows the caller may see)."""

    def __init__(self, ws: RemoteWorkspace) -> None:
        self.ws = ws

    def list_runs(self, experiment: str | None = None, status: str | None = None, limit: int | None = None,
                  parent_id: str | None = None) -> list[dict[str, Any]]:
        """Runs newest first (only those of experiments the caller may see)."""
        params: dict[str, Any] = {"limit": min(limit or 500, 500), "status": status, "experiment": experiment,
                                  "parent": parent_id}
        if parent_id is None:
            params["top_level"] = "0"
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.ws.client.get("/api/v1/runs", **params, cursor=cursor)
            rows.extend(page["runs"])
            cursor = page.get("next_cursor")
            if not cursor or (limit is not None and len(rows) >= limit):
                break
        return rows[:limit] if limit is not None else rows

    def list_experiments(self) -> list[str]:
        return list(self.ws.client.get("/api/v1/experiments")["experiments"])


class RemoteWorkspace:
    """A workspace served by ``torchyard server`` at ``url``; ``token``: an API token (default:
    ``TORCHYARD_TOKEN`` or what ``torchyard login`` saved)."""

    is_remote = True

    def __init__(self, url: str, token: str | None = None) -> None:
        self.client = Client(url, token or token_for(url))
        self.url = self.client.url
        self.path = self.url  # where a local workspace has its folder
        self.store = RemoteStore(self)

    def __repr__(self) -> str:
        return f"Workspace(url={self.url!r})"

    # ---- experiments and runs -------------------------------------------------------------------

    @property
    def experiments(self) -> dict[str, Any]:
        from torchyard.experiment import Experiment  # noqa: PLC0415

        return {name: Experiment(self, name) for name in self.store.list_experiments()}  # type: ignore[arg-type]

    def get_run(self, run_id: str) -> Any:
        """The run ``run_id`` (NotFoundError if it does not exist or the caller may not see it)."""
        from torchyard.remote.run import RemoteRun, RemoteSweepRun  # noqa: PLC0415
        from torchyard.status import RunKind  # noqa: PLC0415

        row = self.client.get(f"/api/v1/runs/{q(run_id)}/status")
        cls = RemoteSweepRun if row.get("kind") == RunKind.SWEEP else RemoteRun
        return cls(self, row["experiment"], run_id)

    def whoami(self) -> dict[str, Any]:
        """The server's view of the caller: user, role, token scope."""
        return dict(self.client.get("/api/v1/me"))

    # ---- submit ---------------------------------------------------------------------------------

    def upload_snapshot(self, source: str) -> tuple[str, int]:
        """Snapshot ``source`` and upload what the server lacks: (snapshot id, bytes uploaded)."""
        from torchyard.workspace.snapshots import SnapshotStore  # noqa: PLC0415

        local = SnapshotStore(cache_dir())
        return self.upload_files(local, local.take(source))

    def upload_path(self, path: str) -> tuple[Any, str, int]:
        """A model's file or folder (no ignore rules): (its local manifest, snapshot id, bytes uploaded)."""
        from torchyard.workspace.snapshots import SnapshotStore  # noqa: PLC0415

        local = SnapshotStore(cache_dir())
        snap = local.put(path)
        snapshot, sent = self.upload_files(local, snap)
        return snap, snapshot, sent

    def upload_files(self, local: Any, snap: Any) -> tuple[str, int]:
        """Upload the objects of the local manifest ``snap`` (in the SnapshotStore ``local``) that the
        server lacks, then the manifest: (the server's snapshot id, bytes uploaded)."""
        pairs = sorted({(f.sha256, f.size) for f in snap.files})
        missing = set(self.client.post("/api/v1/objects/missing", {"objects": [list(p) for p in pairs]})["missing"])
        # small objects go many to a request (one request per file cost ~5 ms each for 2,000 files)
        sent = 0
        pack: list[bytes] = []
        packed = 0
        for sha, size in pairs:
            if sha not in missing:
                continue
            with open(local.object_path(sha), "rb") as fh:
                data = fh.read()
            sent += size
            if size > PACK_OBJECT:  # a big file travels alone
                self.client.request("PUT", f"/api/v1/objects/{sha}", raw=data, ctype="application/octet-stream")
                continue
            pack.append(sha.encode() + size.to_bytes(8, "big") + data)
            packed += 72 + size
            if packed >= PACK_BYTES:
                self.client.request("PUT", "/api/v1/packs", raw=b"".join(pack), ctype="application/octet-stream")
                pack, packed = [], 0
        if pack:
            self.client.request("PUT", "/api/v1/packs", raw=b"".join(pack), ctype="application/octet-stream")
        files = [{"path": f.path, "sha256": f.sha256, "size": f.size, "executable": f.executable} for f in snap.files]
        snapshot = self.client.post("/api/v1/snapshots", {"files": files})["snapshot"]
        return str(snapshot), sent

    def submit(self, experiment: str, spec: Any, *, tags: Mapping[str, Any] | None = None,
               parent_id: str | None = None, run_id: str | None = None) -> str:
        """Upload the snapshot and submit ``spec`` (a JobSpec) to ``experiment``; the run id."""
        if parent_id is not None or run_id is not None:
            raise NotSupportedError("parent_id", "a remote workspace submits top-level runs only")
        source = os.path.abspath(spec.source_directory)
        snapshot, sent = self.upload_snapshot(source)
        self.last_upload_bytes = sent
        body = {"experiment": experiment, "spec": spec.to_dict(), "snapshot": snapshot,
                "tags": {str(k): str(v) for k, v in (tags or {}).items()}, "client_source": source}
        return str(self.client.post("/api/v1/runs", body)["run_id"])

    def submit_config(self, experiment: str, config: Any, tags: Mapping[str, Any] | None) -> Any:
        """``Experiment.submit`` against the server: an estimator, ScriptRunConfig or JobSpec."""
        from torchyard.remote.run import RemoteRun  # noqa: PLC0415
        from torchyard.spec.job import JobSpec  # noqa: PLC0415

        if getattr(config, "__torchyard_sweep__", False):
            return self.submit_sweep(experiment, config, tags)
        spec = config if isinstance(config, JobSpec) else getattr(config, "to_job_spec", lambda: None)()
        if not isinstance(spec, JobSpec):
            raise SpecError("config", f"cannot submit {type(config).__name__}; pass a PyTorch estimator or ScriptRunConfig")
        return RemoteRun(self, experiment, self.submit(experiment, spec, tags=tags))

    def submit_sweep(self, experiment: str, config: Any, tags: Mapping[str, Any] | None = None) -> Any:
        """Start a sweep (a ``HyperDriveConfig``) on the server: the trial's source folder is uploaded
        as for a run, and the sweep controller runs on the server; its :class:`RemoteSweepRun`."""
        from torchyard.remote.run import RemoteSweepRun  # noqa: PLC0415

        source = os.path.abspath(config.trial_spec.source_directory)
        snapshot, sent = self.upload_snapshot(source)
        self.last_upload_bytes = sent
        definition = config.to_dict(config.hyperparameter_sampling.seed)
        body = {"experiment": experiment, "sweep": definition, "snapshot": snapshot,
                "tags": {str(k): str(v) for k, v in {**config.tags, **(tags or {})}.items()},
                "client_source": source}
        return RemoteSweepRun(self, experiment, str(self.client.post("/api/v1/sweeps", body)["run_id"]))

    def runs_of(self, experiment: str, status: str | None = None, limit: int | None = None) -> list[Any]:
        """``Experiment.get_runs()``: the experiment's runs, newest first."""
        from torchyard.remote.run import RemoteRun  # noqa: PLC0415

        rows = self.client.get(f"/api/v1/experiments/{q(experiment)}/runs", status=status, limit=limit)["runs"]
        return [RemoteRun(self, experiment, r["id"], row=r) for r in rows]

    # ---- models and services (``Model``, ``Webservice`` and ``Model.deploy`` ask these) -----------

    def model_registry(self) -> Any:
        """The server's model registry over HTTP (``ModelRegistry``'s methods)."""
        from torchyard.remote.models import RemoteRegistry  # noqa: PLC0415

        return RemoteRegistry(self)

    def service(self, name: str) -> Any:
        """The server's model service ``name`` (NotFoundError if there is none the caller may see)."""
        from torchyard.remote.models import RemoteWebservice  # noqa: PLC0415

        return RemoteWebservice(self, name)

    def services(self) -> list[Any]:
        """The server's model services the caller may see."""
        from torchyard.remote.models import RemoteWebservice  # noqa: PLC0415

        return RemoteWebservice.list(self)

    def deploy_service(self, name: str, models: Any, inference_config: Any, deployment_config: Any,
                       deployment_target: str | None = None, overwrite: bool = False) -> Any:
        """``Model.deploy``: upload the entry script's folder and start the service on the server."""
        from torchyard.remote.models import deploy  # noqa: PLC0415

        return deploy(self, name, models, inference_config, deployment_config, deployment_target, overwrite)

    def endpoint(self, name: str) -> Any:
        """The server's online endpoint ``name``."""
        from torchyard.remote.models import RemoteEndpoint  # noqa: PLC0415

        return RemoteEndpoint(self, name)

    def endpoints(self) -> list[Any]:
        from torchyard.remote.models import RemoteEndpoint  # noqa: PLC0415

        return RemoteEndpoint.list(self)

    def create_endpoint(self, name: str, **kwargs: Any) -> Any:
        """``Endpoint.create``: start the endpoint's router on the server."""
        from torchyard.remote.models import RemoteEndpoint  # noqa: PLC0415

        return RemoteEndpoint.create(self, name, **kwargs)

    # ---- what stays on the server ---------------------------------------------------------------

    def compute_names(self) -> list[dict[str, Any]]:
        """The server's compute targets (name, kind); attaching them happens on the server."""
        return list(self.client.get("/api/v1/compute")["compute"])

    def datastore_names(self) -> list[dict[str, Any]]:
        """The server's datastores (name, kind): their URLs and credentials stay on the server."""
        return list(self.client.get("/api/v1/datastores")["datastores"])

    def environment_names(self) -> list[dict[str, Any]]:
        """The environments registered on the server (name, version)."""
        return list(self.client.get("/api/v1/environments")["environments"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotSupportedError(name, f"Workspace.{name} is not available through a team server (yet); "
                                      "use it on the server's own workspace")

    @property
    def compute_targets(self) -> Any:
        """The server's compute targets: ``list()``, and ``attach``/``remove`` for admins."""
        from torchyard.remote.registrations import RemoteComputeTargets  # noqa: PLC0415

        return RemoteComputeTargets(self)

    @property
    def environments(self) -> Any:
        """The server's environments: ``list()``, ``get()``, and ``register()`` for admins."""
        from torchyard.remote.registrations import RemoteEnvironments  # noqa: PLC0415

        return RemoteEnvironments(self)

    @property
    def datastores(self) -> Any:
        """The server's datastores (names and kinds): ``list()``, and ``register_*`` for admins."""
        from torchyard.remote.registrations import RemoteDatastores  # noqa: PLC0415

        return RemoteDatastores(self)
