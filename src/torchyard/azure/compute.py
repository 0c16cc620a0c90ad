"""Azure ML v1's compute names: ``ComputeTarget``, ``AmlCompute``, ``RemoteCompute``,
``ComputeTargetException``.

Here a compute target is a name in the workspace (``<workspace>/computes/NAME.json``) that a job's
``compute_target`` refers to. ``ComputeTarget.create(ws, name, AmlCompute.provisioning_configuration(
vm_size=..., max_nodes=...))`` records an *AmlCompute cluster* under ``name``: by default it runs on
local compute (this machine's processes, ``node_count`` simulated nodes); an administrator can map a
cluster name or a VM size to an attached Ray, Slurm or Kubernetes target in the workspace's
``azureml.json`` (``{"compute_map": {"gpu-cluster": "ray-a", "Standard_NC24": "slurm-gpu"}}``), and
the cluster is then that target under the new name. ``vm_size``'s GPU count (a table of common sizes,
:data:`VM_SIZES`) is checked against what the target has: a local target with fewer GPUs is
accepted with a warning (jobs asking ``use_gpu=True`` run on the CPU, saying so in their log), a
mapped target whose kind has no GPUs is refused, naming ``vm_size``.

What has no meaning on a self-hosted workspace (virtual networks, admin accounts, SSH-attached VMs,
managed identities) raises :class:`NotSupportedError` naming the parameter; nothing is silently
ignored. ``vm_priority``, ``idle_seconds_before_scaledown`` and ``min_nodes`` are recorded (they
change no result); ``max_nodes`` bounds a job's ``node_count`` at submit (runtime.submit.check_job).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from torchyard.compute.base import BUILTIN_TARGETS, attached_records
from torchyard.compute.base import ComputeTarget as TargetBase
from torchyard.compute.registry import ComputeRegistry, target_class
from torchyard.errors import ComputeError, NotFoundError, NotSupportedError, SpecError
from torchyard.launch.contract import node_gpus

#: VM size (lower case) → (vCPUs, GPUs, memory GB) for the sizes Azure's samples use
VM_SIZES: dict[str, tuple[int, int, float]] = {
    "standard_d1_v2": (1, 0, 3.5), "standard_d2_v2": (2, 0, 7), "standard_d3_v2": (4, 0, 14),
    "standard_d4_v2": (8, 0, 28), "standard_d5_v2": (16, 0, 56), "standard_d11_v2": (2, 0, 14),
    "standard_d12_v2": (4, 0, 28), "standard_d13_v2": (8, 0, 56), "standard_d14_v2": (16, 0, 112),
    "standard_ds1_v2": (1, 0, 3.5), "standard_ds2_v2": (2, 0, 7), "standard_ds3_v2": (4, 0, 14),
    "standard_ds4_v2": (8, 0, 28), "standard_ds5_v2": (16, 0, 56), "standard_ds11_v2": (2, 0, 14),
    "standard_ds12_v2": (4, 0, 28), "standard_d2s_v3": (2, 0, 8), "standard_d4s_v3": (4, 0, 16),
    "standard_d8s_v3": (8, 0, 32), "standard_d16s_v3": (16, 0, 64), "standard_d2_v3": (2, 0, 8),
    "standard_d4_v3": (4, 0, 16), "standard_e4s_v3": (4, 0, 32), "standard_f4s_v2": (4, 0, 8),
    "standard_f8s_v2": (8, 0, 16),
    "standard_nc6": (6, 1, 56), "standard_nc12": (12, 2, 112), "standard_nc24": (24, 4, 224),
    "standard_nc6s_v2": (6, 1, 112), "standard_nc12s_v2": (12, 2, 224), "standard_nc24s_v2": (24, 4, 448),
    "standard_nc6s_v3": (6, 1, 112), "standard_nc12s_v3": (12, 2, 224), "standard_nc24s_v3": (24, 4, 448),
    "standard_nc24rs_v3": (24, 4, 448), "standard_nc4as_t4_v3": (4, 1, 28), "standard_nc8as_t4_v3": (8, 1, 56),
    "standard_nc16as_t4_v3": (16, 1, 110), "standard_nc64as_t4_v3": (64, 4, 440),
    "standard_nc24ads_a100_v4": (24, 1, 220), "standard_nc48ads_a100_v4": (48, 2, 440),
    "standard_nc96ads_a100_v4": (96, 4, 880), "standard_nd6s": (6, 1, 112), "standard_nd12s": (12, 2, 224),
    "standard_nd24s": (24, 4, 448), "standard_nd40rs_v2": (40, 8, 672), "standard_nd96asr_v4": (96, 8, 900),
    "standard_nd96amsr_a100_v4": (96, 8, 1900), "standard_nd96isr_h100_v5": (96, 8, 1900),
    "standard_nv6": (6, 1, 56), "standard_nv12": (12, 2, 112), "standard_nv24": (24, 4, 224),
    "standard_nv12s_v3": (12, 1, 112),
}

#: the workspace settings file an administrator maps cluster names and VM sizes in
SETTINGS_FILE = "azureml.json"


class ComputeTargetException(ComputeError):
    """Azure's ``azureml.exceptions.ComputeTargetException``: a compute target could not be found,
    created or used."""


class ComputeTargetNotFound(ComputeTargetException, NotFoundError):
    """``ComputeTarget(workspace=ws, name=name)`` for a name the workspace does not have (both a
    ComputeTargetException, as Azure's notebooks catch, and torchyard's NotFoundError)."""


def gpu_count(vm_size: str) -> int | None:
    """GPUs per node of an Azure VM size: from :data:`VM_SIZES`; for an unknown size None when its
    family (N*) has GPUs, 0 otherwise."""
    key = vm_size.strip().lower()
    if key in VM_SIZES:
        return VM_SIZES[key][1]
    return None if re.match(r"^(standard_)?n[cdv]", key) else 0


def local_gpus() -> int:
    return len(node_gpus(os.environ))


def _path(workspace: Any) -> str:
    if getattr(workspace, "is_remote", False):
        raise NotSupportedError("workspace", "Azure-style compute targets are created on a local workspace; on a "
                                             "team server attach targets with `torchyard compute add` on the server")
    return workspace if isinstance(workspace, str) else str(workspace.path)


def workspace_settings(workspace: Any) -> dict[str, Any]:
    """``<workspace>/azureml.json``: the Azure identity (name, subscription, resource group,
    location) and ``compute_map``; {} when absent."""
    try:
        with open(os.path.join(_path(workspace), SETTINGS_FILE)) as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ComputeTargetException(f"{SETTINGS_FILE} in the workspace is unreadable: {err}") from None


# ---- provisioning and attach configurations --------------------------------------------------------------


@dataclass
class ScaleSettings:
    minimum_node_count: int = 0
    maximum_node_count: int = 1
    idle_seconds_before_scaledown: int | None = None


@dataclass
class AmlComputeProvisioningConfiguration:
    """What ``AmlCompute.provisioning_configuration(...)`` returns."""

    vm_size: str = ""
    vm_priority: str = "dedicated"
    min_nodes: int = 0
    max_nodes: int | None = None
    idle_seconds_before_scaledown: int | None = None
    tags: dict[str, str] | None = None
    description: str | None = None
    location: str | None = None

    def validate_configuration(self) -> None:
        if not isinstance(self.vm_size, str):
            raise SpecError("vm_size", f"must be a VM size such as 'Standard_NC6', got {self.vm_size!r}")
        if self.vm_priority.lower() not in ("dedicated", "lowpriority"):
            raise SpecError("vm_priority", f"must be 'dedicated' or 'lowpriority', got {self.vm_priority!r}")
        for name in ("min_nodes", "max_nodes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise SpecError(name, f"must be a whole number of at least 0, got {value!r}")
        if self.max_nodes is not None and self.max_nodes < max(1, self.min_nodes):
            raise SpecError("max_nodes", f"must be at least 1 and at least min_nodes={self.min_nodes}, got {self.max_nodes}")


@dataclass
class RemoteComputeAttachConfiguration:
    address: str | None = None
    ssh_port: int = 22
    username: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_CLOUD_ONLY = {  # provisioning_configuration's parameters with no meaning here, and their defaults
    "admin_username": None, "admin_user_password": None, "admin_user_ssh_key": None,
    "vnet_resourcegroup_name": None, "vnet_name": None, "subnet_name": None,
    "remote_login_port_public_access": "NotSpecified", "identity_type": None, "identity_id": None,
    "enable_node_public_ip": True,
}


# ---- the targets -------------------------------------------------------------------------------------


class AmlComputeStatus:
    """What ``get_status()`` returns (``.serialize()`` gives Azure's JSON shape)."""

    def __init__(self, target: ComputeTarget) -> None:
        record = target._record
        info = record.get("azureml", {})
        self.provisioning_state = "Succeeded"
        self.allocation_state = "Steady"
        self.current_node_count = 0
        self.target_node_count = 0
        self.node_state_counts = {"idleNodeCount": 0, "runningNodeCount": 0, "preparingNodeCount": 0,
                                  "unusableNodeCount": 0, "leavingNodeCount": 0, "preemptedNodeCount": 0}
        self.vm_size = info.get("vm_size")
        self.vm_priority = info.get("vm_priority")
        self.scale_settings = target.scale_settings
        self.creation_time = record.get("attached")
        self.errors = None
        self.warnings = list(info.get("warnings", []))

    def serialize(self) -> dict[str, Any]:
        """The target as a JSON-able dict (its torchyard kind and settings included)."""
        return {
            "currentNodeCount": self.current_node_count, "targetNodeCount": self.target_node_count,
            "nodeStateCounts": dict(self.node_state_counts), "allocationState": self.allocation_state,
            "allocationStateTransitionTime": None, "errors": self.errors, "creationTime": self.creation_time,
            "modifiedTime": self.creation_time, "provisioningState": self.provisioning_state,
            "provisioningStateTransitionTime": None,
            "scaleSettings": asdict(self.scale_settings) if self.scale_settings else None,
            "vmPriority": self.vm_priority, "vmSize": self.vm_size, "warnings": self.warnings,
        }

    def __repr__(self) -> str:
        return f"AmlComputeStatus({self.serialize()!r})"


class ComputeTarget:
    """Azure's ``ComputeTarget``: ``ComputeTarget(workspace=ws, name=name)`` looks a target up
    (ComputeTargetException if there is none); ``ComputeTarget.create(ws, name, config)``,
    ``ComputeTarget.attach(ws, name, config)``, ``ComputeTarget.list(ws)``. An instance has ``name``,
    ``type``, ``provisioning_state``, ``get_status()``, ``wait_for_completion()``, ``delete()``,
    ``detach()`` and ``target`` (the torchyard compute target it runs on). Anywhere a job takes a
    ``compute_target``, an instance or its name may be given."""

    _azure_type = ""
    name: str
    workspace: Any
    _record: dict[str, Any]

    def __new__(cls, workspace: Any = None, name: str | None = None) -> Any:
        if workspace is None or name is None:
            raise SpecError("name", f"{cls.__name__}(workspace=ws, name=NAME) looks a target up; "
                                    f"create one with ComputeTarget.create(ws, name, config)")
        record = _lookup(workspace, name)
        klass = _class_of(record)
        if cls is not ComputeTarget and not issubclass(klass, cls):
            raise ComputeTargetException(f"compute target {name!r} is a {_type_of(record)} target, not {cls.__name__}")
        return _facade(klass, workspace, name, record)

    def __init__(self, workspace: Any = None, name: str | None = None) -> None:
        pass  # everything was done in __new__

    # ---- class methods ----

    @staticmethod
    def create(workspace: Any, name: str, provisioning_configuration: Any) -> ComputeTarget:
        """Create (record) the target ``name`` from a provisioning configuration."""
        if isinstance(provisioning_configuration, AmlComputeProvisioningConfiguration):
            return _create_aml(workspace, name, provisioning_configuration)
        raise ComputeTargetException(
            f"cannot create a compute target from {type(provisioning_configuration).__name__}: torchyard creates "
            "AmlCompute clusters (AmlCompute.provisioning_configuration(...)); attach Ray, Slurm or Kubernetes "
            "clusters with ComputeTarget.attach(ws, name, RayCompute(...))")

    @staticmethod
    def attach(workspace: Any, name: str, attach_configuration: Any) -> ComputeTarget:
        """Attach an existing cluster under ``name``: a torchyard target (``RayCompute(...)``,
        ``SlurmCompute(...)``, ``KubernetesCompute(...)``). SSH-attached VMs
        (``RemoteCompute.attach_configuration``) are refused, saying what to use instead."""
        if isinstance(attach_configuration, RemoteComputeAttachConfiguration):
            raise NotSupportedError(
                "attach_configuration", "RemoteCompute (a VM reached over SSH) is not a torchyard target: attach "
                "the machine as a Ray cluster (RayCompute(address=...)), a Slurm cluster (SlurmCompute(...)) or "
                "Kubernetes (KubernetesCompute(...)), or submit to compute_target='local' on it")
        if not isinstance(attach_configuration, TargetBase):
            raise SpecError("attach_configuration", "expected RayCompute(...), SlurmCompute(...) or KubernetesCompute(...), "
                                                    f"got {type(attach_configuration).__name__}")
        TargetBase.attach(_path(workspace), name, attach_configuration)
        return ComputeTarget(workspace, name)

    @staticmethod
    def list(workspace: Any) -> builtins.list[ComputeTarget]:
        """Every target of the workspace (``local`` first)."""
        return [ComputeTarget(workspace, n) for n in [*BUILTIN_TARGETS, *ComputeRegistry(_path(workspace)).names()]]

    # ---- the instance ----

    @property
    def type(self) -> str:
        """Azure's kind of target: ``AmlCompute``, ``Local``, ``Ray``, ``Slurm`` or ``Kubernetes``."""
        return _type_of(self._record)

    @property
    def provisioning_state(self) -> str:
        """Always ``Succeeded``: a target exists as soon as it is recorded."""
        return "Succeeded"

    @property
    def provisioning_errors(self) -> None:
        """Always None (creating a target cannot half-fail here)."""
        return None

    @property
    def location(self) -> str | None:
        """The ``location`` given at creation, else ``local``."""
        loc: str | None = self._record.get("azureml", {}).get("location")
        return loc or "local"

    @property
    def tags(self) -> dict[str, str]:
        """The tags given at creation."""
        return dict(self._record.get("azureml", {}).get("tags") or {})

    @property
    def description(self) -> str | None:
        """The description given at creation."""
        desc: str | None = self._record.get("azureml", {}).get("description")
        return desc

    @property
    def scale_settings(self) -> ScaleSettings | None:
        """None for targets that are not AmlCompute clusters."""
        return None

    @property
    def target(self) -> TargetBase:
        """The torchyard compute target this name runs on."""
        if self.name in BUILTIN_TARGETS:
            return target_class("local")(self.name)
        return ComputeRegistry(_path(self.workspace)).get(self.name)

    @property
    def status(self) -> AmlComputeStatus:
        """The same as :meth:`get_status`."""
        return self.get_status()

    def get_status(self) -> AmlComputeStatus:
        """The target's status (``.serialize()``: Azure's JSON shape; ``warnings`` from its creation)."""
        return AmlComputeStatus(self)

    def refresh_state(self) -> None:
        """Read the target's record again."""
        if self.name not in BUILTIN_TARGETS:
            self._record = _lookup(self.workspace, self.name)

    def wait_for_completion(self, show_output: bool = False, min_node_count: int | None = None,
                            timeout_in_minutes: int = 20, is_delete_operation: bool = False) -> None:
        """Creation is immediate here; with ``show_output`` prints the state Azure prints."""
        if show_output:
            for warning in self._record.get("azureml", {}).get("warnings", []):
                print(f"Warning: {warning}")
            print("Succeeded")
            print(f"{self.type} wait for completion finished\n")
            if min_node_count:
                print("Minimum number of nodes requested have been provisioned")
            sys.stdout.flush()

    def delete(self) -> None:
        """Remove the target from the workspace (runs already recorded keep their records)."""
        if self.name in BUILTIN_TARGETS:
            raise ComputeTargetException(f"{self.name!r} is built in and cannot be deleted")
        ComputeRegistry(_path(self.workspace)).remove(self.name)

    def detach(self) -> None:
        """The same as :meth:`delete`."""
        self.delete()

    def serialize(self) -> dict[str, Any]:
        """The target as a JSON-able dict (its torchyard kind and settings included)."""
        return {"name": self.name, "type": self.type, "location": self.location, "tags": self.tags,
                "provisioningState": self.provisioning_state, "kind": self._record.get("kind"),
                "config": dict(self._record.get("config") or {}),
                "properties": dict(self._record.get("azureml") or {})}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workspace={getattr(self.workspace, 'path', self.workspace)!r}, name={self.name!r}, type={self.type!r})"


