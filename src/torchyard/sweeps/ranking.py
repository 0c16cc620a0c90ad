"""The one rule that ranks a sweep's trials, used by everything that names a best trial (the
controller's ``get_details()["sweep"]["best_run_id"]``, ``get_best_run_by_primary_metric()``,
``get_children_sorted_by_primary_metric()``, ``torchyard sweep show``):

1. by the trial's best primary-metric value (the highest under MAXIMIZE, the lowest under MINIMIZE);
2. on a tie, the trial started first (the lower trial index ``i`` of ``<parent>_<i>``) ranks higher;
3. trials that logged no value of the metric come last, in trial order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
_INDEX = re.compile(r"_(\d+)$")


def trial_index(run_id: str) -> int:
    """``i`` of a trial id ``<parent>_<i>`` (a large number for an id without one, so it ranks last)."""
    match = _INDEX.search(run_id)
    return int(match.group(1)) if match else 1 << 62


def rank(items: Iterable[T], *, value: Callable[[T], Any], run_id: Callable[[T], str], maximize: bool) -> list[T]:
    """``items`` best first by the rule above (``value`` None: no metric, last)."""
    items = list(items)
    with_metric = [i for i in items if value(i) is not None]
    without = [i for i in items if value(i) is None]
    with_metric.sort(key=lambda i: (-value(i) if maximize else value(i), trial_index(run_id(i))))
    without.sort(key=lambda i: trial_index(run_id(i)))
    return with_metric + without


def best_of(entries: Iterable[tuple[float, str]], maximize: bool) -> tuple[float, str] | None:
    """The best ``(value, run_id)`` pair by the rule above; None when there is none."""
    ranked = rank(list(entries), value=lambda e: e[0], run_id=lambda e: e[1], maximize=maximize)
    return ranked[0] if ranked else None
