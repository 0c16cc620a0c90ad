"""The one submit path: the SDK, the CLI (with or without the agent), a sweep's trials and
``--dry-run`` all go through here.

``check_job`` validates a JobSpec against the workspace and its target; ``record_run`` snapshots and
records it (NotStarted → Queued, nothing started); ``submit_run`` records it and starts its
supervisor. ``plan`` is the pure half: what each node would run, built by the same functions the
supervisor uses (``rank_argv``, the target's ``prepare``), which is what ``--dry-run`` prints.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from torchyard.errors import NotSupportedError, SpecError
from torchyard.launch.plan import BIN, PYTHON
from torchyard.paths import RunPaths
from torchyard.status import RunStatus

if TYPE_CHECKING:
    from torchyard.compute.base import ComputeTarget, LaunchPlan
    from torchyard.spec.job import JobSpec
    from torchyard.sweeps.config import HyperDriveConfig
    from torchyard.workspace.workspace import WorkspaceFolder

_PLACEHOLDER = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def new_run_id(experiment: str) -> str:
    return f"{experiment}_{int(time.time())}_{secrets.token_hex(4)}"


def str_dict(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(field, f"must be a dict of strings, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def registered_environment(ws: WorkspaceFolder, spec: JobSpec) -> JobSpec:
    """``spec`` with a registered environment (by name and version) filled in."""
    env = spec.environment
    if not env.name or not env.is_default or env.user_managed or env.name == "default" and env.version is None:
        return spec
    if env.version is None and env.name not in ws.environments:
        return spec  # a name alone is only a label
    found = ws.environments.get(env.name, env.version)
    return msgspec.structs.replace(spec, environment=msgspec.convert(found.to_spec_dict(), type(env)))


def check_job(ws: WorkspaceFolder, spec: JobSpec) -> tuple[JobSpec, ComputeTarget]:
    """The spec as it will run (registered environment filled in) and its target, checked: an
    unknown target (attached ones included), a feature the target lacks, an environment this
    machine cannot build, a data reference without a datastore. Raises SpecError naming the field."""
    from torchyard.compute.registry import get_target  # noqa: PLC0415 - targets load lazily
    from torchyard.environments import check_supported  # noqa: PLC0415

    spec = registered_environment(ws, spec)
    target = get_target(spec.compute_target, ws.path)
    target.check(spec)
    _check_cluster_size(ws, spec)
    check_supported(spec.environment)
    shared = target.shared_paths(ws.path)
    for kind, entries in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        for name, ref in entries.items():
            if not isinstance(ref, dict) or not (ref.get("datastore") or ref.get("url")):
                raise NotSupportedError(f"{kind}.{name}", "needs a datastore path or a URL")
            if shared is not None:
                _check_reachable(ws, f"{kind}.{name}", ref, target, shared)
    return spec, target


def _check_cluster_size(ws: WorkspaceFolder, spec: JobSpec) -> None:
    """A job on an AmlCompute cluster (``azure.compute``) asks for at most its ``max_nodes`` nodes:
    Azure would leave it waiting for nodes the cluster can never have; here it is refused at once."""
    from torchyard.compute.registry import ComputeRegistry  # noqa: PLC0415

    registry = ComputeRegistry(ws.path)
    name = spec.compute_target
    if name not in registry:
        return
    max_nodes = (registry.record(name).get("azureml") or {}).get("max_nodes")
    nodes = spec.distribution.node_count
    if isinstance(max_nodes, int) and nodes > max_nodes:
        raise SpecError("node_count", f"compute target {name!r} is an AmlCompute cluster of at most {max_nodes} "
                                      f"node{'s' if max_nodes != 1 else ''} (max_nodes) and the job asks for {nodes}: "
                                      f"ask for at most {max_nodes}, or raise it with ComputeTarget(workspace=ws, "
                                      f"name={name!r}).update(max_nodes={nodes})")


def _check_reachable(ws: WorkspaceFolder, field: str, ref: dict[str, Any], target: ComputeTarget,
                     shared: tuple[str, ...]) -> None:
    """A local datastore's folder must be on the target's shared filesystem: the nodes read (or, for
    an output, write) it at the same path. Object stores and fsspec URLs are fetched by the nodes."""
    from torchyard.data.datastore import datastore_of  # noqa: PLC0415
    from torchyard.errors import DataError  # noqa: PLC0415

    try:
        store = datastore_of(ws.path, {k: v for k, v in ref.items() if k not in ("type", "description")})
    except DataError as err:
        raise SpecError(field, str(err)) from None
    if store.kind != "local":
        return
    folder = os.path.realpath(store.url)
    if any(folder == os.path.realpath(p) or folder.startswith(os.path.realpath(p).rstrip("/") + "/") for p in shared):
        return
    where = f"it shares only {', '.join(shared)}" if shared else "it declares no shared filesystem"
    raise SpecError(field, f"{store.describe()} is a folder on this machine that the nodes of compute target "
                           f"{target.name!r} ({target.kind}) do not see ({where}); put the data under a shared "
                           "folder (the target's shared_dir / shared_dirs) or in an S3 or fsspec datastore")


def _snapshot(ws: WorkspaceFolder, source: str, workdir: str, progress: Any = None) -> dict[str, str]:
    """Store ``source`` content-addressed and materialize it as the run's folder; the run properties
    that record it (snapshot id, and git commit/dirty/branch if any)."""
    from torchyard.workspace.snapshots import git_info  # noqa: PLC0415

    max_bytes, max_files = ws.snapshot_limits()
    store = ws.snapshots
    snap = store.take(source, max_bytes=max_bytes, max_files=max_files, progress=progress)
    os.makedirs(workdir, exist_ok=True)
    store.materialize(snap.manifest_id, workdir)
    return {"torchyard.snapshot": snap.manifest_id, "torchyard.source_directory": source, **git_info(source)}


def _dataset_lineage(ws: WorkspaceFolder, spec: JobSpec) -> dict[str, str]:
    """``torchyard.dataset.<input>`` = ``name:version`` for each input that is a registered dataset
    version's files (torchyard.data.datasets): what the run read, for the dataset's lineage."""
    from torchyard.data.datasets import LINEAGE_PREFIX, DatasetRegistry  # noqa: PLC0415

    registry = DatasetRegistry(ws.path)
    out: dict[str, str] = {}
    for name, ref in (spec.inputs or {}).items():
        url = ref.get("url") if isinstance(ref, dict) else None
        found = registry.version_of_path(url) if isinstance(url, str) and os.path.isabs(url) else None
        if found is not None:
            out[f"{LINEAGE_PREFIX}{name}"] = f"{found[0]}:{found[1]}"
    return out


def record_run(
    ws: WorkspaceFolder,
    experiment: str,
    spec: JobSpec,
    *,
    tags: dict[str, str] | None = None,
    parent_id: str | None = None,
    run_id: str | None = None,
    created_by: str | None = None,
    progress: Any = None,
) -> str:
    """Validate, snapshot and record a run (NotStarted → Queued); starts nothing. ``run_id``: an
    explicit id (a sweep's children are ``<parent>_<i>``); by default a fresh one. ``created_by``:
    the team server's user who submitted it (recorded with the run, before its supervisor starts).
    ``progress``: told of a large snapshot's files (``SnapshotStore.take``)."""
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    check_name(experiment)
    tags = str_dict(tags, "tags")
    spec, _target = check_job(ws, spec)
    if run_id is None:
        run_id = new_run_id(experiment)
    else:
        check_name(run_id, "run_id")
    workdir = ws.run_dir(run_id)
    properties = {**_snapshot(ws, spec.source_directory, workdir, progress), **_dataset_lineage(ws, spec)}
    paths = RunPaths(workdir)
    os.makedirs(paths.journal, exist_ok=True)
    info = {
        "run_id": run_id,
        "experiment": experiment,
        "workspace": ws.path,
        "db_url": ws.db_url,
        "python": sys.executable,
        "spec": spec.to_dict(),
        "created_by": created_by,  # local compute's fair share (compute/local.py) reads it here
    }
    with open(paths.run_info, "w") as fh:
        json.dump(info, fh)
    ws.store.create_run(
        run_id=run_id,
        experiment=experiment,
        spec_json=spec.to_json().decode(),
        compute_target=spec.compute_target,
        run_dir=workdir,
        tags=tags,
        display_name=spec.display_name,
        parent_id=parent_id,
        properties=properties,
        queued=True,
        kind="trial" if parent_id else "run",
        created_by=created_by,
    )
    return run_id


def spawn_supervisor(workdir: str) -> int:
    """Start the supervisor of the run in ``workdir``, detached (it outlives the submitter). Its pid."""
    from torchyard.runtime.spawn import spawn_detached  # noqa: PLC0415

    return spawn_detached("torchyard.runtime.supervisor", workdir, RunPaths(workdir).supervisor_log,
                          what="the run supervisor")


def submit_run(
    ws: WorkspaceFolder,
    experiment: str,
    spec: JobSpec,
    *,
    tags: dict[str, str] | None = None,
    parent_id: str | None = None,
    run_id: str | None = None,
    created_by: str | None = None,
) -> str:
    """Validate, snapshot, record the run (NotStarted → Queued) and start its supervisor."""
    run_id = record_run(ws, experiment, spec, tags=tags, parent_id=parent_id, run_id=run_id, created_by=created_by)
    ws.store.set_supervisor(run_id, spawn_supervisor(ws.run_dir(run_id)))
    return run_id


def start_sweep(ws: WorkspaceFolder, experiment: str, config: HyperDriveConfig,
                tags: dict[str, str] | None = None, created_by: str | None = None) -> str:
    """Record a sweep's parent run (Queued) and start its controller; returns the parent's id.

    Its trials are checked exactly as a run would be (attached targets included), before anything
    is recorded. ``created_by``: the team server's user (its trials take it from the parent)."""
    from torchyard.runtime.sweep_process import spawn_controller  # noqa: PLC0415
    from torchyard.workspace.workspace import check_name  # noqa: PLC0415

    check_name(experiment)
    tags = str_dict(tags, "tags")
    spec, _target = check_job(ws, config.trial_spec)
    sampling = config.hyperparameter_sampling
    seed = sampling.seed if sampling.seed is not None else secrets.randbits(31)
    run_id = new_run_id(experiment)
    run_dir = ws.run_dir(run_id)
    paths = RunPaths(run_dir)
    os.makedirs(paths.internal, exist_ok=True)
    os.makedirs(paths.logs, exist_ok=True)
    with open(paths.controller_info, "w") as fh:
        json.dump({"run_id": run_id, "workspace": ws.path, "db_url": ws.db_url, "python": sys.executable}, fh)
    properties = {
        "torchyard.sweep": "hyperdrive",
        "primary_metric_config": json.dumps({"name": config.primary_metric_name, "goal": config.primary_metric_goal.value}),
        "sampling": sampling.name,
        "seed": str(seed),
        "policy": config.policy.name,
        "max_total_runs": str(config.max_total_runs),
        "max_concurrent_runs": str(config.max_concurrent_runs),
    }
    store = ws.store
    store.create_run(
        run_id=run_id,
        experiment=experiment,
        spec_json=json.dumps(config.to_dict(seed)),
        compute_target=spec.compute_target,
        run_dir=run_dir,
        tags={**config.tags, **tags},
        display_name=spec.display_name,
        properties=properties,
        kind="sweep",
        created_by=created_by,
    )
    store.set_status(run_id, RunStatus.QUEUED)
    store.set_supervisor(run_id, spawn_controller(run_dir))
    return run_id


# ---- what a node runs -------------------------------------------------------------------------------


def fill_placeholders(text: str, paths: dict[tuple[str, str], str]) -> str:
    """Replace ``${{inputs.NAME}}`` / ``${{outputs.NAME}}`` with the local paths."""
    if "${{" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: paths.get((m.group(1), m.group(2)), m.group(0)), text)