class AmlCompute(ComputeTarget):
    """Azure's managed cluster, recorded as a named target (local compute unless the workspace maps
    it; see the module docstring)."""

    _azure_type = "AmlCompute"

    @staticmethod
    def provisioning_configuration(
        vm_size: str = "", vm_priority: str = "dedicated", min_nodes: int = 0, max_nodes: int | None = None,
        idle_seconds_before_scaledown: int | None = None, admin_username: str | None = None,
        admin_user_password: str | None = None, admin_user_ssh_key: str | None = None,
        vnet_resourcegroup_name: str | None = None, vnet_name: str | None = None, subnet_name: str | None = None,
        tags: dict[str, str] | None = None, description: str | None = None,
        remote_login_port_public_access: str = "NotSpecified", identity_type: str | None = None,
        identity_id: Any = None, location: str | None = None, enable_node_public_ip: bool = True,
    ) -> AmlComputeProvisioningConfiguration:
        """A cluster's configuration: ``vm_size`` (its GPU count is checked at create), ``vm_priority``, ``min_nodes``, ``max_nodes``, ``idle_seconds_before_scaledown``, ``tags``, ``description``, ``location``; network, admin and identity settings are refused."""
        given = dict(admin_username=admin_username, admin_user_password=admin_user_password,
                     admin_user_ssh_key=admin_user_ssh_key, vnet_resourcegroup_name=vnet_resourcegroup_name,
                     vnet_name=vnet_name, subnet_name=subnet_name,
                     remote_login_port_public_access=remote_login_port_public_access,
                     identity_type=identity_type, identity_id=identity_id, enable_node_public_ip=enable_node_public_ip)
        for name, default in _CLOUD_ONLY.items():
            if given[name] != default:
                raise NotSupportedError(name, "has no meaning for a self-hosted cluster (nodes are this machine "
                                              "or an attached cluster's, with their own network and accounts); leave it out")
        config = AmlComputeProvisioningConfiguration(
            vm_size=vm_size, vm_priority=vm_priority, min_nodes=min_nodes, max_nodes=max_nodes,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown, tags=tags, description=description,
            location=location)
        config.validate_configuration()
        return config

    @staticmethod
    def supported_vmsizes(workspace: Any, location: str | None = None) -> builtins.list[dict[str, Any]]:
        """The VM sizes torchyard knows the GPU count of (:data:`VM_SIZES`)."""
        return [{"name": _display(k), "vCPUs": c, "gpus": g, "memoryGB": m} for k, (c, g, m) in sorted(VM_SIZES.items())]

    @property
    def vm_size(self) -> str | None:
        """The VM size the cluster was created with."""
        size: str | None = self._record.get("azureml", {}).get("vm_size")
        return size

    @property
    def vm_priority(self) -> str | None:
        """``dedicated`` or ``lowpriority`` (recorded; changes nothing here)."""
        prio: str | None = self._record.get("azureml", {}).get("vm_priority")
        return prio

    @property
    def scale_settings(self) -> ScaleSettings:
        """``minimum_node_count``, ``maximum_node_count``, ``idle_seconds_before_scaledown``."""
        info = self._record.get("azureml", {})
        return ScaleSettings(info.get("min_nodes", 0), info.get("max_nodes") or 1,
                             info.get("idle_seconds_before_scaledown"))

    def update(self, min_nodes: int | None = None, max_nodes: int | None = None,
               idle_seconds_before_scaledown: int | None = None) -> None:
        """Change the recorded node counts or idle time."""
        info = dict(self._record.get("azureml", {}))
        for key, value in (("min_nodes", min_nodes), ("max_nodes", max_nodes),
                           ("idle_seconds_before_scaledown", idle_seconds_before_scaledown)):
            if value is not None:
                info[key] = value
        AmlComputeProvisioningConfiguration(vm_size=info.get("vm_size", ""), min_nodes=info.get("min_nodes", 0),
                                            max_nodes=info.get("max_nodes")).validate_configuration()
        self._record = {**self._record, "azureml": info}
        attached_records(_path(self.workspace)).put(self.name, self._record)


