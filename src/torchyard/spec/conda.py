"""Azure's ``CondaDependencies``: a conda specification (python version, conda packages, pip
packages) that an :class:`~torchyard.spec.estimators.Environment` takes through
``env.python.conda_dependencies = cd``.

How it maps onto torchyard's environments: pip packages become the environment's pip list (a
layered, cached virtual environment); conda packages its conda list (built with micromamba, mamba or
conda; without one the run is refused at submit, naming ``conda_packages``); a python version that
this interpreter satisfies (``3.11`` here when running 3.11.x) means this interpreter, any other one
needs conda. The Azure SDK's own packages (``azureml-defaults``, ``azureml-core``, ...) are left out
of the pip list: torchyard is their replacement, already in every run (:data:`AZURE_SDK_PACKAGES`;
``cd.left_out`` lists them). Channels and pip options have no place in a torchyard environment:
``add_channel`` of anything but ``defaults``/``conda-forge`` and ``set_pip_option`` raise, saying
to use ``channel::package`` specs or pip's own configuration.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from torchyard.errors import NotSupportedError, SpecError

#: pip packages of the Azure ML SDK that torchyard replaces (left out of environments)
AZURE_SDK_PACKAGES = re.compile(r"^(azureml([-_.][A-Za-z0-9_.-]*)?|azure-ml|azureml)$", re.IGNORECASE)
DEFAULT_CHANNELS = ("defaults", "conda-forge", "anaconda")


def _name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[@(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def python_for(version: str | None) -> str | None:
    """None (this interpreter) when it satisfies ``version`` (``3``, ``3.11``, ``3.11.9``), else ``version``."""
    if version is None:
        return None
    text = str(version).strip().lstrip("=")
    if not text:
        return None
    here = sys.version.split()[0].split(".")
    asked = text.split(".")
    return None if asked == here[: len(asked)] else text


class CondaDependencies:
    """``CondaDependencies(conda_dependencies_file_path=None)``, or ``CondaDependencies.create(
    pip_packages=..., conda_packages=..., python_version=...)``; ``add_pip_package``,
    ``add_conda_package``, ``remove_*``, ``pip_packages``, ``conda_packages``, ``get_python_version``,
    ``set_python_version``, ``serialize_to_string``, ``save``."""

    def __init__(self, conda_dependencies_file_path: str | os.PathLike[str] | None = None,
                 _underlying_structure: dict[str, Any] | None = None) -> None:
        self._python: str | None = None
        self._conda: list[str] = []
        self._pip: list[str] = []
        self._channels: list[str] = []
        self.left_out: list[str] = []
        self.name = "project_environment"
        data = _underlying_structure
        if conda_dependencies_file_path is not None:
            data = load_yaml(os.fspath(conda_dependencies_file_path))
        if data:
            self._load(data)

    def _load(self, data: dict[str, Any]) -> None:
        self.name = str(data.get("name") or self.name)
        for channel in data.get("channels") or []:
            if channel not in self._channels:
                self._channels.append(str(channel))
        for dep in data.get("dependencies") or []:
            if isinstance(dep, dict):
                for pip in dep.get("pip") or []:
                    self.add_pip_package(str(pip))
            elif _name(str(dep)) == "python":
                self._python = str(dep)[len("python"):].lstrip("=<>~ ") or None
            elif _name(str(dep)) != "pip":
                self.add_conda_package(str(dep))

    @staticmethod
    def create(pip_indexurl: str | None = None, pip_packages: Iterable[str] | None = None,
               conda_packages: Iterable[str] | None = None, python_version: str | None = None,
               pin_sdk_version: bool = True) -> CondaDependencies:
        """A specification with these packages; ``python_version`` None: this interpreter's."""
        cd = CondaDependencies()
        if pip_indexurl:
            cd.set_pip_option(f"--index-url {pip_indexurl}")
        cd._python = python_version
        for pkg in conda_packages or ():
            cd.add_conda_package(pkg)
        for pkg in pip_packages or ():
            cd.add_pip_package(pkg)
        return cd

    # ---- packages ----

    def add_pip_package(self, pip_package: str) -> None:
        """Add (or replace, by name) a pip requirement; Azure SDK packages are left out (``left_out``)."""
        if not isinstance(pip_package, str) or not pip_package.strip():
            raise SpecError("pip_package", f"must be a requirement such as 'torchvision==0.28', got {pip_package!r}")
        if AZURE_SDK_PACKAGES.match(_name(pip_package)):
            if pip_package not in self.left_out:
                self.left_out.append(pip_package)
            return
        self._pip = [p for p in self._pip if _name(p) != _name(pip_package)] + [pip_package.strip()]

    def add_conda_package(self, conda_package: str) -> None:
        """Add (or replace, by name) a conda package; ``python=X`` sets the python version."""
        if not isinstance(conda_package, str) or not conda_package.strip():
            raise SpecError("conda_package", f"must be a package spec such as 'numpy=1.26', got {conda_package!r}")
        if _name(conda_package) == "python":
            self.set_python_version(conda_package[len("python"):].lstrip("=<>~ "))
            return
        self._conda = [p for p in self._conda if _name(p) != _name(conda_package)] + [conda_package.strip()]

    def remove_pip_package(self, pip_package: str) -> None:
        """Remove a pip package by name."""
        self._pip = [p for p in self._pip if _name(p) != _name(pip_package)]

    def remove_conda_package(self, conda_package: str) -> None:
        """Remove a conda package by name."""
        self._conda = [p for p in self._conda if _name(p) != _name(conda_package)]

    def add_channel(self, channel: str) -> None:
        """Accept ``defaults``/``conda-forge``/``anaconda``; other channels are refused (use ``channel::package``)."""
        if channel not in DEFAULT_CHANNELS:
            raise NotSupportedError("channel", f"conda channel {channel!r}: torchyard environments take no channel list; "
                                               f"name it in the package instead, e.g. '{channel}::PACKAGE'")
        if channel not in self._channels:
            self._channels.append(channel)

    def remove_channel(self, channel: str) -> None:
        """Remove a channel."""
        self._channels = [c for c in self._channels if c != channel]

    def set_pip_option(self, pip_option: str) -> None:
        """Refused: pip's index settings come from pip's configuration."""
        raise NotSupportedError("pip_option", f"{pip_option!r}: torchyard environments take pip's index settings from "
                                              "pip's own configuration (pip.conf, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL)")

    def set_python_version(self, version: str) -> None:
        """The python version asked for (one this interpreter satisfies means this interpreter)."""
        self._python = str(version) or None

    def get_python_version(self) -> str | None:
        """The python version asked for, else this interpreter's."""
        return self._python or sys.version.split()[0]

    @property
    def pip_packages(self) -> Iterator[str]:
        """The pip requirements."""
        return iter(list(self._pip))

    @property
    def conda_packages(self) -> Iterator[str]:
        """The conda packages."""
        return iter(list(self._conda))

    @property
    def conda_channels(self) -> Iterator[str]:
        """The channels."""
        return iter(list(self._channels))

    @property
    def pip_options(self) -> Iterator[str]:
        """Always empty (pip options are refused)."""
        return iter([])

    # ---- files ----

    def as_dict(self) -> dict[str, Any]:
        """The conda environment file's content as a dict."""
        deps: list[Any] = [f"python={self.get_python_version()}", *self._conda]
        if self._pip:
            deps += ["pip", {"pip": list(self._pip)}]
        return {"name": self.name, "channels": list(self._channels) or ["conda-forge"], "dependencies": deps}

    def serialize_to_string(self) -> str:
        """The conda environment file (YAML)."""
        import yaml  # noqa: PLC0415

        return str(yaml.safe_dump(self.as_dict(), sort_keys=False))

    def save(self, path: str | None = None) -> str:
        """Write the conda environment file; its path."""
        target = path or os.path.join(os.getcwd(), "conda_dependencies.yml")
        with open(target, "w") as fh:
            fh.write(self.serialize_to_string())
        return target

    def save_to_file(self, base_directory: str, conda_file_path: str | None = None) -> str:
        """Write the conda environment file under ``base_directory``; its path."""
        return self.save(os.path.join(base_directory, conda_file_path or "conda_dependencies.yml"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CondaDependencies) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CondaDependencies(python={self._python!r}, conda={self._conda!r}, pip={self._pip!r})"


def load_yaml(path: str) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as err:
        raise SpecError("file_path", f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SpecError("file_path", f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpecError("file_path", f"{path}: expected a conda environment file (name, channels, dependencies)")
    return data
