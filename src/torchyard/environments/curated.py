"""The curated environments: named package sets every workspace knows without registering them
(``Environment.get(ws, "torchyard-pytorch-2.13")``, ``Environment.list(ws)``), built on first use
through the environment cache like any other.

Azure's curated names (``AzureML-PyTorch-1.6-GPU``, ``AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu``,
``AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu``, ``azureml-acpt-pytorch-2.2-cuda12.1``,
``AzureML-sklearn-1.0-ubuntu20.04-py38-cpu``, ``AzureML-Minimal``) map to the nearest entry: the
PyTorch version in the name picks the catalogue's closest (ties to the newer); the older
``AzureML-PyTorch-X-GPU``/``-CPU`` family had Horovod, and maps to the ``-horovod`` variant. The
mapping is said in ``env.notes``, printed when the environment is looked up, and written into the
run's ``logs/environment.txt`` (the environment keeps Azure's name; its version is
``curated:<catalogue name>``).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from torchyard.spec.estimators import Environment

#: the usual packages of a PyTorch training environment, beside torch itself
COMMON = ("numpy", "scikit-learn", "pandas", "matplotlib", "tensorboard", "pillow")
#: torch versions of the catalogue (each ``torchyard-pytorch-V`` and ``torchyard-pytorch-V-horovod``)
TORCH_VERSIONS = {"2.11": "2.11.0", "2.12": "2.12.0", "2.13": "2.13.0"}


def catalogue() -> dict[str, dict[str, Any]]:
    """Curated name → ``{"pip": [...], "description": ...}``."""
    out: dict[str, dict[str, Any]] = {
        "torchyard-minimal": {"pip": [], "description": "the submitting interpreter as it is"},
        "torchyard-sklearn": {"pip": ["scikit-learn", "pandas", "numpy"], "description": "scikit-learn, pandas, numpy"},
    }
    for short, full in TORCH_VERSIONS.items():
        pip = [f"torch=={full}", *COMMON]
        out[f"torchyard-pytorch-{short}"] = {"pip": pip, "description": f"torch {full} with {', '.join(COMMON)}"}
        out[f"torchyard-pytorch-{short}-horovod"] = {
            "pip": [*pip, "horovod"],
            "description": f"torch {full}, {', '.join(COMMON)} and Horovod (built against that torch, cached)",
        }
    return out


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def nearest_torch(version: str) -> str:
    """The catalogue's torch version closest to ``version`` (``1.13`` → the oldest); ties to the newer."""
    want = _version_key(version)[:2]
    want_value = want[0] * 1000 + (want[1] if len(want) > 1 else 0)

    def distance(short: str) -> tuple[int, int]:
        major, minor = _version_key(short)
        return abs(major * 1000 + minor - want_value), -(major * 1000 + minor)

    return min(TORCH_VERSIONS, key=distance)


def azure_mapping(name: str) -> str | None:
    """The catalogue name an Azure curated name maps to; None when it is not one."""
    low = name.lower()
    if not low.startswith(("azureml-", "azureml_")):
        return None
    if "minimal" in low:
        return "torchyard-minimal"
    match = re.search(r"pytorch-(\d+(?:\.\d+)?)", low)
    if match:
        short = nearest_torch(match.group(1))
        old_family = re.match(r"^azureml-pytorch-\d+(\.\d+)?-(gpu|cpu)$", low) is not None
        return f"torchyard-pytorch-{short}" + ("-horovod" if old_family or "horovod" in low else "")
    if "sklearn" in low or "scikit" in low:
        return "torchyard-sklearn"
    if "pytorch" in low or "acpt" in low:
        return f"torchyard-pytorch-{max(TORCH_VERSIONS, key=_version_key)}"
    return None


def curated(name: str, announce: bool = True) -> Environment | None:
    """The curated environment ``name`` (a catalogue name or an Azure curated one), or None."""
    entries = catalogue()
    target = name if name in entries else azure_mapping(name)
    if target is None or target not in entries:
        return None
    env = Environment(target, "curated", pip=entries[target]["pip"])
    if target != name:  # Azure's name, kept, with the entry it maps to as its version (the run's log says it)
        env = Environment(name, f"curated:{target}", pip=entries[target]["pip"])
        asked = re.search(r"pytorch-(\d+(?:\.\d+)?)", name.lower())
        why = f" (no torch {asked.group(1)} here; torch {target.split('-')[2]} is the nearest)" \
            if asked and asked.group(1) not in target else ""
        note = f"Azure's curated environment {name!r} maps to torchyard's {target!r}{why}: {entries[target]['description']}"
        env.notes.append(note)
        if announce:
            print(f"torchyard: {note}", file=sys.stderr)
    return env


def names() -> list[str]:
    return sorted(catalogue())
