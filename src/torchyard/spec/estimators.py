"""Azure-ML-shaped ways to describe a job: the ``PyTorch`` estimator and ``ScriptRunConfig``.

Both are thin, keyword-friendly front ends that compile to the same :class:`JobSpec` on
construction, so a mistake surfaces where it is made, not at submit.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchyard.errors import NotSupportedError, SpecError
from torchyard.spec.job import JobSpec, build_job_spec

_SCALAR = (str, int, float, bool)


def flatten_script_params(
    script_params: Mapping[str, Any] | None, inputs: dict[str, Any] | None = None
) -> tuple[str, ...]:
    """Azure's rules: ``{k: v}`` → ``k v`` in order; ``""`` → bare flag ``k``; a list → ``k a b``;
    ``None`` drops the key. A datastore or data reference becomes an input named after its key
    (collected into ``inputs``) and a ``${{inputs.NAME}}`` placeholder, resolved to a local path on
    every node when the run starts."""
    if script_params is None:
        return ()
    if not isinstance(script_params, Mapping):
        raise SpecError("script_params", f"must be a dict, got {type(script_params).__name__}")
    out: list[str] = []
    for key, value in script_params.items():
        if not isinstance(key, str) or not key:
            raise SpecError("script_params", f"keys must be non-empty strings, got {key!r}")
        if value is None:
            continue
        if isinstance(value, str) and value == "":
            out.append(key)
        elif isinstance(value, list | tuple):
            out.append(key)
            for i, item in enumerate(value):
                out.append(_arg(item, f"script_params[{key!r}][{i}]", inputs, key))
        else:
            out.extend([key, _arg(value, f"script_params[{key!r}]", inputs, key)])
    return tuple(out)


def is_data(value: Any) -> bool:
    """A datastore or a data reference (duck-typed, so the spec imports no data code)."""
    return hasattr(value, "__torchyard_input__") or hasattr(value, "__torchyard_datastore__")


def data_ref_dict(value: Any) -> dict[str, Any]:
    ref = value.as_mount() if hasattr(value, "__torchyard_datastore__") else value
    data: dict[str, Any] = ref.to_dict()
    return data


def input_name(hint: str, taken: Mapping[str, Any]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", hint.lstrip("-")).strip("_") or "input"
    if base[0].isdigit():
        base = f"input_{base}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _arg(value: Any, field: str, inputs: dict[str, Any] | None = None, hint: str = "input") -> str:
    if isinstance(value, _SCALAR):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if is_data(value):
        if inputs is None:
            raise SpecError(field, "a data reference is only accepted where a job collects its inputs")
        name = input_name(getattr(value, "input_name", None) or hint, inputs)  # as_named_input(NAME) names it
        inputs[name] = data_ref_dict(value)
        return "${{inputs." + name + "}}"
    raise SpecError(field, f"unsupported value of type {type(value).__name__}; use str, int, float or bool")


def normalize_arguments(
    arguments: Sequence[Any] | None, field: str = "arguments", inputs: dict[str, Any] | None = None
) -> tuple[str, ...]:
    if arguments is None:
        return ()
    if isinstance(arguments, str | bytes) or not isinstance(arguments, Iterable):
        raise SpecError(field, f"must be a list of arguments, got {type(arguments).__name__}")
    items = list(arguments)
    out = []
    for i, a in enumerate(items):
        hint = str(items[i - 1]) if i and isinstance(items[i - 1], str) and str(items[i - 1]).startswith("-") else f"input_{i}"
        out.append(_arg(a, f"{field}[{i}]", inputs, hint))
    return tuple(out)


def collect_inputs(inputs: Any, collected: dict[str, Any], field: str = "inputs") -> None:
    """``inputs=`` as Azure's list of data references, or a dict name → reference/URL."""
    if not inputs:
        return
    if isinstance(inputs, Mapping):
        for name, value in inputs.items():
            if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise SpecError(field, f"invalid input name {name!r}: use letters, digits and '_'")
            if is_data(value):
                collected[name] = data_ref_dict(value)
            elif isinstance(value, str):
                collected[name] = {"url": value, "mode": "download"}
            else:
                raise SpecError(f"{field}[{name!r}]", f"expected a data reference or a URL, got {type(value).__name__}")
        return
    if isinstance(inputs, str | bytes) or not isinstance(inputs, Iterable):
        raise SpecError(field, f"must be a list of data references or a dict, got {type(inputs).__name__}")
    for i, value in enumerate(inputs):
        if not is_data(value):
            raise SpecError(f"{field}[{i}]", f"expected a data reference, got {type(value).__name__}")
        ref = data_ref_dict(value)
        hint = getattr(value, "input_name", None) or f"{ref.get('datastore') or 'input'}_{ref.get('path') or ''}"
        collected[input_name(hint, collected)] = ref


