"""YAML job files in the style of Azure ML v2 command jobs.

```yaml
experiment: digits            # or experiment_name
code: ./examples/digits       # relative to this file
command: python train.py --epochs ${{inputs.epochs}}   # or entry_script + args
inputs: {epochs: 5}           # literal inputs are substituted into command/args
environment: {pip_packages: [scikit-learn]}
compute: local
distribution: {type: pytorch, process_count_per_instance: 2}
resources: {instance_count: 1, use_gpu: false}
environment_variables: {OMP_NUM_THREADS: "1"}
limits: {timeout: 600}
tags: {owner: me}
```
"""

from __future__ import annotations

import os
import re
from typing import Any

import msgspec

from torchyard.errors import SpecError
from torchyard.spec.estimators import parse_backend
from torchyard.spec.job import JobSpec, build_job_spec, convert_spec


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class _Distribution(_Strict, frozen=True):
    type: str
    process_count_per_instance: int = 1
    communication_backend: str | None = None
    launcher: str = "torchyard"
    max_restarts: int = 0


class _Resources(_Strict, frozen=True):
    instance_count: int = 1
    use_gpu: bool = False


class _Limits(_Strict, frozen=True):
    timeout: float | None = None
    hang_timeout: float | None = None
    max_queue_seconds: float | None = None


class _Retry(_Strict, frozen=True):
    max: int = 0
    retry_on: list[str] = msgspec.field(default_factory=lambda: ["infrastructure"])
    preempt_grace: float = 60.0


class _Environment(_Strict, frozen=True):
    pip_packages: list[str] = []
    pip: list[str] = []
    conda_packages: list[str] = []
    pip_requirements_file: str | None = None
    conda_dependencies_file: str | None = None
    conda_file: str | None = None
    user_managed: bool = False
    python: str | None = None
    name: str | None = None
    version: str | None = None


class JobFile(_Strict, frozen=True):
    schema: str | None = msgspec.field(default=None, name="$schema")
    type: str = "command"
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    experiment: str | None = None
    experiment_name: str | None = None
    code: str = "."
    command: str | None = None
    entry_script: str | None = None
    args: list[str | int | float | bool] = []
    environment: _Environment | str | None = None
    compute: str = "local"
    distribution: _Distribution | None = None
    resources: _Resources = _Resources()
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    environment_variables: dict[str, str] = {}
    limits: _Limits = _Limits()
    priority: int = 0
    preemptible: bool = False
    retry: _Retry = _Retry()
    tags: dict[str, str] = {}


_INPUT_REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class LoadedJob(msgspec.Struct, frozen=True):
    spec: JobSpec
    experiment: str | None
    tags: dict[str, str]