class RemoteCompute(ComputeTarget):
    """Azure's SSH-attached VM: ``attach_configuration`` is accepted so the error comes from
    ``ComputeTarget.attach``, which refuses it, saying what to attach instead."""

    _azure_type = "VirtualMachine"

    @staticmethod
    def attach_configuration(resource_id: str | None = None, ssh_port: int = 22, username: str = "",
                             password: str = "", private_key_file: str = "", private_key_passphrase: str = "",
                             address: str | None = None, **kwargs: Any) -> RemoteComputeAttachConfiguration:
        return RemoteComputeAttachConfiguration(address=address, ssh_port=ssh_port, username=username, extra=kwargs)


class ComputeTargets(ComputeRegistry):
    """``ws.compute_targets``: the workspace's registry (``attach``, ``get``, ``names``, ``list``,
    ``record``, ``remove``), which is also Azure's dict of name to :class:`ComputeTarget` for the
    attached and created targets (``name in``, ``[name]``, ``keys()``, ``items()``, ``values()``,
    iteration). As in Azure, the built-in ``local`` is not in it."""

    def __init__(self, workspace: Any) -> None:
        super().__init__(_path(workspace))
        self.workspace = workspace

    def __getitem__(self, name: str) -> ComputeTarget:
        if not isinstance(name, str) or name not in self:
            raise KeyError(name)
        return ComputeTarget(self.workspace, name)

    def keys(self) -> builtins.list[str]:
        """The attached and created targets' names."""
        return self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def values(self) -> builtins.list[ComputeTarget]:
        """The targets, as Azure's ComputeTarget objects."""
        return [self[n] for n in self.keys()]

    def items(self) -> builtins.list[tuple[str, ComputeTarget]]:
        """(name, target) pairs."""
        return [(n, self[n]) for n in self.keys()]


