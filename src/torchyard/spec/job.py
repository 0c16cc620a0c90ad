"""JobSpec: the one validated, immutable description of a job. Pure data, no I/O beyond stat().

Everything that describes a job — the ``PyTorch`` estimator, ``ScriptRunConfig``, a YAML job file,
the CLI — compiles to a :class:`JobSpec` through :func:`build_job_spec`, which type-checks every
field (msgspec) and then applies the cross-field rules. Errors are :class:`SpecError` naming the field.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import msgspec

from torchyard.errors import SpecError


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class EnvironmentSpec(_Spec, frozen=True):
    """What the run's Python environment must contain. Empty = the submitting interpreter as it is."""

    pip_packages: tuple[str, ...] = ()
    conda_packages: tuple[str, ...] = ()
    pip_requirements_file: str | None = None
    conda_dependencies_file: str | None = None
    user_managed: bool = False
    python: str | None = None
    name: str | None = None
    version: str | None = None

    @property
    def is_default(self) -> bool:
        return not (
            self.pip_packages
            or self.conda_packages
            or self.pip_requirements_file
            or self.conda_dependencies_file
            or self.python
        )


class DistributionSpec(_Spec, frozen=True):
    """How many processes, where, and how they talk."""

    backend: Literal["pytorch", "mpi"] | None = None
    communication_backend: Literal["gloo", "nccl"] | None = None
    node_count: int = 1
    process_count_per_node: int = 1
    launcher: Literal["torchyard", "torchrun"] = "torchyard"
    max_restarts: int = 0

    @property
    def world_size(self) -> int:
        return self.node_count * self.process_count_per_node


class JobSpec(_Spec, frozen=True):
    """A complete, validated job. Build it with :func:`build_job_spec`, never by hand."""

    source_directory: str
    entry_script: str | None = None
    command: str | None = None
    arguments: tuple[str, ...] = ()
    compute_target: str = "local"
    environment: EnvironmentSpec = EnvironmentSpec()
    distribution: DistributionSpec = DistributionSpec()
    use_gpu: bool = False
    environment_variables: dict[str, str] = {}
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    max_run_duration_seconds: float | None = None
    hang_timeout_seconds: float | None = None
    max_queue_seconds: float | None = None
    #: the job's place in a queue: higher first (local compute's admission; docs/guides/sharing-a-machine.md)
    priority: int = 0
    #: a run of a higher priority that cannot start may preempt this one (local compute's GPUs): it
    #: gets its preempt grace to checkpoint, then waits in the queue and resumes from the checkpoint
    preemptible: bool = False
    #: retries of a failed run: how many more attempts (each resumes from the latest committed
    #: checkpoint) and for which failure causes (docs/guides/checkpoints.md, "Failures and retries")
    max_retries: int = 0
    retry_on: tuple[str, ...] = ("infrastructure",)
    #: seconds a preempted run's ranks get, after SIGTERM, to commit a checkpoint before SIGKILL
    #: (``torchyard cancel --requeue``; the run resumes from that checkpoint)
    preempt_grace_seconds: float = 60.0
    display_name: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able data."""
        return msgspec.to_builtins(self)

    def to_json(self) -> bytes:
        """The spec as JSON bytes (what the store keeps)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> JobSpec:
        """The spec :meth:`to_json` wrote."""
        return msgspec.json.decode(data, type=cls)


_PATH_RE = re.compile(r"at `\$\.?(?P<path>[^`]*)`")


def _field_of(err: msgspec.ValidationError) -> tuple[str, str]:
    text = str(err)
    match = _PATH_RE.search(text)
    message = _PATH_RE.sub("", text).strip().rstrip("-").strip()
    if message:
        message = message[0].lower() + message[1:]
    field = match.group("path") if match else "job"
    unknown = re.search(r"unknown field `([^`]*)`", text)
    if unknown:
        field = f"{field}.{unknown.group(1)}" if match and field else unknown.group(1)
        message = f"unknown field {unknown.group(1)!r}"
    return field or "job", message


def convert_spec(data: dict[str, Any], type_: type[Any]) -> Any:
    """msgspec.convert with errors turned into SpecError naming the field."""
    try:
        return msgspec.convert(data, type=type_, strict=True)
    except msgspec.ValidationError as err:
        field, message = _field_of(err)
        raise SpecError(field, message) from None


def build_job_spec(**fields: Any) -> JobSpec:
    """Type-check ``fields`` into a JobSpec and apply the cross-field rules."""
    spec: JobSpec = convert_spec(fields, JobSpec)
    _validate(spec)
    return spec


