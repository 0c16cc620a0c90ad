"""Python environments for runs: built once with uv, cached by content, layered over the base.

A run that asks for nothing uses the submitting interpreter. A run with ``pip_packages`` /
``pip_requirements_file`` gets a virtual environment made by ``uv venv --system-site-packages`` over
the base interpreter (so torch and everything else already there is reused, not reinstalled) with
the extra packages installed by ``uv pip install``. Its key hashes the base interpreter and its
version, the sorted package specs, the requirement files' content and the index options; builds run
under a file lock (concurrent runs build once), a finished build is published by writing its
``.ready`` marker last, and a failed build leaves nothing behind.

Conda packages need ``conda``, ``mamba`` or ``micromamba`` on PATH; without one a run asking for
them fails at submit naming what is missing.

**Horovod** (``pip_packages=["horovod"]``) is built from source against the run's torch: its build
sees the environment itself (uv's ``--no-build-isolation-package horovod``, so torch from the base is
found), with the PyTorch framework and the Gloo controller, and the MPI controller when ``mpicxx`` is
on PATH. Horovod 0.28.1's CMake pins ``-std=c++14`` while torch 2.x's headers need C++17; the build's
``CXX`` is a small wrapper (written into the environment's ``bin/``) that turns a C++11/14 standard
flag into ``-std=c++17`` and runs the real compiler, so Horovod's sources are left untouched. The
wrapper also drops the ``-g`` of Horovod's only release build type (CMake's RelWithDebInfo; kept
with ``HOROVOD_DEBUG=1``): the same optimized code, without the debug info that makes its torch
library ~65 MB and its build slower. The recipe's version and the MPI choice are part of the cache key.
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torchyard.errors import NotSupportedError, TorchyardError
from torchyard.spec.job import EnvironmentSpec

CONDA_EXECUTABLES = ("micromamba", "mamba", "conda")
HOROVOD_RECIPE = 2  # part of the cache key of environments with horovod: bump when the recipe changes
CXX17_WRAPPER = "torchyard-cxx17"
READY = ".ready"
CURATED_PREFIX = "curated"  # the version of a curated environment; "curated:NAME" when mapped from Azure's NAME
META = ".torchyard-env.json"


class EnvironmentBuildError(TorchyardError):
    """Building a run's environment failed; the message holds the installer's own words."""


@dataclass(frozen=True)
class ResolvedEnvironment:
    python: str
    key: str | None  # None: the submitting interpreter as it is
    cached: bool
    path: str | None = None


def conda_executable() -> str | None:
    for name in CONDA_EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_supported(env: EnvironmentSpec) -> None:
    """Submit-time check: what this machine cannot build fails now, naming what is missing."""
    if (env.conda_packages or env.conda_dependencies_file) and conda_executable() is None:
        field = "conda_packages" if env.conda_packages else "conda_dependencies_file"
        raise NotSupportedError(
            field, "conda environments need conda, mamba or micromamba on PATH, and none was found; "
            "install one of them, or use pip_packages instead"
        )
    for field in ("pip_requirements_file", "conda_dependencies_file"):
        path = getattr(env, field)
        if path and not os.path.isfile(path):
            raise NotSupportedError(field, f"{path!r} does not exist")
    if env.python and env.python != sys.version.split()[0] and not (env.conda_packages or env.conda_dependencies_file):
        raise NotSupportedError(
            "python", f"python {env.python} was asked for, but pip environments layer over this interpreter "
            f"({sys.version.split()[0]}); use a conda environment for another Python"
        )


def index_options() -> list[str]:
    """pip's index settings (find-links, index URLs, constraints) as uv arguments, so uv resolves
    from the same places pip does on this machine."""
    parser = configparser.ConfigParser()
    files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.config/pip/pip.conf"),
             os.path.expanduser("~/.pip/pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    parser.read([f for f in files if os.path.isfile(f)])
    settings: dict[str, str] = {}
    for section in ("global", "install"):
        if parser.has_section(section):
            settings.update(parser.items(section))
    for name in ("find-links", "index-url", "extra-index-url", "constraint"):
        env_value = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env_value:
            settings[name] = env_value
    args: list[str] = []
    for name, flag in (("find-links", "--find-links"), ("index-url", "--index-url"),
                       ("extra-index-url", "--extra-index-url"), ("constraint", "--constraint")):
        for value in settings.get(name, "").split():
            if name in ("find-links", "constraint") and "://" not in value and not os.path.exists(value):
                continue
            args += [flag, value]
    if "--extra-index-url" in args:
        args += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best match across every index
    return args


def environment_key(env: EnvironmentSpec, base_python: str | None = None) -> str:
    base = os.path.realpath(base_python or sys.executable)
    h = hashlib.sha256()
    parts: dict[str, Any] = {
        "base": base,
        # a virtual environment's interpreter is a link to its base one: the venv itself counts
        "prefix": sys.prefix if base_python is None else os.path.dirname(os.path.dirname(base_python)),
        "version": sys.version,
        "pip": sorted(env.pip_packages),
        "conda": sorted(env.conda_packages),
        "python": env.python,
        "index": index_options(),
    }
    if needs_horovod(env):
        parts["horovod"] = {"recipe": HOROVOD_RECIPE, "mpi": _mpi_compiler() is not None}
        if os.environ.get("HOROVOD_DEBUG") == "1":  # a Debug build, with its debug info: another build
            parts["horovod"]["debug"] = True
    for field in ("pip_requirements_file", "conda_dependencies_file"):
        path = getattr(env, field)
        if path:
            with open(path, "rb") as fh:
                parts[field] = hashlib.sha256(fh.read()).hexdigest()
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()[:24]


def conda_create_argv(exe: str, prefix: str, env: EnvironmentSpec) -> list[str]:
    """The command that builds a conda environment at ``prefix`` (pip packages go in afterwards)."""
    if env.conda_dependencies_file:
        return [exe, "env", "create", "--yes", "--prefix", prefix, "--file", env.conda_dependencies_file]
    python = f"python={env.python}" if env.python else f"python={sys.version_info.major}.{sys.version_info.minor}"
    return [exe, "create", "--yes", "--prefix", prefix, python, *env.conda_packages]


def _run_logged(argv: list[str], log: Any, tick: Callable[[], None], env: dict[str, str] | None = None) -> int:
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            try:
                tick()
            except BaseException:
                proc.kill()
                proc.wait()
                raise


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def planned_python(workspace: str, env: EnvironmentSpec) -> dict[str, Any]:
    """Where ``env``'s interpreter is (or will be once built): ``{"python", "key", "cached"}``; the
    submitting interpreter (key None) for the default environment. Builds nothing."""
    if env.user_managed or env.is_default:
        return {"python": sys.executable, "key": None, "cached": True}
    key = environment_key(env)
    path = os.path.join(workspace, "envs", key)
    return {"python": os.path.join(path, "bin", "python"), "key": key,
            "cached": os.path.exists(os.path.join(path, READY))}


def resolve(
    workspace: str,
    env: EnvironmentSpec,
    log_path: str,
    tick: Callable[[], None] = lambda: None,
) -> ResolvedEnvironment:
    """The interpreter a run uses: the submitting one, or a cached (built now if need be) environment.
    ``tick`` is called while a build runs (heartbeats, cancel checks); it may raise to abort."""
    if env.user_managed or env.is_default:
        return ResolvedEnvironment(python=sys.executable, key=None, cached=True)
    key = environment_key(env)
    root = os.path.join(workspace, "envs")
    path = os.path.join(root, key)
    python = os.path.join(path, "bin", "python")
    if env.version and env.version.startswith(CURATED_PREFIX) and env.version != CURATED_PREFIX:
        # an Azure curated name mapped to the catalogue (environments/curated.py): the run's log says so
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "a") as note:
            note.write(f"torchyard: Azure's curated environment {env.name!r} is torchyard's curated "
                       f"{env.version[len(CURATED_PREFIX) + 1:]!r} (the nearest in the catalogue)\n")
    if os.path.exists(os.path.join(path, READY)):
        os.utime(os.path.join(path, READY))
        return ResolvedEnvironment(python=python, key=key, cached=True, path=path)
    os.makedirs(root, exist_ok=True)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(os.path.join(root, f"{key}.lock"), "w") as lock, open(log_path, "ab") as log:
        log.write(f"torchyard: environment {key}: waiting for the build lock\n".encode())
        log.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.exists(os.path.join(path, READY)):
                log.write(b"torchyard: built meanwhile by another run; using the cache\n")
                return ResolvedEnvironment(python=python, key=key, cached=True, path=path)
            shutil.rmtree(path, ignore_errors=True)  # a crashed earlier build
            started = time.time()
            try:
                _build(env, path, log, tick)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            with open(os.path.join(path, META), "w") as fh:
                json.dump({"key": key, "spec": env_dict(env), "built": time.time()}, fh)
            with open(os.path.join(path, READY), "w") as fh:
                fh.write(f"{time.time() - started:.2f}\n")
            log.write(f"torchyard: environment {key} built in {time.time() - started:.1f} s\n".encode())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return ResolvedEnvironment(python=python, key=key, cached=False, path=path)


def env_dict(env: EnvironmentSpec) -> dict[str, Any]:
    import msgspec  # noqa: PLC0415

    data: dict[str, Any] = msgspec.to_builtins(env)
    return data


def _uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    local = os.path.join(os.path.dirname(sys.executable), "uv")
    if os.path.exists(local):
        return local
    raise EnvironmentBuildError("uv is not installed; `pip install uv` (it comes with torchyard's dependencies)")


def _build(env: EnvironmentSpec, path: str, log: Any, tick: Callable[[], None]) -> None:
    uv = _uv()
    python = os.path.join(path, "bin", "python")
    if env.conda_packages or env.conda_dependencies_file:
        exe = conda_executable()
        if exe is None:
            raise EnvironmentBuildError("conda, mamba or micromamba is needed and none is on PATH")
        if _run_logged(conda_create_argv(exe, path, env), log, tick):
            raise EnvironmentBuildError(f"conda could not create the environment:\n{_tail(log.name)}")
    elif _run_logged([uv, "venv", "--quiet", "--system-site-packages", "--python", sys.executable, path], log, tick):
        raise EnvironmentBuildError(f"uv could not create the virtual environment:\n{_tail(log.name)}")
    else:
        _see_base_venv(path)
    install = [*env.pip_packages]
    if env.pip_requirements_file:
        install += ["-r", env.pip_requirements_file]
    if install:
        argv = [uv, "pip", "install", "--python", python, *index_options()]
        build_env = None
        if needs_horovod(env):
            # built here, against this environment's torch; never a wheel uv cached from another build
            # --verbose: the compiler's progress shows in logs/environment.txt during the long build
            argv += ["--no-build-isolation-package", "horovod", "--refresh-package", "horovod", "--verbose"]
            build_env = horovod_build_env(path)
            log.write(b"torchyard: building horovod against this environment's torch (" + b" ".join(
                f"{k}={build_env[k]}".encode() for k in sorted(build_env) if k.startswith("HOROVOD_")) + b")\n")
        if _run_logged([*argv, *install], log, tick, build_env):
            raise EnvironmentBuildError(f"installing {' '.join(install)} failed:\n{_tail(log.name)}")


def _see_base_venv(path: str) -> None:
    """When torchyard runs from a virtual environment, ``--system-site-packages`` shows the layered
    environment the *base* interpreter's packages, not the venv's (where torch and torchyard are).
    A ``.pth`` file adds the submitting venv's site folders (with their own ``.pth`` files, so
    editable installs work) after the layered environment's own packages and before the system's."""
    if sys.prefix == sys.base_prefix:
        return
    import site  # noqa: PLC0415

    base_sites = [p for p in site.getsitepackages() if p.startswith(sys.prefix + os.sep)]
    lib = os.path.join(path, "lib")
    try:  # the layered environment's own site folder (its python is a link to the same base binary)
        own_sites = [os.path.join(lib, d, "site-packages") for d in os.listdir(lib) if d.startswith("python")]
    except OSError:
        own_sites = []
    for own in own_sites:
        if os.path.isdir(own) and not any(os.path.exists(b) and os.path.samefile(own, b) for b in base_sites):
            with open(os.path.join(own, "_torchyard_base_venv.pth"), "w") as fh:
                fh.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in base_sites) + "\n")
def requirement_name(spec: str) -> str:
    """The normalized project name of a requirement such as ``Horovod[pytorch]==0.28.1``."""
    return re.split(r"[\s<>=!~;\[@(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def needs_horovod(env: EnvironmentSpec) -> bool:
    return any(requirement_name(p) == "horovod" for p in env.pip_packages)


def _mpi_compiler() -> str | None:
    return shutil.which("mpicxx") or shutil.which("mpic++")


def horovod_build_env(path: str) -> dict[str, str]:
    """The environment of the install that builds Horovod: frameworks and controllers chosen, and
    ``CXX`` the C++17 wrapper (see the module docstring). Settings the user exported win."""
    real = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "g++"
    bindir = os.path.join(path, "bin")
    os.makedirs(bindir, exist_ok=True)
    wrapper = os.path.join(bindir, CXX17_WRAPPER)
    with open(wrapper, "w") as fh:
        fh.write(cxx17_wrapper_script(real, drop_debug_info=os.environ.get("HOROVOD_DEBUG") != "1"))
    os.chmod(wrapper, 0o755)
    env = dict(os.environ)
    defaults = {
        "HOROVOD_WITH_PYTORCH": "1",
        "HOROVOD_WITH_GLOO": "1",
        "HOROVOD_WITHOUT_TENSORFLOW": "1",
        "HOROVOD_WITHOUT_MXNET": "1",
        ("HOROVOD_WITH_MPI" if _mpi_compiler() else "HOROVOD_WITHOUT_MPI"): "1",
        "MAKEFLAGS": f"-j{os.cpu_count() or 1}",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    env["CXX"] = wrapper
    return env


def cxx17_wrapper_script(real_compiler: str, drop_debug_info: bool = False) -> str:
    """A POSIX sh compiler wrapper: ``-std=c++11``/``c++14`` (and the gnu++ forms) become
    ``-std=c++17``, and with ``drop_debug_info`` a bare ``-g`` is left out; every other argument is
    passed on unchanged to ``real_compiler``."""
    return (
        "#!/bin/sh\n"
        "# torchyard: Horovod's CMake pins C++14, torch's headers need C++17 (sources untouched)\n"
        "for a do\n"
        "  shift\n"
        "  case \"$a\" in\n"
        "    -std=c++11|-std=c++14|-std=gnu++11|-std=gnu++14) a=-std=c++17 ;;\n"
        + ("    -g) continue ;;\n" if drop_debug_info else "")
        + "  esac\n"
        "  set -- \"$@\" \"$a\"\n"
        "done\n"
        f"exec {shlex.quote(real_compiler)} \"$@\"\n"
    )


def _site_dirs(python: str) -> list[str]:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import sysconfig  # noqa: PLC0415

        paths = sysconfig.get_paths()
        return sorted({paths["purelib"], paths["platlib"]})
    root = os.path.dirname(os.path.dirname(python))
    lib = os.path.join(root, "lib")
    try:
        return sorted(os.path.join(lib, d, "site-packages") for d in os.listdir(lib) if d.startswith("python"))
    except OSError:
        return []


def freeze_cache_path(workspace: str, python: str) -> str:
    """Where the package list of ``python`` is cached; the name changes whenever its site-packages
    folders change (installing or removing a package changes their entries)."""
    h = hashlib.sha256(os.path.realpath(python).encode())
    for d in _site_dirs(python):
        try:
            h.update(f"{d}:{os.stat(d).st_mtime_ns}".encode())
        except OSError:
            continue
    return os.path.join(workspace, "envs", "freeze", h.hexdigest()[:24] + ".json")


def freeze_argv(python: str) -> list[str]:
    """``uv pip freeze`` of ``python``'s environment, never coloured (a run submitted from a Jupyter
    kernel inherits its FORCE_COLOR, which would put terminal codes into the package names)."""
    return [_uv(), "pip", "freeze", "--color", "never", "--python", python]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain_packages(lines: list[str]) -> list[str]:
    """Package lines without terminal codes (what an older, coloured freeze left in a cache)."""
    return [_ANSI.sub("", line) for line in lines]


def list_cached(workspace: str) -> list[dict[str, Any]]:
    root = os.path.join(workspace, "envs")
    out = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    for name in names:
        ready = os.path.join(root, name, READY)
        if not os.path.exists(ready):
            continue
        try:
            with open(os.path.join(root, name, META)) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            meta = {}
        out.append({"key": name, "path": os.path.join(root, name), "last_used": os.path.getmtime(ready),
                    "spec": meta.get("spec", {})})
    return out


def prune(workspace: str, older_than_seconds: float, in_use: set[str]) -> list[str]:
    """Remove cached environments unused for ``older_than_seconds``, never one in ``in_use``."""
    removed = []
    now = time.time()
    for entry in list_cached(workspace):
        if entry["key"] in in_use or now - entry["last_used"] < older_than_seconds:
            continue
        lock_path = os.path.join(workspace, "envs", f"{entry['key']}.lock")
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built or checked right now
            os.unlink(os.path.join(entry["path"], READY))
            shutil.rmtree(entry["path"], ignore_errors=True)
            fcntl.flock(lock, fcntl.LOCK_UN)
        removed.append(entry["key"])
    return removed