# ---- internals ---------------------------------------------------------------------------------------


def _display(key: str) -> str:
    """``standard_nc4as_t4_v3`` → ``Standard_NC4as_T4_v3`` (Azure's spelling)."""
    first, *rest = key.removeprefix("standard_").split("_")
    head = re.sub(r"^([a-z]+)(\d+)", lambda m: m[1].upper() + m[2], first)
    return "_".join(["Standard", head, *(p if re.fullmatch(r"v\d+", p) else p.upper() for p in rest)])


def _lookup(workspace: Any, name: str) -> dict[str, Any]:
    if name in BUILTIN_TARGETS:
        return {"name": name, "kind": "local", "config": {}}
    registry = ComputeRegistry(_path(workspace))
    if not isinstance(name, str) or name not in registry:
        known = ", ".join([*BUILTIN_TARGETS, *registry.names()])
        raise ComputeTargetNotFound(f"ComputeTargetNotFound: compute target {name!r} not found in this workspace "
                                    f"(known: {known})")
    return registry.record(name)


def _type_of(record: dict[str, Any]) -> str:
    if record.get("azureml", {}).get("type"):
        return str(record["azureml"]["type"])
    return {"local": "Local", "ray": "Ray", "slurm": "Slurm", "kubernetes": "Kubernetes"}.get(
        str(record.get("kind")), str(record.get("kind")))


