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
    tags: dict[str, str] = {}


_INPUT_REF = re.compile(r"\$\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class LoadedJob(msgspec.Struct, frozen=True):
    spec: JobSpec
    experiment: str | None
    tags: dict[str, str]


def load_job_file(path: str) -> LoadedJob:
    """Read and validate a YAML job file; paths in it are relative to the file."""
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
    job: JobFile = convert_spec(data, JobFile)
    return compile_job_file(job, base=os.path.dirname(os.path.abspath(path)))


def _substitute(text: str, literals: dict[str, Any], field: str) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in literals:
            raise SpecError(field, f"refers to inputs.{name}, which is not defined under 'inputs'")
        return str(literals[name])

    return _INPUT_REF.sub(repl, text)


def compile_job_file(job: JobFile, base: str) -> LoadedJob:
    if job.type != "command":
        raise SpecError("type", f"unsupported job type {job.type!r}; only 'command' jobs are supported here")
    literals: dict[str, Any] = {}
    for name, value in job.inputs.items():
        if isinstance(value, str | int | float | bool):
            literals[name] = value
        elif isinstance(value, dict) and "value" in value and len(value) <= 2:
            literals[name] = value["value"]
        else:
            raise SpecError(f"inputs.{name}", "data inputs (uri_folder/uri_file) are not supported yet on this installation")
    if job.outputs:
        raise SpecError("outputs", "named outputs are not supported yet; write to ./outputs instead")
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
        max_run_duration_seconds=job.limits.timeout,
        hang_timeout_seconds=job.limits.hang_timeout,
        max_queue_seconds=job.limits.max_queue_seconds,
        display_name=job.display_name or job.name,
        description=job.description,
    )
    return LoadedJob(spec=spec, experiment=job.experiment or job.experiment_name, tags=dict(job.tags))


def _rel(path: str | None, base: str) -> str | None:
    if path is None:
        return None
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))