#: what a failed attempt is classified as (runtime.failure): ``any`` retries every cause
RETRY_CAUSES = ("infrastructure", "preempted", "hung", "user", "any")


def _validate(spec: JobSpec) -> None:
    if not 0 <= spec.max_retries <= 100:
        raise SpecError("max_retries", f"must be between 0 and 100, got {spec.max_retries}")
    if not 0 <= spec.preempt_grace_seconds <= 86400:
        raise SpecError("preempt_grace_seconds", f"must be between 0 and 86400 seconds, got {spec.preempt_grace_seconds:g}")
    unknown = [c for c in spec.retry_on if c not in RETRY_CAUSES]
    if unknown:
        raise SpecError("retry_on", f"unknown cause {unknown[0]!r}; one of {', '.join(RETRY_CAUSES)}")
    from torchyard.limits import MAX_DESCRIPTION, MAX_DISPLAY_NAME, check_text  # noqa: PLC0415

    for field, value, limit in (("display_name", spec.display_name, MAX_DISPLAY_NAME),
                                ("description", spec.description, MAX_DESCRIPTION)):
        if value is not None:
            try:
                check_text(value, field, limit)
            except (TypeError, ValueError) as err:
                raise SpecError(field, str(err).removeprefix(f"{field} ")) from None
    src = spec.source_directory
    if not os.path.isdir(src):
        raise SpecError("source_directory", f"{src!r} is not a directory; pass the folder holding your training code")
    if spec.entry_script and spec.command:
        raise SpecError("command", "give either an entry script or a command, not both")
    if not spec.entry_script and not spec.command:
        raise SpecError("entry_script", "no entry script (or command) given; name the script to run, e.g. train.py")
    if spec.entry_script:
        if os.path.isabs(spec.entry_script):
            raise SpecError("entry_script", f"{spec.entry_script!r} must be relative to source_directory")
        full = os.path.realpath(os.path.join(src, spec.entry_script))
        root = os.path.realpath(src)
        if os.path.commonpath([full, root]) != root:
            raise SpecError("entry_script", f"{spec.entry_script!r} is outside source_directory {src!r}")
        if not os.path.isfile(full):
            raise SpecError("entry_script", f"{spec.entry_script!r} not found in source_directory {src!r}")
    dist = spec.distribution
    if dist.node_count < 1:
        raise SpecError("node_count", f"must be at least 1, got {dist.node_count}")
    if dist.process_count_per_node < 1:
        raise SpecError("process_count_per_node", f"must be at least 1, got {dist.process_count_per_node}")
    if dist.world_size > 1 and dist.backend is None:
        raise SpecError(
            "distributed_backend",
            "'distributed_backend' must be specified when node_count > 1 or process_count_per_node > 1 "
            "(use 'pytorch', 'nccl', 'gloo' or 'mpi')",
        )
    if dist.max_restarts < 0:
        raise SpecError("max_restarts", f"must be 0 or more, got {dist.max_restarts}")
    if dist.max_restarts and dist.launcher != "torchrun":
        raise SpecError("max_restarts", "elastic restarts need launcher='torchrun'")
    if dist.launcher == "torchrun" and dist.backend == "mpi":
        raise SpecError("launcher", "launcher='torchrun' works with the pytorch backend, not mpi")
    if dist.communication_backend == "nccl" and not spec.use_gpu:
        raise SpecError("distributed_backend", "nccl needs GPUs: set use_gpu=True or use 'gloo'")
    if spec.max_run_duration_seconds is not None and spec.max_run_duration_seconds <= 0:
        raise SpecError("max_run_duration_seconds", f"must be positive, got {spec.max_run_duration_seconds}")
    if spec.hang_timeout_seconds is not None and spec.hang_timeout_seconds <= 0:
        raise SpecError("hang_timeout_seconds", f"must be positive, got {spec.hang_timeout_seconds}")
    if spec.max_queue_seconds is not None and spec.max_queue_seconds <= 0:
        raise SpecError("max_queue_seconds", f"must be positive, got {spec.max_queue_seconds}")
    env = spec.environment
    if env.user_managed and not env.is_default:
        raise SpecError("user_managed", "a user-managed environment takes no package lists or dependency files")
    if env.conda_dependencies_file and (env.pip_packages or env.conda_packages):
        raise SpecError("conda_dependencies_file", "give either a conda dependencies file or package lists, not both")
    for name in spec.environment_variables:
        if not name or "=" in name:
            raise SpecError("environment_variables", f"invalid variable name {name!r}")