def data_env(paths: dict[tuple[str, str], str]) -> dict[str, str]:
    """Each input's path as TORCHYARD_INPUT_<NAME> (and Azure's AZUREML_DATAREFERENCE_<name>); each
    named output's folder as TORCHYARD_OUTPUT_<NAME>."""
    env = {}
    for (kind, name), path in paths.items():
        if kind == "inputs":
            env[f"TORCHYARD_INPUT_{name.upper()}"] = path
            env[f"AZUREML_DATAREFERENCE_{name}"] = path
        else:
            env[f"TORCHYARD_OUTPUT_{name.upper()}"] = path
    return env


def rank_argv(spec: JobSpec, python: str, paths: dict[tuple[str, str], str]) -> list[str]:
    """The command every rank runs: the entry script under the run's interpreter, or the command
    under a shell with that interpreter first on PATH; data placeholders filled in."""
    if spec.entry_script:
        return [python, spec.entry_script, *(fill_placeholders(a, paths) for a in spec.arguments)]
    folder = BIN if python == PYTHON else os.path.dirname(python)
    return ["/bin/sh", "-c", f'PATH="{folder}:$PATH"; {fill_placeholders(spec.command or "", paths)}']


def node_placeholders(spec: JobSpec) -> dict[tuple[str, str], str]:
    """Data paths the node bootstrap fills in, for targets that place data on the nodes."""
    paths = {("inputs", name): f"${{{{inputs.{name}}}}}" for name in spec.inputs}
    paths.update({("outputs", name): f"${{{{outputs.{name}}}}}" for name in spec.outputs})
    return paths