def _class_of(record: dict[str, Any]) -> type[ComputeTarget]:
    return AmlCompute if record.get("azureml", {}).get("type") == "AmlCompute" else ComputeTarget


def _facade(klass: type[ComputeTarget], workspace: Any, name: str, record: dict[str, Any]) -> ComputeTarget:
    obj: ComputeTarget = object.__new__(klass)
    obj.workspace = workspace
    obj.name = name
    obj._record = record
    return obj


def _create_aml(workspace: Any, name: str, config: AmlComputeProvisioningConfiguration) -> ComputeTarget:
    path = _path(workspace)
    config.validate_configuration()
    records = attached_records(path)
    records.check_name(name)
    if name in BUILTIN_TARGETS:
        raise ComputeTargetException(f"{name!r} is built in; create the cluster under another name")
    mapping = workspace_settings(workspace).get("compute_map") or {}
    mapped = mapping.get(name) or next((v for k, v in mapping.items() if k.lower() == config.vm_size.lower()), None)
    registry = ComputeRegistry(path)
    if mapped:
        try:
            base = registry.record(str(mapped))
        except NotFoundError:
            raise ComputeTargetException(f"{SETTINGS_FILE} maps {name!r} to {mapped!r}, which is not attached to "
                                         "this workspace") from None
        kind, target_config = str(base["kind"]), dict(base.get("config") or {})
    else:
        kind, target_config = "local", {}
    gpus = gpu_count(config.vm_size) if config.vm_size else 0
    warnings: builtins.list[str] = []
    if gpus != 0:
        if kind == "local":
            have = local_gpus()
            if gpus is None or have < gpus:
                wanted = "GPUs" if gpus is None else f"{gpus} GPU{'s' if gpus != 1 else ''}"
                warnings.append(f"vm_size {config.vm_size} has {wanted} per node and this machine has {have}: jobs "
                                "with use_gpu=True on this cluster run on the CPU (the run's log says so)")
        else:
            from torchyard.compute.base import Feature  # noqa: PLC0415

            if Feature.GPU not in target_class(kind).features:
                raise NotSupportedError("vm_size", f"{config.vm_size} has GPUs, but {name!r} maps to {mapped!r}, a "
                                                   f"{kind} target whose nodes have none")
    info = {"type": "AmlCompute", "vm_size": config.vm_size, "vm_priority": config.vm_priority,
            "min_nodes": config.min_nodes, "max_nodes": config.max_nodes,
            "idle_seconds_before_scaledown": config.idle_seconds_before_scaledown, "tags": config.tags or {},
            "description": config.description, "location": config.location, "gpus_per_node": gpus,
            "mapped_to": mapped, "warnings": warnings}
    if name in registry:
        existing = registry.record(name)
        same = {k: v for k, v in existing.get("azureml", {}).items() if k != "warnings"} == \
            {k: v for k, v in info.items() if k != "warnings"}
        if same:
            return ComputeTarget(workspace, name)
        raise ComputeTargetException(f"compute target {name!r} already exists with other settings; use "
                                     f"ComputeTarget(workspace=ws, name={name!r}) or delete it first")
    record = {"name": name, "kind": kind, "config": target_config, "attached": time.time(), "azureml": info}
    records.put(name, record)
    return _facade(AmlCompute, workspace, name, record)
