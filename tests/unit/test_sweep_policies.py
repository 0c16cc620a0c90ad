"""Early-termination policies against hand-computed cases, for both goals, with delay/interval edges."""

from __future__ import annotations

import pytest

from torchyard.errors import SpecError
from torchyard.hyperdrive import (
    BanditPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from torchyard.sweeps.policies import EarlyTerminationPolicy


def neg(histories):
    """The same race with the metric negated: what MAXIMIZE stops, MINIMIZE must stop too."""
    return {k: [-v for v in vs] for k, vs in histories.items()}


# ---- when a policy applies ---------------------------------------------------------------------------


def test_applies_at_multiples_of_interval_at_or_after_delay():
    p = BanditPolicy(evaluation_interval=3, slack_factor=0.1, delay_evaluation=5)
    assert [n for n in range(1, 16) if p.applies_at(n)] == [6, 9, 12, 15]
    p = BanditPolicy(evaluation_interval=2, slack_factor=0.1, delay_evaluation=4)
    assert [n for n in range(1, 10) if p.applies_at(n)] == [4, 6, 8]  # delay itself counts when a multiple
    assert [n for n in range(1, 5) if BanditPolicy(slack_amount=0.1).applies_at(n)] == [1, 2, 3, 4]
    assert not any(NoTerminationPolicy().applies_at(n) for n in range(1, 50))
    assert MedianStoppingPolicy().delay_evaluation == 5  # Azure's conservative default


def test_not_evaluated_off_interval_or_before_delay_or_past_the_history():
    h = {"a": [0.9, 0.9, 0.9, 0.9], "b": [0.1, 0.1, 0.1, 0.1]}
    p = BanditPolicy(evaluation_interval=2, slack_factor=0.1, delay_evaluation=3)
    assert p.evaluate("b", 1, h, True) is None  # before the delay
    assert p.evaluate("b", 2, h, True) is None  # a multiple, but before the delay
    assert p.evaluate("b", 3, h, True) is None  # after the delay, not a multiple
    assert p.evaluate("b", 4, h, True) is not None
    assert p.evaluate("b", 6, h, True) is None  # b has not logged 6 values


# ---- Bandit ----------------------------------------------------------------------------------------------


def test_bandit_slack_factor_azure_example():
    # Azure: best 0.8 and slack_factor 0.2 stop a run whose best is below 0.8 / 1.2 = 0.6667
    p = BanditPolicy(slack_factor=0.2)
    assert p.evaluate("x", 1, {"best": [0.8], "x": [0.66]}, True) is not None
    assert p.evaluate("x", 1, {"best": [0.8], "x": [0.67]}, True) is None
    reason = p.evaluate("x", 1, {"best": [0.8], "x": [0.5]}, True)
    assert "BanditPolicy" in reason and "interval 1" in reason and "slack_factor=0.2" in reason
    # MINIMIZE: stop when the best is above best * (1 + slack_factor) = 0.96
    assert p.evaluate("x", 1, {"best": [0.8], "x": [0.97]}, False) is not None
    assert p.evaluate("x", 1, {"best": [0.8], "x": [0.95]}, False) is None


def test_bandit_slack_amount_both_goals():
    p = BanditPolicy(slack_amount=0.2)
    h = {"best": [0.5, 0.8], "x": [0.55, 0.59], "y": [0.61, 0.3]}
    assert p.evaluate("x", 2, h, True) is not None  # 0.59 < 0.8 - 0.2
    assert p.evaluate("y", 2, h, True) is None  # its best up to 2 is 0.61
    assert p.evaluate("x", 1, h, True) is None  # at interval 1 the best trial had 0.55, x is the best
    assert p.evaluate("x", 2, neg(h), False) is not None
    assert p.evaluate("y", 2, neg(h), False) is None


def test_bandit_sees_others_only_up_to_the_interval():
    p = BanditPolicy(slack_factor=0.1)
    h = {"old": [0.5, 0.6, 0.7, 0.99], "young": [0.62]}
    # at interval 1 the old trial's best was 0.5: the young one leads, though "old" later reached 0.99
    assert p.evaluate("young", 1, h, True) is None
    assert p.evaluate("old", 1, h, True) is not None  # 0.5 * 1.1 < 0.62
    assert p.evaluate("old", 1, neg(h), False) is not None


def test_bandit_needs_exactly_one_slack():
    with pytest.raises(SpecError) as info:
        BanditPolicy()
    assert info.value.field == "slack_factor"
    with pytest.raises(SpecError):
        BanditPolicy(slack_factor=0.1, slack_amount=0.1)
    with pytest.raises(SpecError) as info:
        BanditPolicy(slack_factor=-1)
    assert info.value.field == "slack_factor"


# ---- Median stopping -------------------------------------------------------------------------------------


def test_median_stopping_hand_computed():
    p = MedianStoppingPolicy(delay_evaluation=0)
    h = {"a": [0.2, 0.4, 0.6], "b": [0.3, 0.5, 0.7], "c": [0.1, 0.1, 0.2], "d": [0.5]}
    # interval 3: running averages of trials that reached it: a 0.4, b 0.5, c 0.1333 → median 0.4
    assert p.evaluate("c", 3, h, True) is not None  # best 0.2 < 0.4
    assert p.evaluate("a", 3, h, True) is None  # best 0.6 >= 0.4
    # interval 1: a .2 b .3 c .1 d .5 → median 0.25; c's best 0.1 is worse, a's 0.2 too, b's 0.3 not
    assert p.evaluate("c", 1, h, True) is not None
    assert p.evaluate("a", 1, h, True) is not None
    assert p.evaluate("b", 1, h, True) is None
    reason = p.evaluate("c", 3, h, True)
    assert "MedianStoppingPolicy" in reason and "0.4" in reason and "3 trials" in reason
    # MINIMIZE mirrors it
    assert p.evaluate("c", 3, neg(h), False) is not None
    assert p.evaluate("a", 3, neg(h), False) is None
    assert p.evaluate("b", 1, neg(h), False) is None


def test_median_stopping_alone_or_equal_never_stops():
    p = MedianStoppingPolicy(delay_evaluation=0)
    assert p.evaluate("a", 2, {"a": [0.1, 0.2]}, True) is None
    assert p.evaluate("a", 1, {"a": [0.3], "b": [0.3]}, True) is None  # equal to the median is not worse


def test_median_stopping_default_delay():
    h = {"a": [0.9] * 6, "b": [0.1] * 6}
    p = MedianStoppingPolicy()
    assert [n for n in range(1, 7) if p.evaluate("b", n, h, True)] == [5, 6]


# ---- Truncation selection --------------------------------------------------------------------------------


def test_truncation_selection_hand_computed():
    p = TruncationSelectionPolicy(truncation_percentage=25)
    h = {"a": [0.9, 0.9], "b": [0.8, 0.8], "c": [0.7, 0.7], "d": [0.1, 0.6], "e": [0.95]}
    # interval 2: a, b, c, d reached it (n=4): floor(4 * 25%) = 1 → the worst (d, best 0.6) goes
    assert p.evaluate("d", 2, h, True) is not None
    assert p.evaluate("c", 2, h, True) is None
    # interval 1: n=5 → floor(1.25) = 1: d (0.1) is the worst
    assert p.evaluate("d", 1, h, True) is not None
    assert p.evaluate("c", 1, h, True) is None
    reason = p.evaluate("d", 2, h, True)
    assert "TruncationSelectionPolicy" in reason and "lowest 25%" in reason and "4 of 4" in reason
    assert p.evaluate("d", 2, neg(h), False) is not None
    assert p.evaluate("a", 2, neg(h), False) is None


def test_truncation_selection_edges():
    p = TruncationSelectionPolicy(truncation_percentage=20)
    three = {"a": [0.9], "b": [0.5], "c": [0.1]}
    assert p.evaluate("c", 1, three, True) is None  # floor(3 * 20%) = 0: nothing to cut
    ties = {"a": [0.5], "b": [0.5], "c": [0.5], "d": [0.5], "e": [0.5]}
    assert p.evaluate("e", 1, ties, True) is None  # ties count in the trial's favour
    half = TruncationSelectionPolicy(50)
    four = {"a": [0.9], "b": [0.8], "c": [0.2], "d": [0.1]}
    assert [t for t in four if half.evaluate(t, 1, four, True)] == ["c", "d"]
    assert [t for t in four if half.evaluate(t, 1, four, False)] == ["a", "b"]
    # exclude_finished_jobs leaves finished trials out of the ranking
    ex = TruncationSelectionPolicy(50, exclude_finished_jobs=True)
    assert ex.evaluate("c", 1, four, True, finished={"a", "b"}) is None  # c vs d only: c is not the worse
    assert ex.evaluate("d", 1, four, True, finished={"a", "b"}) is not None
    for bad in (0, 100, 12.5):
        with pytest.raises(SpecError) as info:
            TruncationSelectionPolicy(bad)
        assert info.value.field == "truncation_percentage"


def test_policies_round_trip_and_bad_dicts():
    for policy in (BanditPolicy(2, slack_factor=0.1, delay_evaluation=3), BanditPolicy(slack_amount=0.2),
                   MedianStoppingPolicy(1, 2), TruncationSelectionPolicy(30, 2, 4), NoTerminationPolicy()):
        again = EarlyTerminationPolicy.from_dict(policy.to_dict())
        assert type(again) is type(policy) and again.to_dict() == policy.to_dict()
    with pytest.raises(SpecError) as info:
        EarlyTerminationPolicy.from_dict({"type": "aggressive"}, "early_termination")
    assert info.value.field == "early_termination.type"
    with pytest.raises(SpecError) as info:
        EarlyTerminationPolicy.from_dict({"type": "bandit", "slack": 0.1}, "early_termination")
    assert info.value.field == "early_termination.slack"
    with pytest.raises(SpecError) as info:
        BanditPolicy(evaluation_interval=0, slack_factor=0.1)
    assert info.value.field == "evaluation_interval"
    with pytest.raises(SpecError) as info:
        EarlyTerminationPolicy.from_dict({"type": "truncation_selection"}, "early_termination")
    assert info.value.field == "early_termination.truncation_percentage"
    with pytest.raises(SpecError) as info:
        TruncationSelectionPolicy(10, exclude_finished_jobs="no")
    assert info.value.field == "exclude_finished_jobs"
    with pytest.raises(SpecError) as info:
        BanditPolicy(slack_factor=float("nan"))
    assert info.value.field == "slack_factor"
