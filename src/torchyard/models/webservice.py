"""Local deployment, Azure ML v1's shapes: ``InferenceConfig``, ``LocalWebservice.deploy_configuration``,
``Model.deploy`` → ``Webservice``.

A service is a detached supervisor process (it outlives the deploying process, like a run's
supervisor) with ``workers`` worker processes that share one listening socket; see
:mod:`torchyard.runtime.serving.supervisor`. Everything about it lives in ``<workspace>/services/NAME/``.
No Docker.
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import json
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from torchyard.errors import NotFoundError, NotSupportedError, SpecError, TorchyardError

if TYPE_CHECKING:
    from torchyard.spec import Environment
    from torchyard.workspace.models import ModelRecord, ModelRegistry
    from torchyard.workspace.workspace import WorkspaceFolder as Workspace

#: States a service reports (Azure's words).
STATES = ("Transitioning", "Healthy", "Unhealthy", "Failed", "Stopped")


class DeploymentError(TorchyardError):
    """A deployment or an update failed; ``logs`` holds the end of the service's logs."""


class WebserviceError(TorchyardError):
    """A scoring request got an error answer; ``status_code`` and ``body`` say which."""


@dataclass(frozen=True)
class InferenceConfig:
    """What to run: ``entry_script`` (relative to ``source_directory``) defines ``init()`` and
    ``run(raw_data)``, or a class with ``load(model_dir)`` and ``predict(batch)`` (dynamic batching).
    ``environment``: a torchyard ``Environment`` built (and cached) like a run's; None: this
    interpreter. ``environment_variables`` are set for the workers."""

    entry_script: str = "score.py"
    source_directory: str = "."
    environment: Environment | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    runtime: str | None = None  # Azure's; only "python" (or None) is meaningful here

    def __post_init__(self) -> None:
        if self.source_directory is None:  # Azure's default: the working directory
            object.__setattr__(self, "source_directory", ".")
        if not isinstance(self.entry_script, str) or not self.entry_script:
            raise SpecError("entry_script", "must be a file name, e.g. score.py")
        if not isinstance(self.source_directory, str | os.PathLike):
            raise SpecError("source_directory", "must be a folder")
        if self.runtime not in (None, "python"):
            raise NotSupportedError("runtime", f"{self.runtime!r}: only python runs here")

    def entry_path(self) -> str:
        """The scoring script's absolute path."""
        return os.path.join(os.path.abspath(os.fspath(self.source_directory)), self.entry_script)

    def check(self) -> str:
        """Validate the entry script without running it; returns its mode ("azure" or "typed")."""
        from torchyard.runtime.serving.app import EntryScriptError, inspect_entry_script  # noqa: PLC0415

        src = os.path.abspath(os.fspath(self.source_directory))
        if not os.path.isdir(src):
            raise SpecError("source_directory", f"{self.source_directory!r} is not a folder")
        path = self.entry_path()
        if not os.path.realpath(path).startswith(os.path.realpath(src) + os.sep):
            raise SpecError("entry_script", f"{self.entry_script!r} is outside source_directory")
        if not os.path.isfile(path):
            raise SpecError("entry_script", f"{self.entry_script!r} does not exist in {src}")
        try:
            return inspect_entry_script(path)
        except EntryScriptError as err:
            raise SpecError("entry_script", str(err)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LocalWebserviceDeploymentConfiguration:
    """How to serve: see :meth:`LocalWebservice.deploy_configuration`."""

    port: int | None = None
    host: str = "127.0.0.1"
    workers: int = 1
    auth_enabled: bool = False
    max_concurrent_requests: int = 256
    request_timeout_ms: int = 5000
    max_batch_size: int = 1
    max_batch_delay_ms: float = 2.0
    threads_per_worker: int = 1
    num_replicas: int = 1
    cpus_per_replica: float = 1.0
    max_request_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 0 < self.port < 65536):
            raise SpecError("port", f"must be 1-65535 or None (any free port), got {self.port!r}")
        if not isinstance(self.host, str) or not self.host:
            raise SpecError("host", f"must be an address, got {self.host!r}")
        for name, low in (("workers", 1), ("max_concurrent_requests", 1), ("request_timeout_ms", 1),
                          ("max_batch_size", 1), ("threads_per_worker", 1), ("num_replicas", 1),
                          ("max_request_bytes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(name, f"must be an integer of at least {low}, got {value!r}")
        if isinstance(self.max_batch_delay_ms, bool) or not isinstance(self.max_batch_delay_ms, int | float) \
                or self.max_batch_delay_ms < 0:
            raise SpecError("max_batch_delay_ms", f"must be a number of at least 0, got {self.max_batch_delay_ms!r}")
        if isinstance(self.cpus_per_replica, bool) or not isinstance(self.cpus_per_replica, int | float) \
                or self.cpus_per_replica < 0:
            raise SpecError("cpus_per_replica", f"must be a number of at least 0, got {self.cpus_per_replica!r}")
        if not isinstance(self.auth_enabled, bool):
            raise SpecError("auth_enabled", f"must be True or False, got {self.auth_enabled!r}")
        if not _is_loopback(self.host) and not self.auth_enabled:
            raise SpecError(
                "host", f"{self.host} is not a loopback address: serving it needs auth_enabled=True (keys)"
            )


class LocalWebservice:
    """Azure's ``LocalWebservice``: its ``deploy_configuration`` describes a local service."""

    @staticmethod
    def deploy_configuration(
        port: int | None = None,
        host: str = "127.0.0.1",
        workers: int = 1,
        auth_enabled: bool = False,
        max_concurrent_requests: int = 256,
        request_timeout_ms: int = 5000,
        max_batch_size: int = 1,
        max_batch_delay_ms: float = 2.0,
        threads_per_worker: int = 1,
        num_replicas: int = 1,
        cpus_per_replica: float = 1.0,
        max_request_bytes: int = 16 * 1024 * 1024,
    ) -> LocalWebserviceDeploymentConfiguration:
        """``port=None``: any free port. ``host`` other than loopback needs ``auth_enabled``.
        ``max_concurrent_requests``: admitted (queued + running) per worker, one more gets 429.
        ``request_timeout_ms``: 504 after it. ``max_batch_size`` > 1 batches the typed API's
        ``predict``, waiting at most ``max_batch_delay_ms`` for a batch to fill. With a Ray
        ``deployment_target``: ``num_replicas`` replicas of ``cpus_per_replica`` CPUs each (``workers``
        is then unused), HTTP on the cluster's head node at ``host:port`` (default port 8000).
        ``max_request_bytes``: a larger request body is answered 413 (default 16 MiB)."""
        return LocalWebserviceDeploymentConfiguration(
            port=port, host=host, workers=workers, auth_enabled=auth_enabled,
            max_concurrent_requests=max_concurrent_requests, request_timeout_ms=request_timeout_ms,
            max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
            threads_per_worker=threads_per_worker, num_replicas=num_replicas, cpus_per_replica=cpus_per_replica,
            max_request_bytes=max_request_bytes,
        )


# ---- Azure's cloud deploy configurations, mapped onto local services and Ray Serve ------------------


@dataclass(frozen=True)
class AzureDeploymentConfiguration(LocalWebserviceDeploymentConfiguration):
    """What ``AciWebservice.deploy_configuration`` / ``AksWebservice.deploy_configuration`` return: a
    local service configuration (``workers``, ``num_replicas``, ``auth_enabled``, limits), plus what
    Azure's call said, kept for the record (``azure``: cpu_cores, memory_gb, autoscale, tags, ...)
    and ``notes`` on how it was mapped."""

    service_type: str = "ACI"
    azure: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _refuse(values: dict[str, Any], names: tuple[str, ...], why: str) -> None:
    for name in names:
        value = values.get(name)
        if value not in (None, False):
            raise NotSupportedError(name, why)


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SpecError(name, f"must be a positive number, got {value!r}")
    return float(value)


class AciWebservice:
    """Azure's container instance service, served here as a local service (processes, no container):
    ``cpu_cores`` → that many worker processes (at least 1, rounded up), ``auth_enabled`` → keys
    (default off, as ACI's); ``memory_gb`` is recorded, not enforced. TLS, DNS labels, virtual
    networks, customer-managed keys and model data collection are refused, naming the parameter."""

    @staticmethod
    def deploy_configuration(
        cpu_cores: float | None = None, memory_gb: float | None = None, tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None, description: str | None = None, location: str | None = None,
        auth_enabled: bool | None = None, ssl_enabled: bool | None = None, enable_app_insights: bool | None = None,
        ssl_cert_pem_file: str | None = None, ssl_key_pem_file: str | None = None, ssl_cname: str | None = None,
        dns_name_label: str | None = None, primary_key: str | None = None, secondary_key: str | None = None,
        collect_model_data: bool | None = None, cmk_vault_base_url: str | None = None, cmk_key_name: str | None = None,
        cmk_key_version: str | None = None, vnet_name: str | None = None, subnet_name: str | None = None,
    ) -> AzureDeploymentConfiguration:
        """A local service configuration from ACI's parameters (see the class)."""
        values = dict(locals())
        _refuse(values, ("ssl_enabled", "ssl_cert_pem_file", "ssl_key_pem_file", "ssl_cname", "dns_name_label",
                         "cmk_vault_base_url", "cmk_key_name", "cmk_key_version", "vnet_name", "subnet_name"),
                "a cloud container setting with no meaning for a local service (it binds 127.0.0.1; put a TLS "
                "proxy in front to serve it elsewhere); leave it out")
        _common_refusals(values)
        cores = _positive("cpu_cores", cpu_cores)
        _positive("memory_gb", memory_gb)
        workers = max(1, math.ceil(cores)) if cores else 1
        notes = [f"ACI container -> local service with {workers} worker process{'es' if workers > 1 else ''}"]
        if memory_gb:
            notes.append(f"memory_gb={memory_gb:g} is recorded, not enforced")
        return AzureDeploymentConfiguration(
            workers=workers, auth_enabled=bool(auth_enabled), service_type="ACI", notes=tuple(notes),
            azure=_record(values))


class AksWebservice:
    """Azure's Kubernetes service, served here by replicas: locally ``num_replicas`` worker processes;
    with ``Model.deploy(..., deployment_target=<attached Ray cluster>)`` Ray Serve replicas of
    ``cpu_cores`` CPUs each. ``auth_enabled`` defaults to True (as AKS's); ``scoring_timeout_ms`` →
    ``request_timeout_ms``; ``replica_max_concurrent_requests`` → ``max_concurrent_requests``.
    Autoscaling (``autoscale_enabled``, AKS's default when ``num_replicas`` is None) starts
    ``autoscale_min_replicas`` (default 1) and does not scale: said in ``notes``. Token auth, GPUs
    per replica, TLS and Kubernetes namespaces are refused, naming the parameter."""

    @staticmethod
    def deploy_configuration(
        autoscale_enabled: bool | None = None, autoscale_min_replicas: int | None = None,
        autoscale_max_replicas: int | None = None, autoscale_refresh_seconds: int | None = None,
        autoscale_target_utilization: int | None = None, collect_model_data: bool | None = None,
        auth_enabled: bool | None = None, cpu_cores: float | None = None, memory_gb: float | None = None,
        enable_app_insights: bool | None = None, scoring_timeout_ms: int | None = None,
        replica_max_concurrent_requests: int | None = None, max_request_wait_time: int | None = None,
        num_replicas: int | None = None, primary_key: str | None = None, secondary_key: str | None = None,
        tags: dict[str, str] | None = None, properties: dict[str, str] | None = None, description: str | None = None,
        gpu_cores: int | None = None, period_seconds: int | None = None, initial_delay_seconds: int | None = None,
        timeout_seconds: int | None = None, success_threshold: int | None = None, failure_threshold: int | None = None,
        namespace: str | None = None, token_auth_enabled: bool | None = None, compute_target_name: str | None = None,
        cpu_cores_limit: float | None = None, memory_gb_limit: float | None = None, blobfuse_enabled: bool | None = None,
    ) -> AzureDeploymentConfiguration:
        """A local or Ray Serve configuration from AKS's parameters (see the class)."""
        values = dict(locals())
        _refuse(values, ("token_auth_enabled", "namespace", "blobfuse_enabled", "compute_target_name"),
                "an AKS setting with no meaning here (pick the cluster with Model.deploy(..., deployment_target=...)); "
                "leave it out")
        if gpu_cores:
            raise NotSupportedError("gpu_cores", "services get no GPU reservation here; the scoring script may use "
                                                 "torch.cuda itself on a machine that has one")
        _common_refusals(values)
        cores = _positive("cpu_cores", cpu_cores)
        _positive("memory_gb", memory_gb)
        notes: list[str] = []
        if num_replicas is not None and autoscale_enabled:
            raise SpecError("num_replicas", "give num_replicas or autoscale_enabled=True, not both (as in Azure)")
        if num_replicas is None:
            replicas = autoscale_min_replicas or 1
            notes.append(f"autoscaling is not done here: {replicas} replica{'s' if replicas > 1 else ''} "
                         "(autoscale_min_replicas) serve throughout")
        else:
            replicas = num_replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise SpecError("num_replicas", f"must be a whole number of at least 1, got {replicas!r}")
        if memory_gb:
            notes.append(f"memory_gb={memory_gb:g} is recorded, not enforced")
        extra: dict[str, Any] = {}
        if scoring_timeout_ms is not None:
            extra["request_timeout_ms"] = scoring_timeout_ms
        if replica_max_concurrent_requests is not None:
            extra["max_concurrent_requests"] = replica_max_concurrent_requests
        return AzureDeploymentConfiguration(
            workers=replicas, num_replicas=replicas, cpus_per_replica=cores if cores else 1.0,
            auth_enabled=True if auth_enabled is None else bool(auth_enabled), service_type="AKS",
            notes=tuple(notes), azure=_record(values), **extra)


def _common_refusals(values: dict[str, Any]) -> None:
    _refuse(values, ("primary_key", "secondary_key"),
            "keys are generated at deploy time; read them with service.get_keys(), replace one with regen_key()")
    _refuse(values, ("collect_model_data",), "model data collection (to Azure storage) is not done here; log inputs "
                                             "from the scoring script if you need them")
    _refuse(values, ("enable_app_insights",), "Application Insights is Azure's; services expose Prometheus metrics "
                                              "at /metrics instead")
    _refuse(values, ("location",), "a self-hosted service runs where it is deployed; leave location out")


def _record(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ---- deploy ---------------------------------------------------------------------------------------


def _services(ws: Workspace) -> Any:
    from torchyard.workspace import services  # noqa: PLC0415

    return services


def _registry(ws: Workspace) -> ModelRegistry:
    from torchyard.workspace.models import ModelRegistry  # noqa: PLC0415

    return ModelRegistry(ws.store, ws.snapshots)


def _resolve_models(ws: Workspace, models: Any) -> builtins.list[ModelRecord]:
    """The registered versions a deployment serves: Model objects (anything with ``name`` and
    ``version``) or ``"NAME[:VERSION]"`` strings, each looked up again (still registered?)."""
    if models is None or isinstance(models, str) or hasattr(models, "version"):
        models = [models] if models is not None else []
    if not isinstance(models, list | tuple) or not models:
        raise SpecError("models", "give at least one Model (or 'NAME:VERSION')")
    reg = _registry(ws)
    out = []
    for m in models:
        if isinstance(m, str):
            name, _, version = m.partition(":")
            try:
                out.append(reg.get(name, int(version) if version else None))
            except ValueError:
                raise SpecError("models", f"expected NAME or NAME:VERSION, got {m!r}") from None
        elif hasattr(m, "name") and hasattr(m, "version"):
            out.append(reg.get(str(m.name), int(m.version)))
        else:
            raise SpecError("models", f"expected a Model or 'NAME:VERSION', got {type(m).__name__}")
    return out


def _check_port(host: str, port: int | None) -> None:
    if port is None:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise SpecError("port", f"{host}:{port} cannot be used ({err.strerror}); choose another or None") from None


def _prepare_generation(ws: Workspace, sdir: str, gen: int, name: str, models: builtins.list[ModelRecord],
                        inference_config: InferenceConfig, config: LocalWebserviceDeploymentConfiguration) -> dict[str, Any]:
    gen_dir = os.path.join(sdir, f"gen_{gen}")
    src_dir = os.path.join(gen_dir, "src")
    models_dir = os.path.join(gen_dir, "models")
    os.makedirs(src_dir, exist_ok=True)
    max_bytes, max_files = ws.snapshot_limits()
    snap = ws.snapshots.take(os.path.abspath(os.fspath(inference_config.source_directory)),
                             max_bytes=max_bytes, max_files=max_files)
    ws.snapshots.materialize(snap.manifest_id, src_dir)
    reg = _registry(ws)
    for m in models:
        reg.materialize(m, os.path.join(models_dir, m.name, str(m.version)))
    model_dir = os.path.join(models_dir, models[0].name, str(models[0].version)) if len(models) == 1 else models_dir
    spec = {
        "service_name": name,
        "generation": gen,
        "entry_path": os.path.join(src_dir, inference_config.entry_script),
        "source_dir": src_dir,
        "source_snapshot": snap.manifest_id,
        "model_dir": model_dir,
        "models": [{"id": f"{m.name}:{m.version}", "name": m.name, "version": m.version, "sha256": m.sha256}
                   for m in models],
        "config": asdict(config),
        "environment_variables": dict(inference_config.environment_variables),
    }
    _services(ws).write_json(os.path.join(gen_dir, "spec.json"), spec)
    return spec


def _env_doc(inference_config: InferenceConfig) -> dict[str, Any] | None:
    env = inference_config.environment
    if env is None:
        return None
    doc = env.to_spec_dict()
    return {
        "pip_packages": list(doc["pip_packages"]),
        "conda_packages": list(doc["conda_packages"]),
        "pip_requirements_file": doc["pip_requirements_file"],
        "conda_dependencies_file": doc["conda_dependencies_file"],
        "python": doc["python"],
        "user_managed": doc["user_managed"],
        "name": doc["name"],
        "version": doc["version"],
    }


def deploy(
    ws: Workspace,
    name: str,
    models: Any,
    inference_config: InferenceConfig | None,
    deployment_config: Any,
    deployment_target: str | None = None,
    overwrite: bool = False,
) -> Webservice:
    """Validate everything, then create the service folder and start its supervisor (detached)."""
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    check_name(name, "name")
    ray_address = None
    if deployment_target is not None and not isinstance(deployment_target, str):  # Azure passes the target itself
        deployment_target = getattr(deployment_target, "name", deployment_target)
    if deployment_target is not None and deployment_target != "local":
        from torchyard.compute.registry import ComputeRegistry  # noqa: PLC0415

        record = ComputeRegistry(ws.path).record(str(deployment_target))
        if record.get("kind") != "ray":
            raise NotSupportedError("deployment_target", f"{deployment_target!r} is a {record.get('kind')} target; "
                                    "services run locally or on a Ray cluster")
        ray_address = record.get("config", {}).get("address") or "auto"
    else:
        deployment_target = None
    resolved = _resolve_models(ws, models)
    if inference_config is None:
        raise SpecError("inference_config", "give an InferenceConfig(entry_script=..., source_directory=...)")
    if not isinstance(inference_config, InferenceConfig):
        raise SpecError("inference_config", f"expected an InferenceConfig, got {type(inference_config).__name__}")
    inference_config.check()
    config = deployment_config or LocalWebservice.deploy_configuration()
    if not isinstance(config, LocalWebserviceDeploymentConfiguration):
        raise SpecError("deployment_config", "expected LocalWebservice.deploy_configuration(...)")
    if inference_config.environment is not None:
        import msgspec  # noqa: PLC0415

        from torchyard.environments import check_supported  # noqa: PLC0415
        from torchyard.spec.job import EnvironmentSpec  # noqa: PLC0415

        check_supported(msgspec.convert(_env_doc(inference_config), EnvironmentSpec))
    _require_serving(ray_address is not None)
    svc = _services(ws)
    sdir = svc.service_dir(ws.path, name)
    if os.path.exists(os.path.join(sdir, "service.json")):
        if not overwrite:
            raise SpecError("name", f"a service {name!r} exists; delete it, update it, or pass overwrite=True")
        Webservice(ws, name).delete()
    if ray_address is None:  # on Ray the port is the cluster's one Serve proxy, which may be up already
        _check_port(config.host, config.port)
    shutil.rmtree(sdir, ignore_errors=True)
    try:
        os.makedirs(os.path.join(sdir, "logs"), exist_ok=True)
        _prepare_generation(ws, sdir, 1, name, resolved, inference_config, config)
        if config.auth_enabled:
            svc.write_json(os.path.join(sdir, "keys.json"),
                           {"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32)}, mode=0o600)
        doc = {
            "name": name,
            "workspace": ws.path,
            "generation": 1,
            "created_at": time.time(),
            "models": [{"id": m.id} for m in resolved],
            "config": asdict(config),
            "environment": _env_doc(inference_config),
            "entry_script": inference_config.entry_script,
            "source_directory": os.path.abspath(os.fspath(inference_config.source_directory)),
            "deployment_target": deployment_target,
            "ray_address": ray_address,
        }
        if ray_address is not None and inference_config.environment is not None:
            raise NotSupportedError("inference_config.environment", "a Ray service uses the cluster's interpreter")
        svc.write_json(os.path.join(sdir, "service.json"), doc)
        from torchyard.runtime.spawn import spawn_detached  # noqa: PLC0415

        pid = spawn_detached("torchyard.runtime.serving.supervisor", sdir, os.path.join(sdir, "logs", "service.txt"),
                             what="the service supervisor")
        svc.write_json(os.path.join(sdir, "state.json"),
                       {"state": "Transitioning", "pid": pid, "generation": None, "started_at": time.time()})
    except BaseException:
        shutil.rmtree(sdir, ignore_errors=True)
        raise
    return Webservice(ws, name)


# ---- the service --------------------------------------------------------------------------------


def _require_serving(on_ray: bool) -> None:
    """Refuse a deploy whose serving packages are missing before anything is created (no Failed service
    left behind to block the name)."""
    import importlib.util  # noqa: PLC0415

    needed = ("ray", "starlette") if on_ray else ("starlette", "uvicorn")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        extra = "ray-serve" if on_ray else "serve"
        raise NotSupportedError("deploy", f"serving needs {', '.join(missing)}, which "
                                f"{'is' if len(missing) == 1 else 'are'} not installed: pip install \"torchyard[{extra}]\"")


def process_alive(pid: Any, marker: bytes) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line contains ``marker``."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
        with open(f"/proc/{pid}/stat") as fh:
            zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
    return marker in cmd and not zombie


def _pid_is_supervisor(pid: Any) -> bool:
    return process_alive(pid, b"torchyard.runtime.serving.supervisor")


class Webservice:
    """A deployed service: ``Webservice(ws, "digits-svc")``, or what ``Model.deploy`` returns (on a
    team server's workspace: a :class:`torchyard.remote.models.RemoteWebservice`)."""

    def __new__(cls, workspace: Workspace, name: str) -> Any:
        if getattr(workspace, "is_remote", False):
            return workspace.service(name)  # type: ignore[attr-defined]
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._dir = _services(workspace).service_dir(workspace.path, name)
        if _services(workspace).read_json(os.path.join(self._dir, "service.json")) is None:
            known = _services(workspace).list_services(workspace.path)
            raise NotFoundError(
                f"no service {name!r} in this workspace" + (f"; services: {', '.join(known)}" if known else "")
            )

    def __repr__(self) -> str:
        return f"Webservice(name={self.name!r}, state={self.state!r}, scoring_uri={self.scoring_uri!r})"

    @staticmethod
    def list(workspace: Workspace) -> builtins.list[Webservice]:
        """Every service of the workspace (whatever its state)."""
        if getattr(workspace, "is_remote", False):
            return workspace.services()  # type: ignore[attr-defined]
        return [Webservice(workspace, n) for n in _services(workspace).list_services(workspace.path)]

    # ---- what it is -------------------------------------------------------------------------------

    def _doc(self) -> dict[str, Any]:
        doc = _services(self.workspace).read_json(os.path.join(self._dir, "service.json"))
        if doc is None:
            raise NotFoundError(f"the service {self.name!r} was deleted")
        return doc

    def _state(self) -> dict[str, Any]:
        for _ in range(20):  # replaced atomically; a read may race the rename only once in a while
            doc = _services(self.workspace).read_json(os.path.join(self._dir, "state.json"))
            if doc is not None:
                return doc
            time.sleep(0.01)
        return {"state": "Transitioning"}

    @property
    def state(self) -> str:
        """``Transitioning`` (starting), ``Healthy``, ``Unhealthy`` (a worker is being restarted),
        ``Failed`` (see ``get_logs()``) or ``Stopped``."""
        st = self._state()
        state = str(st.get("state", "Transitioning"))
        if state in ("Transitioning", "Healthy", "Unhealthy") and not _pid_is_supervisor(st.get("pid")):
            time.sleep(0.05)  # it may just have written its last state
            st = self._state()
            state = str(st.get("state", "Transitioning"))
            if state in ("Transitioning", "Healthy", "Unhealthy") and not _pid_is_supervisor(st.get("pid")):
                return "Failed"
        return state

    def get_details(self) -> dict[str, Any]:
        """The service's definition and its supervisor's state (workers, restarts, generation)."""
        return {"name": self.name, **self._doc(), "status": self._state(), "state": self.state,
                "scoring_uri": self.scoring_uri}

    @property
    def port(self) -> int | None:
        """The port the service listens on, or None before it has one."""
        port = self._state().get("port")
        return int(port) if port else self._doc()["config"].get("port")

    @property
    def _base(self) -> str | None:
        port = self.port
        if not port:
            return None
        host = self._doc()["config"]["host"]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}{self._state().get('base_path', '')}"

    @property
    def scoring_uri(self) -> str | None:
        """``http://HOST:PORT/score``, or None before the service listens."""
        base = self._base
        return f"{base}/score" if base else None

    @property
    def swagger_uri(self) -> str | None:
        """``http://HOST:PORT/swagger.json``, or None before the service listens."""
        base = self._base
        return f"{base}/swagger.json" if base else None

    @property
    def models(self) -> builtins.list[str]:
        """The ids of the models the service serves (``NAME:VERSION``)."""
        return [m["id"] for m in self._doc()["models"]]

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must carry one of the service's keys."""
        return bool(self._doc()["config"].get("auth_enabled"))

    # ---- waiting, logs -------------------------------------------------------------------------------

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float = 600) -> None:
        """Block until the service is Healthy; raises DeploymentError (with the logs' end) if it Failed."""
        deadline = time.monotonic() + timeout_sec
        printed: dict[str, int] = {}
        last_state = None
        while True:
            state = self.state
            if show_output:
                for line in self._new_log_lines(printed):
                    sys.stdout.write(line + "\n")
                if state != last_state:
                    sys.stdout.write(f"{self.name}: {state}\n")
                    last_state = state
                sys.stdout.flush()
            if state == "Healthy":
                return
            if state in ("Failed", "Stopped"):
                logs = self.get_logs()
                err = self._state().get("error") or "the service stopped"
                raise DeploymentError(
                    f"service {self.name!r} {state.lower()}: {str(err).strip().splitlines()[-1] if err else ''} "
                    "(service.get_logs() has the whole story)",
                    logs=logs,
                )
            if time.monotonic() > deadline:
                raise DeploymentError(f"service {self.name!r} is still {state} after {timeout_sec} s", logs=self.get_logs())
            time.sleep(0.02)

    def _new_log_lines(self, printed: dict[str, int]) -> builtins.list[str]:
        """The complete lines written to the service's logs since the last call, each prefixed with
        its file's name (``printed``: lines already returned, by file; updated)."""
        logs_dir = os.path.join(self._dir, "logs")
        out: builtins.list[str] = []
        try:
            names = sorted(os.listdir(logs_dir), key=lambda n: (n != "service.txt", n))
        except OSError:
            return out
        for n in names:
            try:
                with open(os.path.join(logs_dir, n), encoding="utf-8", errors="replace") as fh:
                    complete = fh.read().split("\n")[:-1]  # a line still being written waits for its end
            except OSError:
                continue
            out.extend(f"[{n.removesuffix('.txt')}] {line}" for line in complete[printed.get(n, 0):])
            printed[n] = len(complete)
        return out

    def get_logs(self, num_lines: int = 5000) -> str:
        """The supervisor's log and every worker's, each headed by its file name (last lines)."""
        logs_dir = os.path.join(self._dir, "logs")
        parts = []
        try:
            names = sorted(os.listdir(logs_dir), key=lambda n: (n != "service.txt", n))
        except OSError:
            names = []
        for n in names:
            try:
                with open(os.path.join(logs_dir, n), encoding="utf-8", errors="replace") as fh:
                    lines = fh.read().splitlines()[-num_lines:]
            except OSError:
                continue
            parts.append(f"==> {n} <==\n" + "\n".join(lines) + ("\n" if lines else ""))
        return "".join(parts)

    # ---- keys -------------------------------------------------------------------------------------

    def get_keys(self) -> tuple[str, str]:
        """(primary, secondary) keys, for ``Authorization: Bearer KEY``. Needs ``auth_enabled``."""
        doc = _services(self.workspace).read_json(os.path.join(self._dir, "keys.json"))
        if not self.auth_enabled or doc is None:
            raise SpecError("auth_enabled", f"service {self.name!r} was deployed without auth_enabled=True")
        return str(doc["primary"]), str(doc["secondary"])

    def regen_key(self, key: str) -> None:
        """Replace the ``"primary"`` or ``"secondary"`` key (the old one stops working at once)."""
        if key not in ("primary", "secondary"):
            raise SpecError("key", f"must be 'primary' or 'secondary', got {key!r}")
        primary, secondary = self.get_keys()
        doc = {"primary": primary, "secondary": secondary, key: secrets.token_urlsafe(32)}
        _services(self.workspace).write_json(os.path.join(self._dir, "keys.json"), doc, mode=0o600)

    # ---- calling it -------------------------------------------------------------------------------

    def run(self, input_data: Any, timeout: float = 60.0) -> Any:
        """POST ``input_data`` (a JSON string, or anything JSON-able) to ``/score``; returns the answer.
        Raises WebserviceError for an error answer (its code and body attached)."""
        uri = self.scoring_uri
        if uri is None:
            raise DeploymentError(f"service {self.name!r} has no address yet (state {self.state})")
        body = input_data.encode() if isinstance(input_data, str) else json.dumps(input_data).encode()
        headers = {"Content-Type": "application/json"}
        if self.auth_enabled:
            headers["Authorization"] = f"Bearer {self.get_keys()[0]}"
        request = urllib.request.Request(uri, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - our own service
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            raise WebserviceError(f"service {self.name!r} answered {err.code}: {text}", status_code=err.code,
                                  body=text) from None
        except urllib.error.URLError as err:
            raise WebserviceError(f"service {self.name!r} did not answer: {err.reason}", status_code=None,
                                  body=None) from None

    # ---- changing it ------------------------------------------------------------------------------

    def update(self, models: Any = None, inference_config: InferenceConfig | None = None,
               deployment_config: LocalWebserviceDeploymentConfiguration | None = None,
               timeout_sec: float = 600) -> None:
        """Serve other models and/or other code, with no request dropped: the new workers start and
        load beside the old ones, then the old ones drain. If the new code fails to load, the old
        one keeps serving and DeploymentError is raised (with the traceback in ``logs``)."""
        doc = self._doc()
        if self.state not in ("Healthy", "Unhealthy"):
            raise DeploymentError(f"service {self.name!r} is {self.state}; only a running service can be updated")
        resolved = _resolve_models(self.workspace, models if models is not None else [m["id"] for m in doc["models"]])
        if inference_config is None:
            spec = _services(self.workspace).read_json(os.path.join(self._dir, f"gen_{doc['generation']}", "spec.json"))
            assert spec is not None
            inference_config = InferenceConfig(entry_script=doc["entry_script"], source_directory=spec["source_dir"],
                                               environment_variables=spec.get("environment_variables", {}))
        elif not isinstance(inference_config, InferenceConfig):
            raise SpecError("inference_config", f"expected an InferenceConfig, got {type(inference_config).__name__}")
        inference_config.check()
        if inference_config.environment is not None and _env_doc(inference_config) != doc.get("environment"):
            raise NotSupportedError("inference_config.environment", "a service's environment is fixed; deploy anew")
        known = {f.name for f in fields(LocalWebserviceDeploymentConfiguration)}
        old_cfg = LocalWebserviceDeploymentConfiguration(**{k: v for k, v in doc["config"].items() if k in known})
        config = deployment_config or old_cfg
        if (config.host, config.port or None) != (old_cfg.host, old_cfg.port or None):
            raise SpecError("deployment_config", "host and port of a running service cannot change")
        if config.auth_enabled != old_cfg.auth_enabled:
            raise SpecError("auth_enabled", "cannot change on a running service; deploy anew")
        gen = int(doc["generation"]) + 1
        try:
            _prepare_generation(self.workspace, self._dir, gen, self.name, resolved, inference_config, config)
        except BaseException:
            shutil.rmtree(os.path.join(self._dir, f"gen_{gen}"), ignore_errors=True)
            raise
        new_doc = {**doc, "generation": gen, "models": [{"id": m.id} for m in resolved], "config": asdict(config),
                   "entry_script": inference_config.entry_script,
                   "source_directory": os.path.abspath(os.fspath(inference_config.source_directory))}
        svc = _services(self.workspace)
        svc.write_json(os.path.join(self._dir, "service.json"), new_doc)
        os.kill(int(self._state()["pid"]), signal.SIGHUP)
        deadline = time.monotonic() + timeout_sec
        while True:
            st = self._state()
            upd = st.get("update") or {}
            if upd.get("generation") == gen and upd.get("status") == "done" and st.get("generation") == gen:
                shutil.rmtree(os.path.join(self._dir, f"gen_{doc['generation']}", "models"), ignore_errors=True)
                return
            if upd.get("generation") == gen and upd.get("status") == "failed" or self.state == "Failed" \
                    or time.monotonic() > deadline:
                svc.write_json(os.path.join(self._dir, "service.json"), doc)
                shutil.rmtree(os.path.join(self._dir, f"gen_{gen}"), ignore_errors=True)
                why = str(upd.get("error") or "timed out").strip().splitlines()
                raise DeploymentError(
                    f"update of service {self.name!r} failed: {why[-1] if why else ''}; the previous version serves on",
                    logs=self.get_logs(),
                )
            time.sleep(0.02)

    def delete(self) -> None:
        """Stop the service (its workers drain) and remove it. Idempotent."""
        st = self._state()
        pid = st.get("pid")
        if isinstance(pid, int) and _pid_is_supervisor(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
            # a Ray service deletes its Serve application first, which waits for its replicas to stop
            deadline = time.monotonic() + (120 if self._doc().get("deployment_target") else 30)
            while _pid_is_supervisor(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _pid_is_supervisor(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(self._dir, ignore_errors=True)
