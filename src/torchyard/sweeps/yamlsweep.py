"""``type: sweep`` YAML job files, in the style of Azure ML v2 sweep jobs.

```yaml
type: sweep
experiment: digits
trial:                       # the command job's fields (they may also sit at the top level)
  code: .
  command: python train.py --epochs 8 --lr ${{search_space.lr}}   # or entry_script + args
inputs: {}                   # top-level command-job fields apply to the trial
compute: local
search_space:
  lr: {type: loguniform, min_value: -6, max_value: -1}
  hidden: {type: choice, values: [16, 32, 64]}
sampling_algorithm: random   # grid | bayesian, or {type: random, seed: 7}
objective: {goal: maximize, primary_metric: accuracy}
early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 1, delay_evaluation: 2}
limits: {max_total_trials: 8, max_concurrent_trials: 2, timeout: 3600, trial_timeout: 600}
```

A search-space value not referenced as ``${{search_space.NAME}}`` is appended as ``--NAME value``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from torchyard.errors import SpecError
from torchyard.spec.job import JobSpec, convert_spec
from torchyard.spec.yamljob import JobFile, compile_job_file
from torchyard.sweeps.config import HyperDriveConfig
from torchyard.sweeps.expressions import SAMPLERS, ParameterExpression
from torchyard.sweeps.policies import EarlyTerminationPolicy

_SWEEP_KEYS = {"type", "search_space", "sampling_algorithm", "objective", "early_termination", "limits", "trial"}
_SWEEP_LIMITS = {"max_total_trials", "max_concurrent_trials", "timeout", "trial_timeout"}


class LoadedSweep(msgspec.Struct, frozen=True):
    spec: JobSpec  # the trial's job, before sampled values are added
    experiment: str | None
    tags: dict[str, str]
    config: Any  # HyperDriveConfig


def _mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(field, f"expected a mapping, got {type(value).__name__}")
    return value


def compile_sweep(data: dict[str, Any], base: str) -> LoadedSweep:
    """A parsed ``type: sweep`` YAML document → the trial's JobSpec and a HyperDriveConfig."""
    trial = dict(_mapping(data.get("trial") or {}, "trial"))
    job: dict[str, Any] = {k: v for k, v in data.items() if k not in _SWEEP_KEYS}
    for key, value in trial.items():
        if key == "type":
            continue
        if key in job and key in ("inputs", "environment_variables", "tags") and isinstance(value, dict):
            job[key] = {**_mapping(job[key], key), **value}
        else:
            job[key] = value
    limits = dict(_mapping(data.get("limits") or {}, "limits"))
    unknown = sorted(set(limits) - _SWEEP_LIMITS)
    if unknown:
        raise SpecError(f"limits.{unknown[0]}", f"unknown field; a sweep takes {', '.join(sorted(_SWEEP_LIMITS))}")
    for name in ("timeout", "trial_timeout"):
        value = limits.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            raise SpecError(f"limits.{name}", f"must be a positive number of seconds, got {value!r}")
    if limits.get("trial_timeout") is not None:
        job["limits"] = {**_mapping(job.get("limits") or {}, "trial.limits"), "timeout": limits["trial_timeout"]}
    loaded = compile_job_file(convert_spec({**job, "type": "command"}, JobFile), base)

    space_raw = _mapping(data.get("search_space"), "search_space") if "search_space" in data else None
    if not space_raw:
        raise SpecError("search_space", "is required: name → {type: choice|uniform|..., ...}")
    space = {
        str(name): ParameterExpression.from_dict(expr, f"search_space.{name}") for name, expr in space_raw.items()
    }
    algo = data.get("sampling_algorithm", "random")
    seed = None
    if isinstance(algo, dict):
        extra = sorted(set(algo) - {"type", "seed", "rule"})
        if extra:
            raise SpecError(f"sampling_algorithm.{extra[0]}", "unknown field")
        if algo.get("rule", "random") != "random":
            raise SpecError("sampling_algorithm.rule", f"only the 'random' rule is supported, got {algo['rule']!r}")
        seed = algo.get("seed")
        algo = algo.get("type", "random")
    sampler_cls = SAMPLERS.get(str(algo).lower())
    if sampler_cls is None:
        raise SpecError("sampling_algorithm", f"unknown algorithm {algo!r}; use random, grid or bayesian")
    try:
        sampling = sampler_cls({k: v for k, v in space.items()}, seed=seed)
    except SpecError as err:
        raise _renamed(err, {"seed": "sampling_algorithm.seed", "properties": "sampling_algorithm"}) from None

    objective = _mapping(data.get("objective") or {}, "objective")
    extra = sorted(set(objective) - {"goal", "primary_metric"})
    if extra:
        raise SpecError(f"objective.{extra[0]}", "unknown field; use goal and primary_metric")
    if not objective.get("primary_metric"):
        raise SpecError("objective.primary_metric", "is required: the metric the script logs")
    if "goal" not in objective:
        raise SpecError("objective.goal", "is required: maximize or minimize")
    try:
        policy = EarlyTerminationPolicy.from_dict(data.get("early_termination"), "early_termination")
    except SpecError as err:
        at = str(getattr(err, "field", ""))
        raise (err if at.startswith("early_termination") else _renamed(err, {at: f"early_termination.{at}"})) from None
    total = limits.get("max_total_trials")
    if total is None:
        raise SpecError("limits.max_total_trials", "is required")
    timeout = limits.get("timeout")
    try:
        config = HyperDriveConfig(
            hyperparameter_sampling=sampling,
            primary_metric_name=objective["primary_metric"],
            primary_metric_goal=objective["goal"],
            max_total_runs=total,
            max_concurrent_runs=limits.get("max_concurrent_trials"),
            max_duration_minutes=10080 if timeout is None else timeout / 60,
            policy=policy,
            run_config=loaded.spec,
        )
    except SpecError as err:
        raise _renamed(err, {
            "primary_metric_goal": "objective.goal",
            "primary_metric_name": "objective.primary_metric",
            "max_total_runs": "limits.max_total_trials",
            "max_concurrent_runs": "limits.max_concurrent_trials",
            "max_duration_minutes": "limits.timeout",
            "policy": "early_termination",
        }) from None
    return LoadedSweep(spec=loaded.spec, experiment=loaded.experiment, tags=loaded.tags, config=config)


def _renamed(err: SpecError, names: dict[str, str]) -> SpecError:
    """The SDK's field names as the YAML file spells them."""
    at = str(getattr(err, "field", ""))
    field = names.get(at) or re.sub(r"^parameter_space\['([^']*)'\]", r"search_space.\1", at)
    message = str(err)[len(at) + 2 :] if str(err).startswith(f"{at}: ") else str(err)
    return SpecError(field, message)