def collect_outputs(outputs: Any, field: str = "outputs") -> dict[str, Any]:
    """``outputs={"model": {"type": "uri_folder", "path": ds.path("models/{run_id}/")}}`` (or the
    reference alone, or a URL)."""
    out: dict[str, Any] = {}
    if not outputs:
        return out
    if not isinstance(outputs, Mapping):
        raise SpecError(field, f"must be a dict of name → output, got {type(outputs).__name__}")
    for name, value in outputs.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise SpecError(field, f"invalid output name {name!r}: use letters, digits and '_'")
        target = value.get("path") if isinstance(value, Mapping) else value
        if isinstance(value, Mapping) and value.get("type", "uri_folder") != "uri_folder":
            raise SpecError(f"{field}[{name!r}].type", "only uri_folder outputs are supported")
        if is_data(target):
            out[name] = {"type": "uri_folder", **data_ref_dict(target)}
        elif isinstance(target, str) and target:
            out[name] = {"type": "uri_folder", "url": target}
        else:
            raise SpecError(f"{field}[{name!r}]", "needs a path: a datastore path or a URL")
    return out


# ---- distribution configurations (Azure's names) -------------------------------------------------


class _Distribution:
    backend: str
    communication_backend: str | None = None

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        self.process_count_per_node = process_count_per_node
        self.node_count = node_count

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(process_count_per_node={self.process_count_per_node}, "
            f"node_count={self.node_count})"
        )


class Mpi(_Distribution):
    """Open MPI (``mpirun``) launch; Horovod and mpi4py scripts run on top."""

    backend = "mpi"


class MpiConfiguration(Mpi):
    """ScriptRunConfig's spelling of :class:`Mpi`."""


class Gloo(_Distribution):
    """torch.distributed with the gloo backend (CPU)."""

    backend = "pytorch"
    communication_backend = "gloo"


class Nccl(_Distribution):
    """torch.distributed with the nccl backend (GPU)."""

    backend = "pytorch"
    communication_backend = "nccl"