def bootstrap_request(ws: WorkspaceFolder, spec: JobSpec, target: ComputeTarget, *, sign: bool = True) -> dict[str, Any]:
    """What the node bootstrap places on each node: the environment (None: the node's own
    interpreter), each input with its datastore's settings (never credentials), the named outputs.
    An input on a ``credentials="presigned"`` datastore carries its objects' presigned URLs, signed
    here with this process's credentials (``sign=False``, for the dry run: a placeholder)."""
    from torchyard.data.datastore import CREDENTIAL_VARS, datastore_of  # noqa: PLC0415
    from torchyard.environments import env_dict  # noqa: PLC0415
    from torchyard.errors import DataError  # noqa: PLC0415

    env = spec.environment
    inputs: dict[str, Any] = {}
    forward = False
    for kind, entries in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        for name, ref in entries.items():
            clean = {k: v for k, v in ref.items() if k not in ("type", "description")}
            try:
                store = datastore_of(ws.path, clean)
            except DataError as err:
                raise SpecError(f"{kind}.{name}", str(err)) from None
            forward = forward or store.credentials == "forward"
            if kind == "inputs":
                inputs[name] = {"ref": clean, "datastore": store.to_dict()}
                if store.credentials == "presigned":
                    inputs[name]["presigned"] = _presigned(store, clean, f"{kind}.{name}") if sign \
                        else "<signed when the run starts>"
    return {
        "environment": None if env.is_default or env.user_managed else env_dict(env),
        "inputs": inputs,
        "outputs": list(spec.outputs),
        "cache_root": target.node_cache(),
        # names only: the values stay in the supervisor's memory and reach the nodes' processes
        # through the target (never a plan, request or log file)
        "forward_env": sorted(v for v in CREDENTIAL_VARS if v in os.environ) if forward else [],
    }


