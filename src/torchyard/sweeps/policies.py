"""Early-termination policies, with Azure ML HyperDrive's semantics.

Common rules (Azure's):

- **One interval is one logging of the primary metric** by a trial (rank 0's values, in the order
  logged): the trial's *k*-th value is its value at interval *k*.
- A policy **is applied at interval N** when ``N`` is a multiple of ``evaluation_interval`` and
  ``N >= delay_evaluation``. A trial that logged several values between two looks of the controller
  is evaluated at each such interval in turn.
- "Best" and "worse" follow the sweep's goal: higher is better for ``MAXIMIZE``, lower for
  ``MINIMIZE``.
- At interval N every trial is seen **only up to its interval N** (its first N values), even when it
  has logged more; that is fair to young trials.
- A trial's *best metric up to N* is the best of its first N values.

Each policy's :meth:`~EarlyTerminationPolicy.evaluate` returns the reason to stop the trial (which
becomes its Canceled status's detail and ``details["cancel_reason"]``), or None.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torchyard.errors import SpecError

Histories = Mapping[str, Sequence[float]]


def _best(values: Sequence[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def _worse(a: float, b: float, maximize: bool) -> bool:
    """a is strictly worse than b."""
    return a < b if maximize else a > b


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(field, f"must be an integer of at least {minimum}, got {value!r}")
    return value


class EarlyTerminationPolicy:
    """Base of the policies: when it applies, and ``evaluate`` at an interval."""

    name = ""

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 0) -> None:
        self.evaluation_interval = _int(evaluation_interval, "evaluation_interval", 1)
        self.delay_evaluation = _int(delay_evaluation, "delay_evaluation", 0)

    def applies_at(self, interval: int) -> bool:
        """Azure: every multiple of ``evaluation_interval`` at or after ``delay_evaluation``."""
        return interval >= 1 and interval % self.evaluation_interval == 0 and interval >= self.delay_evaluation

    def evaluate(
        self, run_id: str, interval: int, histories: Histories, maximize: bool, finished: Collection[str] = ()
    ) -> str | None:
        """The reason to stop ``run_id`` at ``interval`` (its ``interval``-th logged value), or None.

        ``histories`` maps every trial of the sweep (this one included, finished ones too) to its primary
        metric values in the order logged; ``finished`` names the trials that have ended."""
        if not self.applies_at(interval) or len(histories.get(run_id, ())) < interval:
            return None
        return self._evaluate(run_id, interval, histories, maximize, finished)

    def _evaluate(
        self, run_id: str, interval: int, histories: Histories, maximize: bool, finished: Collection[str]
    ) -> str | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-able dict (``type`` plus its settings), as stored with the sweep."""
        return {"type": self.name, "evaluation_interval": self.evaluation_interval,
                "delay_evaluation": self.delay_evaluation}

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None, field: str = "policy") -> EarlyTerminationPolicy:
        """``{type: bandit|median_stopping|truncation_selection|none, ...}`` (Azure ML v2's names)."""
        if data is None:
            return NoTerminationPolicy()
        if not isinstance(data, Mapping) or "type" not in data:
            raise SpecError(field, "expected {type: bandit|median_stopping|truncation_selection, ...}")
        kind = str(data["type"]).lower().replace("-", "_")
        cls = POLICIES.get(kind)
        if cls is None:
            raise SpecError(f"{field}.type", f"unknown policy {data['type']!r}; use {', '.join(sorted(POLICIES))}")
        kwargs = {k: v for k, v in data.items() if k != "type"}
        allowed = set(cls.FIELDS)
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise SpecError(f"{field}.{unknown[0]}", f"unknown field for a {kind} policy")
        for name in cls.REQUIRED:
            if kwargs.get(name) is None:
                raise SpecError(f"{field}.{name}", f"is required for a {kind} policy")
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    FIELDS: tuple[str, ...] = ("evaluation_interval", "delay_evaluation")
    REQUIRED: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class NoTerminationPolicy(EarlyTerminationPolicy):
    """Every trial runs to its end (the default)."""

    name = "none"
    FIELDS = ()

    def __init__(self) -> None:
        super().__init__(1, 0)

    def applies_at(self, interval: int) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-able dict: ``{"type": "none"}``-style, as stored with the sweep."""
        return {"type": self.name}


class BanditPolicy(EarlyTerminationPolicy):
    """Stop a trial whose best metric is not within the slack of the best trial's.

    At interval N, let ``Y`` be the trial's best metric up to N and ``B`` the best metric up to N of
    the best trial of the sweep (every trial, this one included, seen up to its interval N). The trial
    is stopped when, for ``MAXIMIZE``:

    - ``slack_factor``: ``Y * (1 + slack_factor) < B``, i.e. ``Y < B / (1 + slack_factor)`` (Azure's
      example: slack_factor 0.2 and a best of 0.8 stop any trial below 0.8 / 1.2 = 0.667);
    - ``slack_amount``: ``Y < B - slack_amount``;

    and for ``MINIMIZE``, mirrored: ``Y > B * (1 + slack_factor)``, or ``Y > B + slack_amount``.
    Ratios assume a positive metric, as Azure's do. Exactly one of the two slacks must be given.
    """

    name = "bandit"
    FIELDS = ("evaluation_interval", "slack_factor", "slack_amount", "delay_evaluation")

    def __init__(
        self,
        evaluation_interval: int = 1,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        delay_evaluation: int = 0,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation)
        if (slack_factor is None) == (slack_amount is None):
            raise SpecError("slack_factor", "give exactly one of slack_factor and slack_amount")
        for field, value in (("slack_factor", slack_factor), ("slack_amount", slack_amount)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf")
            ):
                raise SpecError(field, f"must be a finite number of at least 0, got {value!r}")
        self.slack_factor = None if slack_factor is None else float(slack_factor)
        self.slack_amount = None if slack_amount is None else float(slack_amount)

    def _evaluate(
        self, run_id: str, interval: int, histories: Histories, maximize: bool, finished: Collection[str]
    ) -> str | None:
        mine = _best(histories[run_id][:interval], maximize)
        bests = [_best(h[:interval], maximize) for h in histories.values() if h]
        top = _best(bests, maximize)
        if self.slack_factor is not None:
            sf = self.slack_factor
            stop = mine * (1 + sf) < top if maximize else mine > top * (1 + sf)
            how = f"slack_factor={sf:g}"
            bound = top / (1 + sf) if maximize else top * (1 + sf)
        else:
            sa = float(self.slack_amount or 0.0)
            stop = mine < top - sa if maximize else mine > top + sa
            how = f"slack_amount={sa:g}"
            bound = top - sa if maximize else top + sa
        if not stop:
            return None
        return (
            f"early terminated by BanditPolicy at interval {interval}: best metric {_fmt(mine)} is "
            f"{'below' if maximize else 'above'} {_fmt(bound)}, outside {how} of the best trial's {_fmt(top)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-able dict (``type`` plus its settings), as stored with the sweep."""
        out = super().to_dict()
        if self.slack_factor is not None:
            out["slack_factor"] = self.slack_factor
        else:
            out["slack_amount"] = self.slack_amount
        return out