class PyTorchConfiguration(_Distribution):
    """torch.distributed launch for ScriptRunConfig.

    ``process_count`` is the total number of processes (Azure's meaning); it must be a multiple of
    ``node_count``. ``communication_backend`` is ``"Gloo"``/``"Nccl"`` (any case) or None for automatic.
    """

    backend = "pytorch"

    def __init__(
        self, communication_backend: str | None = None, process_count: int | None = None, node_count: int = 1
    ) -> None:
        if not isinstance(node_count, int) or isinstance(node_count, bool) or node_count < 1:
            raise SpecError("node_count", f"must be an integer of at least 1, got {node_count!r}")
        total = node_count if process_count is None else process_count
        if not isinstance(total, int) or isinstance(total, bool) or total < 1 or total % node_count:
            raise SpecError(
                "process_count", f"must be a positive multiple of node_count={node_count}, got {process_count!r}"
            )
        super().__init__(process_count_per_node=total // node_count, node_count=node_count)
        self.communication_backend = _comm_backend(communication_backend)


def _comm_backend(name: str | None) -> str | None:
    if name is None:
        return None
    low = str(name).lower()
    if low not in ("gloo", "nccl"):
        raise SpecError("communication_backend", f"unknown backend {name!r}; use 'gloo' or 'nccl'")
    return low


def parse_backend(value: Any) -> tuple[str | None, str | None]:
    """``distributed_backend`` as Azure accepts it → (backend, communication_backend)."""
    if value is None:
        return None, None
    if isinstance(value, _Distribution):
        return value.backend, value.communication_backend
    if not isinstance(value, str):
        raise SpecError("distributed_backend", f"must be a string such as 'pytorch' or 'mpi', got {value!r}")
    low = value.lower()
    if low in ("pytorch", "torch", "torch.distributed"):
        return "pytorch", None
    if low in ("gloo", "nccl"):
        return "pytorch", low
    if low == "mpi":
        return "mpi", None
    raise SpecError("distributed_backend", f"unknown backend {value!r}; use 'pytorch', 'nccl', 'gloo' or 'mpi'")


# ---- environment --------------------------------------------------------------------------------


class PythonSection:
    """Azure's ``env.python``: ``conda_dependencies`` (a :class:`~torchyard.spec.conda.CondaDependencies`,
    read from and written into the environment's lists), ``user_managed_dependencies``,
    ``conda_dependencies_file`` and ``version`` (the python version asked for; None: this
    interpreter). It compares equal to its version, as the plain string it used to be."""

    def __init__(self, env: Environment) -> None:
        self._env = env

    @property
    def version(self) -> str | None:
        """The python version asked for (None: this interpreter)."""
        return self._env._python_version

    @property
    def conda_dependencies(self) -> Any:
        """The environment's packages as a CondaDependencies; assigning one replaces them."""
        from torchyard.spec.conda import CondaDependencies  # noqa: PLC0415

        env = self._env
        cd = CondaDependencies()
        cd._python = env._python_version
        for pkg in env.conda:
            cd.add_conda_package(pkg)
        for pkg in env.pip:
            cd.add_pip_package(pkg)
        return cd

    @conda_dependencies.setter
    def conda_dependencies(self, cd: Any) -> None:
        from torchyard.spec.conda import CondaDependencies, python_for  # noqa: PLC0415

        if not isinstance(cd, CondaDependencies):
            raise SpecError("conda_dependencies", f"expected a CondaDependencies, got {type(cd).__name__}")
        env = self._env
        env.pip = list(cd.pip_packages)
        env.conda = list(cd.conda_packages)
        env._python_version = python_for(cd._python)
        env.conda_dependencies_file = None

    @property
    def user_managed_dependencies(self) -> bool:
        """Azure's name for ``Environment.user_managed``."""
        return self._env.user_managed

    @user_managed_dependencies.setter
    def user_managed_dependencies(self, value: bool) -> None:
        self._env.user_managed = bool(value)

    @property
    def conda_dependencies_file(self) -> str | None:
        """The environment's conda file, if it has one."""
        return self._env.conda_dependencies_file

    @conda_dependencies_file.setter
    def conda_dependencies_file(self, path: str | None) -> None:
        self._env.conda_dependencies_file = _abs(path)

    @property
    def interpreter_path(self) -> None:
        """Always None: runs use this interpreter or a cached environment (setting one is refused)."""
        return None

    @interpreter_path.setter
    def interpreter_path(self, path: str | None) -> None:
        if path is not None:
            raise NotSupportedError("interpreter_path", "runs use this interpreter or a cached environment built "
                                                        "from the package lists; user_managed_dependencies=True runs "
                                                        "the submitting interpreter as it is")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PythonSection):
            return self.version == other.version
        return self.version == other

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.version or ""

    def __repr__(self) -> str:
        return f"PythonSection(version={self.version!r})"