def _presigned(store: Any, ref: dict[str, Any], field: str) -> dict[str, Any]:
    from torchyard.data.transfer import presign_input  # noqa: PLC0415
    from torchyard.errors import DataError  # noqa: PLC0415

    try:
        return presign_input(store, ref)
    except DataError as err:
        raise SpecError(field, f"could not sign its URLs: {err}") from None


def with_data(spec: JobSpec, paths: dict[tuple[str, str], str]) -> JobSpec:
    if not paths:
        return spec
    return msgspec.structs.replace(spec, environment_variables={**spec.environment_variables, **data_env(paths)})


def prepared_job(run_id: str, experiment: str, workspace: str, workdir: str, spec: JobSpec, python: str,
                 paths: dict[tuple[str, str], str], bootstrap: dict[str, Any] | None = None,
                 report_url: str | None = None) -> Any:
    """The PreparedJob a target's ``dryrun`` gets: the same for a real run and a dry run."""
    from torchyard.compute.base import PreparedJob  # noqa: PLC0415

    spec = with_data(spec, paths)
    return PreparedJob(
        bootstrap=bootstrap,
        report_url=report_url,
        run_id=run_id,
        experiment=experiment,
        workspace=workspace,
        workdir=workdir,
        spec=spec,
        rank_argv=rank_argv(spec, python, paths),
        launcher_python=sys.executable,
        rank_python=python,
    )