class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Stop a trial whose best metric is worse than the median of the trials' running averages.

    At interval N: each trial that has reached interval N (this one included, finished ones too) has a
    running average, the mean of its values at intervals 1..N. The trial is stopped when its best
    metric up to N is strictly worse than the median of those averages (Azure: "a run will be canceled
    at interval N if its best primary metric reported up to interval N is worse than the median of the
    running averages for intervals 1:N across all runs"). ``delay_evaluation`` defaults to 5, Azure's
    conservative setting (its documentation reports 25-35% savings with no loss).
    """

    name = "median_stopping"

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 5) -> None:
        super().__init__(evaluation_interval, delay_evaluation)

    def _evaluate(
        self, run_id: str, interval: int, histories: Histories, maximize: bool, finished: Collection[str]
    ) -> str | None:
        mine = _best(histories[run_id][:interval], maximize)
        averages = [statistics.fmean(h[:interval]) for h in histories.values() if len(h) >= interval]
        median = statistics.median(averages)
        if not _worse(mine, median, maximize):
            return None
        return (
            f"early terminated by MedianStoppingPolicy at interval {interval}: best metric {_fmt(mine)} is "
            f"worse than {_fmt(median)}, the median of {len(averages)} trials' running averages"
        )


class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """Stop a trial that ranks in the lowest ``truncation_percentage`` percent at an interval.

    At interval N the trials that have reached interval N (finished ones too, unless
    ``exclude_finished_jobs``) are ranked by their best metric up to N; of these ``n`` trials, the
    ``floor(n * truncation_percentage / 100)`` worst are in the truncated part, and the trial is stopped
    when it is among them. Ties count in the trial's favour (it is stopped only when at least
    ``n - k`` trials are strictly better). With ``n * truncation_percentage < 100`` nothing is stopped.
    """

    name = "truncation_selection"
    FIELDS = ("truncation_percentage", "evaluation_interval", "delay_evaluation", "exclude_finished_jobs")
    REQUIRED = ("truncation_percentage",)

    def __init__(
        self,
        truncation_percentage: int,
        evaluation_interval: int = 1,
        delay_evaluation: int = 0,
        exclude_finished_jobs: bool = False,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation)
        pct = truncation_percentage
        if isinstance(pct, bool) or not isinstance(pct, int) or not 1 <= pct <= 99:
            raise SpecError("truncation_percentage", f"must be an integer from 1 to 99, got {pct!r}")
        self.truncation_percentage = pct
        if not isinstance(exclude_finished_jobs, bool):
            raise SpecError("exclude_finished_jobs", f"must be true or false, got {exclude_finished_jobs!r}")
        self.exclude_finished_jobs = exclude_finished_jobs

    def _evaluate(
        self, run_id: str, interval: int, histories: Histories, maximize: bool, finished: Collection[str]
    ) -> str | None:
        mine = _best(histories[run_id][:interval], maximize)
        others = [
            _best(h[:interval], maximize)
            for rid, h in histories.items()
            if rid != run_id and len(h) >= interval and not (self.exclude_finished_jobs and rid in finished)
        ]
        n = len(others) + 1
        k = n * self.truncation_percentage // 100
        better = sum(1 for v in others if _worse(mine, v, maximize))
        if k == 0 or better < n - k:
            return None
        return (
            f"early terminated by TruncationSelectionPolicy at interval {interval}: best metric {_fmt(mine)} "
            f"ranks {better + 1} of {n}, in the lowest {self.truncation_percentage}%"
        )

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-able dict (``type`` plus its settings), as stored with the sweep."""
        return {**super().to_dict(), "truncation_percentage": self.truncation_percentage,
                "exclude_finished_jobs": self.exclude_finished_jobs}


POLICIES: dict[str, type[EarlyTerminationPolicy]] = {
    "none": NoTerminationPolicy,
    "bandit": BanditPolicy,
    "median_stopping": MedianStoppingPolicy,
    "truncation_selection": TruncationSelectionPolicy,
}
