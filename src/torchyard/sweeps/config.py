"""HyperDriveConfig: what to sweep, how to judge trials, and the limits.

Sampled values reach the script as arguments: a key is used as the flag (``"--lr"``, or ``"lr"`` which
becomes ``--lr``); an argument already in ``script_params``/``arguments`` with the same flag (``--lr 0.1``
or ``--lr=0.1``) is replaced. A ``${{search_space.lr}}`` placeholder in the arguments or in a YAML
``command`` is substituted in place instead (Azure ML v2's form).
"""

from __future__ import annotations

import enum
import json
import re
import shlex
from typing import Any

from torchyard.errors import SpecError
from torchyard.spec.job import JobSpec
from torchyard.sweeps.expressions import BayesianParameterSampling, HyperParameterSampling
from torchyard.sweeps.policies import EarlyTerminationPolicy, NoTerminationPolicy

_SEARCH_REF = re.compile(r"\$\{\{\s*search_space\.([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class PrimaryMetricGoal(enum.StrEnum):
    """Whether the primary metric should be maximized or minimized."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"

    @classmethod
    def parse(cls, value: Any, field: str = "primary_metric_goal") -> PrimaryMetricGoal:
        if isinstance(value, PrimaryMetricGoal):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise SpecError(field, f"must be PrimaryMetricGoal.MAXIMIZE or MINIMIZE ('maximize'/'minimize'), got {value!r}")


def _count(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(field, f"must be an integer from {lo} to {hi}, got {value!r}")
    return value


class HyperDriveConfig:
    """A sweep: ``run_config`` (a ``PyTorch`` estimator, a ``ScriptRunConfig`` or a JobSpec) run once per
    sampled point, as child runs of one parent run.

    ``max_total_runs`` (1-1000) trials at most, ``max_concurrent_runs`` at once (default: all),
    ``max_duration_minutes`` for the whole sweep (then running trials are canceled; default 10080,
    a week). ``policy`` stops poor trials early (default :class:`NoTerminationPolicy`).
    """

    __torchyard_sweep__ = True

    def __init__(
        self,
        hyperparameter_sampling: HyperParameterSampling | None = None,
        primary_metric_name: str | None = None,
        primary_metric_goal: PrimaryMetricGoal | str | None = None,
        max_total_runs: int | None = None,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: float = 10080,
        policy: EarlyTerminationPolicy | None = None,
        estimator: Any = None,
        run_config: Any = None,
        *,
        tags: dict[str, str] | None = None,
    ) -> None:
        if estimator is not None and run_config is not None:
            raise SpecError("run_config", "give run_config or estimator, not both")
        source = run_config if run_config is not None else estimator
        if source is None:
            raise SpecError("run_config", "is required: a PyTorch estimator or a ScriptRunConfig")
        spec = source if isinstance(source, JobSpec) else getattr(source, "to_job_spec", lambda: None)()
        if not isinstance(spec, JobSpec):
            raise SpecError("run_config", f"expected a PyTorch estimator or a ScriptRunConfig, got {type(source).__name__}")
        self.trial_spec: JobSpec = spec
        if not isinstance(hyperparameter_sampling, HyperParameterSampling):
            raise SpecError(
                "hyperparameter_sampling",
                "is required: RandomParameterSampling, GridParameterSampling or BayesianParameterSampling",
            )
        self.hyperparameter_sampling = hyperparameter_sampling
        if not isinstance(primary_metric_name, str) or not primary_metric_name:
            raise SpecError("primary_metric_name", "is required: the metric the script logs, e.g. 'accuracy'")
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = PrimaryMetricGoal.parse(primary_metric_goal)
        if max_total_runs is None:
            raise SpecError("max_total_runs", "is required (1 to 1000)")
        self.max_total_runs = _count(max_total_runs, "max_total_runs", 1, 1000)
        size = hyperparameter_sampling.size()
        if size is not None:
            self.max_total_runs = min(self.max_total_runs, size)
        self.max_concurrent_runs = (
            self.max_total_runs if max_concurrent_runs is None
            else _count(max_concurrent_runs, "max_concurrent_runs", 1, 1000)
        )
        if isinstance(max_duration_minutes, bool) or not isinstance(max_duration_minutes, int | float) \
                or not max_duration_minutes > 0:
            raise SpecError("max_duration_minutes", f"must be a positive number, got {max_duration_minutes!r}")
        self.max_duration_minutes = float(max_duration_minutes)
        if policy is None:
            policy = NoTerminationPolicy()
        if not isinstance(policy, EarlyTerminationPolicy):
            raise SpecError("policy", f"expected BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy or "
                                      f"NoTerminationPolicy, got {type(policy).__name__}")
        if isinstance(hyperparameter_sampling, BayesianParameterSampling) and not isinstance(policy, NoTerminationPolicy):
            raise SpecError("policy", "Bayesian sampling takes no early termination policy (as in Azure ML); "
                                      "use NoTerminationPolicy or random sampling")
        self.policy = policy
        self.tags = dict(tags or {})
        # a ${{search_space.X}} the space lacks fails here, not in the controller
        trial_arguments(spec, {key: 0 for key in hyperparameter_sampling.parameter_space})

    @property
    def maximize(self) -> bool:
        """Whether the primary metric's goal is MAXIMIZE."""
        return self.primary_metric_goal is PrimaryMetricGoal.MAXIMIZE

    def to_dict(self, seed: int) -> dict[str, Any]:
        """The stored definition of the sweep (the parent run's ``spec``)."""
        return {
            "kind": "sweep",
            "trial": self.trial_spec.to_dict(),
            "sampling": {**self.hyperparameter_sampling.to_dict(), "seed": seed},
            "policy": self.policy.to_dict(),
            "primary_metric_name": self.primary_metric_name,
            "primary_metric_goal": self.primary_metric_goal.value,
            "max_total_runs": self.max_total_runs,
            "max_concurrent_runs": self.max_concurrent_runs,
            "max_duration_minutes": self.max_duration_minutes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HyperDriveConfig:
        """The configuration as stored with a sweep (the inverse of its ``to_dict``)."""
        return cls(
            hyperparameter_sampling=HyperParameterSampling.from_dict(data["sampling"]),
            primary_metric_name=data["primary_metric_name"],
            primary_metric_goal=data["primary_metric_goal"],
            max_total_runs=data["max_total_runs"],
            max_concurrent_runs=data["max_concurrent_runs"],
            max_duration_minutes=data["max_duration_minutes"],
            policy=EarlyTerminationPolicy.from_dict(data["policy"]),
            run_config=JobSpec.from_json(json.dumps(data["trial"])),
        )

    def __repr__(self) -> str:
        return (
            f"HyperDriveConfig(sampling={self.hyperparameter_sampling!r}, policy={self.policy!r}, "
            f"primary_metric={self.primary_metric_name!r} {self.primary_metric_goal.value}, "
            f"max_total_runs={self.max_total_runs}, max_concurrent_runs={self.max_concurrent_runs})"
        )


def _flag(key: str) -> str:
    return key if key.startswith("-") else f"--{key}"


def _value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


def _drop_flag(args: list[str], flag: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == flag:
            nxt = args[i + 1] if i + 1 < len(args) else None
            i += 2 if nxt is not None and (not nxt.startswith("-") or _NUMBER.match(nxt)) else 1
            continue
        if a.startswith(flag + "="):
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def trial_arguments(spec: JobSpec, values: dict[str, Any]) -> JobSpec:
    """``spec`` with the sampled ``values`` as script arguments (see the module docstring)."""
    import msgspec  # noqa: PLC0415

    by_name = {key.lstrip("-"): key for key in values}
    used: set[str] = set()

    def fill(text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in by_name:
                raise SpecError("search_space", f"the job refers to search_space.{name}, which is not in the search space")
            used.add(name)
            return _value(values[by_name[name]])

        return _SEARCH_REF.sub(repl, text)

    if spec.command is not None:
        command = fill(spec.command)
        extra = [f"{_flag(k)} {shlex.quote(_value(v))}" for k, v in values.items() if k.lstrip("-") not in used]
        return msgspec.structs.replace(spec, command=" ".join([command, *extra]))
    args = [fill(a) for a in spec.arguments]
    for key, value in values.items():
        if key.lstrip("-") in used:
            continue
        flag = _flag(key)
        args = _drop_flag(args, flag)
        args.extend([flag, _value(value)])
    return msgspec.structs.replace(spec, arguments=tuple(args))