class DockerSection:
    """Azure's ``env.docker``: torchyard runs no containers. ``enabled``, ``shm_size`` and
    ``arguments`` are accepted (a container by itself changes no result). A ``base_image`` or
    ``base_dockerfile`` is not used, and not silently: the environment records it in ``env.notes``
    and ``env.docker_base_image``, and a warning is printed. The run gets this machine's interpreter
    (with its CUDA and MPI) plus the environment's packages. ``DEFAULT_CPU_IMAGE`` and
    ``DEFAULT_GPU_IMAGE`` are None here, which records nothing."""

    enabled = False
    base_dockerfile: str | None = None

    @property
    def base_image(self) -> str | None:
        """The image a notebook named (recorded, not used)."""
        env: Environment = object.__getattribute__(self, "_env")
        return env.docker_base_image

    def __init__(self, env: Environment) -> None:
        object.__setattr__(self, "_env", env)

    def __setattr__(self, name: str, value: Any) -> None:
        if value is None or name in ("enabled", "shm_size", "arguments", "shared_volumes", "gpu_support"):
            return
        if name not in ("base_image", "base_dockerfile", "base_image_registry"):
            raise NotSupportedError(f"docker.{name}", "torchyard runs no containers; leave it out")
        env: Environment = object.__getattribute__(self, "_env")
        note = (f"docker.{name}={str(value)[:120]!r} is not used: torchyard runs no containers; the run gets this "
                "machine's interpreter with the environment's packages")
        env.docker_base_image = str(value) if name == "base_image" else env.docker_base_image
        if note not in env.notes:
            env.notes.append(note)
            print(f"torchyard: warning: environment {env.name!r}: {note}", file=sys.stderr)