def read_yaml(path: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; SpecError naming the file (and line) otherwise."""
    import yaml  # noqa: PLC0415 - only the YAML path needs it

    if not os.path.isfile(path):
        raise SpecError("job file", f"{path!r} not found")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError("job file", f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError("job file", f"{path}: expected a mapping of job fields at the top level")
    return data


def compile_command_job(data: dict[str, Any], base: str) -> LoadedJob:
    """A command job's fields (a YAML file's mapping) → its JobSpec; paths relative to ``base``."""
    job: JobFile = convert_spec(data, JobFile)
    return compile_job_file(job, base=base)


def _substitute(text: str, literals: dict[str, Any], field: str) -> str:
    def repl(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "outputs":
            return match.group(0)  # resolved when the run starts
        if name not in literals or literals[name] is None:
            raise SpecError(field, f"refers to inputs.{name}, which is not defined under 'inputs'")
        return str(literals[name])

    return _INPUT_REF.sub(repl, text)


def _data_ref(value: dict[str, Any], base: str, field: str) -> dict[str, Any]:
    """``path: ds:NAME/sub/path | azureml://datastores/NAME/paths/sub | s3://... | ./local``"""
    allowed = {"type", "path", "mode", "path_on_compute", "description"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", f"unknown field {unknown[0]!r}")
    path = value.get("path")
    if not isinstance(path, str) or not path:
        raise SpecError(f"{field}.path", "is required")
    mode = {"ro_mount": "mount", "mount": "mount", "rw_mount": "mount", "download": "download",
            "upload": "upload"}.get(str(value.get("mode", "ro_mount")))
    if mode is None:
        raise SpecError(f"{field}.mode", f"unknown mode {value.get('mode')!r}; use ro_mount or download")
    ref: dict[str, Any] = {"mode": mode, "type": value.get("type", "uri_folder")}
    if value.get("path_on_compute"):
        ref["path_on_compute"] = value["path_on_compute"]
    store_path = None
    if path.startswith("ds:"):
        store_path = path[3:]
    elif path.startswith("azureml://datastores/"):
        store_path = path[len("azureml://datastores/"):].replace("/paths/", "/", 1)
    if store_path is not None:
        name, _, sub = store_path.partition("/")
        if not name:
            raise SpecError(f"{field}.path", f"{path!r} names no datastore; write ds:NAME/path")
        ref.update(datastore=name, path=sub)
    elif "://" in path:
        ref["url"] = path
    else:
        ref["url"] = os.path.abspath(os.path.join(base, os.path.expanduser(path)))
    return ref


def compile_job_file(job: JobFile, base: str) -> LoadedJob:
    if job.type != "command":
        raise SpecError("type", f"unsupported job type {job.type!r}; use 'command' or 'sweep'")
    literals: dict[str, Any] = {}
    data_inputs: dict[str, Any] = {}
    for name, value in job.inputs.items():
        if isinstance(value, str | int | float | bool):
            literals[name] = value
        elif isinstance(value, dict) and "value" in value and len(value) <= 2:
            literals[name] = value["value"]
        elif isinstance(value, dict) and value.get("type") in ("uri_folder", "uri_file"):
            data_inputs[name] = _data_ref(value, base, f"inputs.{name}")
            literals[name] = "${{inputs." + name + "}}"
        else:
            raise SpecError(f"inputs.{name}", "expected a literal, {type: number|string|..., value: ...}, or "
                                              "{type: uri_folder|uri_file, path: ..., mode: ro_mount|download}")
    data_outputs: dict[str, Any] = {}
    for name, value in job.outputs.items():
        if not isinstance(value, dict) or value.get("type", "uri_folder") != "uri_folder" or "path" not in value:
            raise SpecError(f"outputs.{name}", "expected {type: uri_folder, path: ds:NAME/path | s3://... | ./dir}")
        ref = _data_ref({**value, "mode": "upload"}, base, f"outputs.{name}")
        ref.pop("mode", None)
        data_outputs[name] = {"type": "uri_folder", **ref}
        literals.setdefault(name, None)
    command = _substitute(job.command, literals, "command") if job.command else None
    args = [_substitute(str(a), literals, "args") for a in job.args]
    if command and args:
        raise SpecError("args", "args go with entry_script; put them in the command instead")
    env: dict[str, Any] = {}
    if isinstance(job.environment, str):  # a registered environment: NAME or NAME:VERSION
        name, _, version = job.environment.removeprefix("azureml:").partition(":")
        env = {"name": name, "version": version or "latest"}
    elif job.environment is not None:
        e = job.environment
        env = {
            "pip_packages": list(e.pip_packages) + list(e.pip),
            "conda_packages": list(e.conda_packages),
            "pip_requirements_file": _rel(e.pip_requirements_file, base),
            "conda_dependencies_file": _rel(e.conda_dependencies_file or e.conda_file, base),
            "user_managed": e.user_managed,
            "python": e.python,
            "name": e.name,
            "version": e.version,
        }
    dist: dict[str, Any] = {"node_count": job.resources.instance_count}
    use_gpu = job.resources.use_gpu
    if job.distribution is not None:
        backend, comm = parse_backend(job.distribution.type)
        if job.distribution.communication_backend:
            _, comm = parse_backend(job.distribution.communication_backend)
        if comm is None and backend == "pytorch":
            comm = "nccl" if use_gpu else "gloo"
        dist.update(
            backend=backend,
            communication_backend=comm,
            process_count_per_node=job.distribution.process_count_per_instance,
            launcher=job.distribution.launcher,
            max_restarts=job.distribution.max_restarts,
        )
    spec = build_job_spec(
        source_directory=_rel(job.code, base),
        entry_script=job.entry_script,
        command=command,
        arguments=args,
        compute_target=job.compute,
        environment=env,
        distribution=dist,
        use_gpu=use_gpu,
        environment_variables=dict(job.environment_variables),
        inputs=data_inputs,
        outputs=data_outputs,
        max_run_duration_seconds=job.limits.timeout,
        hang_timeout_seconds=job.limits.hang_timeout,
        max_queue_seconds=job.limits.max_queue_seconds,
        priority=job.priority,
        preemptible=job.preemptible,
        max_retries=job.retry.max,
        retry_on=list(job.retry.retry_on),
        preempt_grace_seconds=job.retry.preempt_grace,
        display_name=job.display_name or job.name,
        description=job.description,
    )
    return LoadedJob(spec=spec, experiment=job.experiment or job.experiment_name, tags=dict(job.tags))


def _rel(path: str | None, base: str) -> str | None:
    if path is None:
        return None
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))
