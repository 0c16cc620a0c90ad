"""Reading a YAML job file: a command job (spec/yamljob.py) or a ``type: sweep`` file
(sweeps/yamlsweep.py)."""

from __future__ import annotations

import os

from torchyard.spec.yamljob import LoadedJob, compile_command_job, read_yaml
from torchyard.sweeps.yamlsweep import LoadedSweep, compile_sweep


def load_job_file(path: str) -> LoadedJob | LoadedSweep:
    """Read and validate a YAML job file; paths in it are relative to the file. A ``type: sweep`` file
    gives a LoadedSweep, whose ``config`` is a HyperDriveConfig."""
    data = read_yaml(path)
    base = os.path.dirname(os.path.abspath(path))
    if data.get("type") == "sweep":
        return compile_sweep(data, base=base)
    return compile_command_job(data, base)