class Environment:
    """The Python packages a run needs. With nothing set, the submitting interpreter is used as is.

    Azure's forms: ``Environment.from_conda_specification(name, file_path)``,
    ``Environment.from_pip_requirements(name, file_path)``, ``env.python.conda_dependencies = cd``,
    ``Environment.get(ws, name)`` (registered ones and the curated catalogue, Azure's curated names
    included), ``Environment.list(ws)``."""

    def __init__(
        self,
        name: str = "default",
        version: str | None = None,
        *,
        pip: Sequence[str] = (),
        conda: Sequence[str] = (),
        pip_requirements_file: str | None = None,
        conda_dependencies_file: str | None = None,
        python: Any = None,
        user_managed: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.pip = list(pip)
        self.conda = list(conda)
        self.pip_requirements_file = pip_requirements_file
        self.conda_dependencies_file = conda_dependencies_file
        self._python_version: str | None = python.version if isinstance(python, PythonSection) else python
        self.user_managed = user_managed
        #: what torchyard says of this environment (e.g. a curated Azure name mapped to its nearest)
        self.notes: list[str] = []
        #: Azure's ``env.environment_variables``: set in every rank of a job using this environment
        #: (the job's own ``environment_variables`` win on a clash)
        self.environment_variables: dict[str, str] = {}
        #: Azure's ``env.docker.base_image``, recorded and not used (see :class:`DockerSection`)
        self.docker_base_image: str | None = None

    @property
    def python(self) -> PythonSection:
        """Azure's python section (``env.python.conda_dependencies``); equal to the version asked for."""
        return PythonSection(self)

    @python.setter
    def python(self, value: Any) -> None:
        if isinstance(value, PythonSection):
            value = value.version
        self._python_version = value

    @property
    def docker(self) -> DockerSection:
        """Azure's docker section: see :class:`DockerSection`."""
        return DockerSection(self)

    def to_spec_dict(self) -> dict[str, Any]:
        """The environment as the JobSpec holds it (name, version, package lists, files)."""
        return {
            "name": self.name,
            "version": self.version,
            "pip_packages": list(self.pip),
            "conda_packages": list(self.conda),
            "pip_requirements_file": self.pip_requirements_file,
            "conda_dependencies_file": self.conda_dependencies_file,
            "python": self._python_version,
            "user_managed": self.user_managed,
        }

    def register(self, workspace: Any) -> Environment:
        """Register this environment in ``workspace``; returns it with its version."""
        registered: Environment = workspace.environments.register(self)
        return registered

    @staticmethod
    def get(workspace: Any, name: str, version: str | None = None, label: str | None = None) -> Environment:
        """A registered environment (the latest version unless ``version`` is given), else one of the
        curated catalogue (``torchyard-pytorch-2.13``; Azure's ``AzureML-*`` names map to the nearest)."""
        if label is not None:
            raise NotSupportedError("label", "environment labels are not kept here; give a version")
        found: Environment = workspace.environments.get(name, version)
        return found

    @staticmethod
    def list(workspace: Any) -> dict[str, Environment]:
        """``{name: latest version}`` of the registered environments and the curated catalogue."""
        registry = workspace.environments
        if hasattr(registry, "items"):
            return dict(registry.items())
        return {n: registry.get(n) for n in registry.names()}

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        """An environment from a conda file (``name``, ``channels``, ``dependencies`` with a ``pip:``
        list). Only python and pip in it: a pip environment (no conda needed; a python version this
        interpreter satisfies means this interpreter). Conda packages: built with conda from the
        file itself (channels included)."""
        from torchyard.spec.conda import CondaDependencies, load_yaml, python_for  # noqa: PLC0415

        path = _abs(os.fspath(file_path)) or ""
        cd = CondaDependencies(_underlying_structure=load_yaml(path))
        if list(cd.conda_packages):
            return Environment(name, conda_dependencies_file=path)
        return Environment(name, pip=list(cd.pip_packages), python=python_for(cd._python))

    @staticmethod
    def from_pip_requirements(name: str, file_path: str | os.PathLike[str], pip_version: str | None = None) -> Environment:
        """An environment whose pip packages are a requirements file's (its content is in the cache key)."""
        path = _abs(os.fspath(file_path))
        if path is None or not os.path.isfile(path):
            raise SpecError("file_path", f"{file_path!r} does not exist")
        return Environment(name, pip_requirements_file=path)

    @staticmethod
    def from_existing_conda_environment(name: str, conda_environment_name: str) -> Environment:
        """Refused: export the environment to a file and use :meth:`from_conda_specification`."""
        raise NotSupportedError("conda_environment_name", "export it first (conda env export > env.yml) and use "
                                                          "Environment.from_conda_specification(name, 'env.yml')")

    @staticmethod
    def from_docker_image(name: str, image: str, container_registry: Any = None,
                          conda_specification: Any = None, pip_requirements: Any = None) -> Environment:
        """Refused: torchyard runs no containers."""
        raise NotSupportedError("image", "torchyard runs no containers; describe the packages instead "
                                         "(from_conda_specification, from_pip_requirements)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Environment) and self.to_spec_dict() == other.to_spec_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r}, pip={self.pip!r}, conda={self.conda!r})"


def _job_env_vars(environment: Environment | None, job_vars: Mapping[str, str] | None) -> dict[str, str]:
    """The job's environment variables: its environment's (Azure's ``env.environment_variables``),
    then its own, which win."""
    merged = _str_map(getattr(environment, "environment_variables", None) or None, "environment.environment_variables")
    merged.update(_str_map(job_vars, "environment_variables"))
    return merged


def _target_name(compute_target: Any) -> str:
    if compute_target is None:
        return "local"
    if isinstance(compute_target, str):
        return compute_target
    name = getattr(compute_target, "name", None)
    if isinstance(name, str):
        return name
    raise SpecError("compute_target", f"must be a compute target name such as 'local', got {compute_target!r}")


def _list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SpecError(field, f"must be a list of strings, got {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise SpecError(field, f"must be a list of strings, got an item {item!r}")
    return items


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(field, f"must be a dict of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise SpecError(f"{field}[{key!r}]", f"must map strings to strings, got {item!r} ({type(item).__name__})")
    return dict(value)


def _abs(path: str | None, base: str | None = None) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise SpecError("path", f"expected a path, got {path!r}")
    path = os.fspath(path)
    if base and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.abspath(path)


#: the Horovod release the environments' recipe is verified with (the estimator adds it under mpi)
HOROVOD_VERIFIED = "horovod==0.28.1"
_HOROVOD_IMPORT = re.compile(rb"^[ \t]*(import[ \t]+horovod\b|from[ \t]+horovod\b)", re.MULTILINE)
_SKIP_DIRS = {"__pycache__", "node_modules", "venv", ".venv", ".git", ".torchyard", "outputs", "logs"}


def _requirement(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[@(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def imports_horovod(source_directory: str, max_files: int = 500) -> bool:
    """Whether a Python file of ``source_directory`` imports horovod (at most ``max_files`` files read,
    1 MB each). The ``PyTorch`` estimator under ``distributed_backend='mpi'`` then adds
    :data:`HOROVOD_VERIFIED` to the run's pip packages when this interpreter has none, as Azure's estimator image had it."""
    seen = 0
    for root, dirs, files in os.walk(source_directory):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if not name.endswith(".py"):
                continue
            seen += 1
            if seen > max_files:
                return False
            try:
                with open(os.path.join(root, name), "rb") as fh:
                    if _HOROVOD_IMPORT.search(fh.read(1 << 20)):
                        return True
            except OSError:
                continue
    return False


class _JobDescription:
    """Shared by the estimator and ScriptRunConfig: holds the compiled JobSpec."""

    spec: JobSpec

    def to_job_spec(self) -> JobSpec:
        """The validated JobSpec this job description compiles to."""
        return self.spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class PyTorch(_JobDescription):
    """The Azure ML ``PyTorch`` estimator: a source directory, an entry script, its arguments and
    packages, where to run it and how many processes.

    ``script_params`` flattens as Azure does (see :func:`flatten_script_params`).
    ``distributed_backend`` is ``"pytorch"``, ``"nccl"``, ``"gloo"`` or ``"mpi"`` (or ``Mpi()``,
    ``Gloo()``, ``Nccl()`` through ``distributed_training``) and is required when more than one
    process runs. Under ``"mpi"``, a source folder whose Python files import horovod gets
    ``horovod==0.28.1`` (:data:`HOROVOD_VERIFIED`) added to its pip packages (built against the run's torch, cached) unless this interpreter has it,
    the environment is user-managed or given whole (``environment_definition``, a conda file).
    """

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        *,
        compute_target: Any = None,
        entry_script: str | None = None,
        script_params: Mapping[str, Any] | None = None,
        node_count: int = 1,
        process_count_per_node: int = 1,
        distributed_backend: Any = None,
        distributed_training: _Distribution | None = None,
        use_gpu: bool = False,
        pip_packages: Sequence[str] | None = None,
        conda_packages: Sequence[str] | None = None,
        pip_requirements_file: str | None = None,
        conda_dependencies_file: str | None = None,
        environment_definition: Environment | None = None,
        user_managed: bool = False,
        environment_variables: Mapping[str, str] | None = None,
        inputs: Sequence[Any] | Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        max_run_duration_seconds: float | None = None,
        hang_timeout_seconds: float | None = None,
        launcher: str = "torchyard",
        max_restarts: int = 0,
        max_queue_seconds: float | None = None,
        priority: int = 0,
        preemptible: bool = False,
        max_retries: int = 0,
        retry_on: Sequence[str] = ("infrastructure",),
        preempt_grace_seconds: float = 60.0,
    ) -> None:
        if entry_script is None:
            raise SpecError("entry_script", "no entry script given; name the script to run, e.g. train.py")
        if distributed_training is not None:
            if distributed_backend is not None:
                raise SpecError("distributed_backend", "give distributed_backend or distributed_training, not both")
            distributed_backend = distributed_training
            if process_count_per_node == 1:
                process_count_per_node = distributed_training.process_count_per_node
        backend, comm = parse_backend(distributed_backend)
        collected: dict[str, Any] = {}
        collect_inputs(inputs, collected)
        src = _abs(os.fspath(source_directory)) if source_directory is not None else None
        if src is None:
            raise SpecError("source_directory", "is required")
        if environment_definition is not None:
            if pip_packages or conda_packages or pip_requirements_file or conda_dependencies_file:
                raise SpecError(
                    "environment_definition", "give an environment_definition or package lists, not both"
                )
            env = environment_definition.to_spec_dict()
        else:
            env = {
                "pip_packages": _list(pip_packages, "pip_packages"),
                "conda_packages": _list(conda_packages, "conda_packages"),
                "pip_requirements_file": _abs(pip_requirements_file),
                "conda_dependencies_file": _abs(conda_dependencies_file),
                "user_managed": user_managed,
            }
        if (backend == "mpi" and environment_definition is None and not user_managed and not conda_dependencies_file
                and not any(_requirement(p) == "horovod" for p in env["pip_packages"])
                and importlib.util.find_spec("horovod") is None and imports_horovod(src)):
            env["pip_packages"] = [*env["pip_packages"], HOROVOD_VERIFIED]  # the estimator's promise under mpi
        if comm is None and backend == "pytorch":
            comm = "nccl" if use_gpu is True else "gloo"
        self.spec = build_job_spec(
            source_directory=src,
            entry_script=entry_script,
            arguments=list(flatten_script_params(script_params, collected)),
            compute_target=_target_name(compute_target),
            environment=env,
            distribution={
                "backend": backend,
                "communication_backend": comm,
                "node_count": node_count,
                "process_count_per_node": process_count_per_node,
                "launcher": launcher,
                "max_restarts": max_restarts,
            },
            use_gpu=use_gpu,
            environment_variables=_job_env_vars(environment_definition, environment_variables),
            inputs=collected,
            outputs=collect_outputs(outputs),
            max_run_duration_seconds=max_run_duration_seconds,
            hang_timeout_seconds=hang_timeout_seconds,
            max_queue_seconds=max_queue_seconds,
            priority=priority,
            preemptible=bool(preemptible),
            max_retries=max_retries,
            retry_on=_list(retry_on, "retry_on"),
            preempt_grace_seconds=float(preempt_grace_seconds),
        )


class ScriptRunConfig(_JobDescription):
    """The modern form: ``ScriptRunConfig(source_directory, script, arguments, compute_target,
    environment, distributed_job_config, max_run_duration_seconds)``. Compiles to the same JobSpec
    as :class:`PyTorch`. ``command`` (a shell command line) may replace ``script``. ``use_gpu``
    (not Azure's: there the cluster's VM size decides) defaults to True when the distributed job
    configuration asks for nccl, which needs GPUs; on a local target without GPUs the job then runs on
    the CPU with gloo, saying so in its log."""

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        script: str | None = None,
        arguments: Sequence[Any] | None = None,
        compute_target: Any = None,
        environment: Environment | None = None,
        distributed_job_config: _Distribution | None = None,
        max_run_duration_seconds: float | None = None,
        *,
        command: str | Sequence[str] | None = None,
        use_gpu: bool | None = None,
        environment_variables: Mapping[str, str] | None = None,
        launcher: str = "torchyard",
        hang_timeout_seconds: float | None = None,
        outputs: Mapping[str, Any] | None = None,
        max_queue_seconds: float | None = None,
        priority: int = 0,
        preemptible: bool = False,
        max_retries: int = 0,
        retry_on: Sequence[str] = ("infrastructure",),
        preempt_grace_seconds: float = 60.0,
    ) -> None:
        collected: dict[str, Any] = {}
        dist = distributed_job_config
        backend, comm = (dist.backend, dist.communication_backend) if dist is not None else (None, None)
        if dist is not None and not isinstance(dist, _Distribution):
            raise SpecError("distributed_job_config", f"expected PyTorchConfiguration or MpiConfiguration, got {dist!r}")
        if use_gpu is None:  # Azure's ScriptRunConfig has no use_gpu: asking for nccl means GPU nodes
            use_gpu = comm == "nccl"
        if comm is None and backend == "pytorch":
            comm = "nccl" if use_gpu is True else "gloo"
        if command is not None and not isinstance(command, str):
            command = " ".join(normalize_arguments(command, "command"))
        self.spec = build_job_spec(
            source_directory=_abs(os.fspath(source_directory)),
            entry_script=script,
            command=command,
            arguments=list(normalize_arguments(arguments, inputs=collected)),
            inputs=collected,
            outputs=collect_outputs(outputs),
            compute_target=_target_name(compute_target),
            environment=environment.to_spec_dict() if environment is not None else {},
            distribution={
                "backend": backend,
                "communication_backend": comm,
                "node_count": dist.node_count if dist else 1,
                "process_count_per_node": dist.process_count_per_node if dist else 1,
                "launcher": launcher,
            },
            use_gpu=use_gpu,
            environment_variables=_job_env_vars(environment, environment_variables),
            max_run_duration_seconds=max_run_duration_seconds,
            hang_timeout_seconds=hang_timeout_seconds,
            max_queue_seconds=max_queue_seconds,
            priority=priority,
            preemptible=bool(preemptible),
            max_retries=max_retries,
            retry_on=_list(retry_on, "retry_on"),
            preempt_grace_seconds=float(preempt_grace_seconds),
        )
