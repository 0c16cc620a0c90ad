"""Every JobSpec field is reachable from each front end (PyTorch, ScriptRunConfig, YAML, the CLI),
or is listed here as not, with the reason. (The README once promised max_queue_seconds on both
estimators while neither took it.)"""

from __future__ import annotations

import inspect
from pathlib import Path

import msgspec
import pytest

from torchyard.cli.main import _parser
from torchyard.spec.estimators import PyTorch, ScriptRunConfig
from torchyard.spec.job import JobSpec
from torchyard.spec.jobfile import load_job_file

# field: (PyTorch keyword, ScriptRunConfig keyword, YAML key, `torchyard run` flag); None = not offered there
REACH: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "source_directory": ("source_directory", "source_directory", "code", "--source-dir"),
    "entry_script": ("entry_script", "script", "entry_script", "--entry"),
    "command": (None, "command", "command", None),  # the estimator runs a script; the CLI's `run` too
    "arguments": ("script_params", "arguments", "args", "args"),
    "compute_target": ("compute_target", "compute_target", "compute", "--compute"),
    "environment": ("pip_packages", "environment", "environment", None),  # CLI: a YAML file's environment
    "distribution": ("node_count", "distributed_job_config", "distribution", "--node-count"),
    "use_gpu": ("use_gpu", "use_gpu", "resources", "--use-gpu"),
    "environment_variables": ("environment_variables", "environment_variables", "environment_variables", "--env"),
    "inputs": ("inputs", "arguments", "inputs", None),  # CLI: data references need a YAML file
    "outputs": ("outputs", "outputs", "outputs", None),
    "max_run_duration_seconds": ("max_run_duration_seconds", "max_run_duration_seconds", "limits", "--max-run-duration"),
    "hang_timeout_seconds": ("hang_timeout_seconds", "hang_timeout_seconds", "limits", "--hang-timeout"),
    "max_queue_seconds": ("max_queue_seconds", "max_queue_seconds", "limits", "--max-queue"),
    "priority": ("priority", "priority", "priority", "--priority"),
    "preemptible": ("preemptible", "preemptible", "preemptible", "--preemptible"),
    "max_retries": ("max_retries", "max_retries", "retry", "--max-retries"),
    "retry_on": ("retry_on", "retry_on", "retry", "--retry-on"),
    "preempt_grace_seconds": ("preempt_grace_seconds", "preempt_grace_seconds", "retry", "--preempt-grace"),
    "display_name": (None, None, "display_name", None),  # Azure sets it on the run, not the estimator
    "description": (None, None, "description", None),
}


def test_every_field_is_listed() -> None:
    assert set(REACH) == {f.name for f in msgspec.structs.fields(JobSpec)}


@pytest.mark.parametrize("field", sorted(REACH))
def test_front_ends_take_what_the_table_says(field: str) -> None:
    py, src, _yaml, flag = REACH[field]
    if py:
        assert py in inspect.signature(PyTorch.__init__).parameters, f"PyTorch has no {py}"
    if src:
        assert src in inspect.signature(ScriptRunConfig.__init__).parameters, f"ScriptRunConfig has no {src}"
    if flag:
        run = _parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
        dests = {a.dest for a in run._actions} | {o for a in run._actions for o in a.option_strings}
        assert flag in dests, f"`torchyard run` has no {flag}"


@pytest.mark.parametrize("field, yaml_limit, flag", [
    ("max_run_duration_seconds", "timeout", "--max-run-duration"),
    ("hang_timeout_seconds", "hang_timeout", "--hang-timeout"),
    ("max_queue_seconds", "max_queue_seconds", "--max-queue"),
])
def test_limits_reach_the_spec(tmp_path: Path, field: str, yaml_limit: str, flag: str) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    assert getattr(PyTorch(source_directory=str(tmp_path), entry_script="train.py", **{field: 42.0}).spec, field) == 42.0
    assert getattr(ScriptRunConfig(str(tmp_path), "train.py", **{field: 42.0}).spec, field) == 42.0
    job = tmp_path / "job.yml"
    job.write_text(f"code: .\ncommand: python train.py\nlimits: {{{yaml_limit}: 42}}\n")
    assert getattr(load_job_file(str(job)).spec, field) == 42.0
    args = _parser().parse_args(["run", "--entry", "train.py", flag, "42"])
    assert args.max_queue == 42.0 if flag == "--max-queue" else True