def _planned_input(ws: WorkspaceFolder, ref: dict[str, Any], dest: str) -> str:
    """Where an input will be for the ranks: a local datastore's folder itself when mounted, else its
    download folder (a single remote file lands inside it, under its own name)."""
    from torchyard.data.datastore import datastore_of  # noqa: PLC0415
    from torchyard.errors import DataError  # noqa: PLC0415

    try:
        store = datastore_of(ws.path, {k: v for k, v in ref.items() if k not in ("type", "description")})
    except DataError:
        return dest
    if store.kind == "local" and ref.get("mode", "mount") == "mount":
        return store.url_of(ref.get("path") or "")
    return dest


@dataclass(frozen=True)
class DryRun:
    """What a submit would do: the compiled job and the target's launch plan (per node)."""

    experiment: str
    spec: JobSpec
    plan: LaunchPlan
    environment: dict[str, Any]

    def describe(self) -> str:
        lines = [f"experiment: {self.experiment}", "job:", json.dumps(self.spec.to_dict(), indent=2)]
        env = self.environment
        if env.get("key"):
            state = "cached" if env["cached"] else "built at Preparing"
            lines.append(f"environment: {env['key']} ({state}): {env['python']}")
        lines.append(self.plan.describe())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "spec": self.spec.to_dict(), "environment": self.environment,
                "plan": self.plan.describe()}


def plan(ws: WorkspaceFolder, experiment: str, spec: JobSpec) -> DryRun:
    """The pure half of a submit: what each node would run, with the run id and folder left as
    ``<run_id>`` and ``<workspace>/runs/<run_id>``. Nothing is recorded, built or started."""
    from torchyard.environments import planned_python  # noqa: PLC0415

    spec, target = check_job(ws, spec)
    workdir = os.path.join("<workspace>", "runs", "<run_id>")
    bootstrap = None
    if target.shares_files(ws.path):
        env = planned_python(ws.path, spec.environment)
        python = env["python"] if env["key"] else sys.executable
        rp = RunPaths(workdir)
        paths: dict[tuple[str, str], str] = {}
        for name, ref in spec.inputs.items():
            paths[("inputs", name)] = _planned_input(ws, ref, rp.input(ref.get("path_on_compute") or name))
        for name in spec.outputs:
            paths[("outputs", name)] = rp.named_output(name)
    else:  # placed by the node bootstrap on every node
        env, python, paths = {"python": PYTHON, "key": None, "cached": False, "placed_on": "nodes"}, PYTHON, \
            node_placeholders(spec)
        bootstrap = bootstrap_request(ws, spec, target, sign=False)
    job = prepared_job("<run_id>", experiment, "<workspace>", workdir, spec, python, paths, bootstrap)
    return DryRun(experiment=experiment, spec=job.spec, plan=target.dryrun(job),
                  environment={**env, "python": python})
