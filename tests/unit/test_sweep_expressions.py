"""Parameter expressions (statistical checks with fixed seeds) and the samplers."""

from __future__ import annotations

import itertools
import math
import random
import statistics
import subprocess
import sys

import pytest

from torchyard.errors import NotSupportedError, SpecError
from torchyard.hyperdrive import (
    BayesianParameterSampling,
    GridParameterSampling,
    RandomParameterSampling,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from torchyard.sweeps.expressions import ParameterExpression

N = 6000


def draw(expr, seed=1234, n=N):
    rng = random.Random(seed)
    return [expr.sample(rng) for _ in range(n)]


def near(value, expected, tol):
    assert abs(value - expected) <= tol, f"{value} is not within {tol} of {expected}"


def test_choice_is_uniform_over_its_options():
    xs = draw(choice(1, "b", 3.5))
    assert set(xs) == {1, "b", 3.5}
    for option in (1, "b", 3.5):
        near(xs.count(option) / N, 1 / 3, 0.025)  # ~4 sigma
    assert choice([1, 2]).values == [1, 2] and choice(range(3)).values == [0, 1, 2]


def test_randint_is_zero_to_upper_exclusive():
    xs = draw(randint(10))
    assert set(xs) == set(range(10)) and all(isinstance(x, int) for x in xs)
    near(statistics.fmean(xs), 4.5, 0.15)


def test_uniform_moments_and_bounds():
    xs = draw(uniform(2, 5))
    assert min(xs) >= 2 and max(xs) <= 5
    near(statistics.fmean(xs), 3.5, 0.05)
    near(statistics.pvariance(xs), 9 / 12, 0.05)


def test_quniform_rounds_to_multiples_of_q():
    xs = draw(quniform(0, 10, 2))
    assert set(xs) == {0, 2, 4, 6, 8, 10} and all(isinstance(x, int) for x in xs)
    # round(U(0,10)/2)*2: the end points get half the mass of the inner ones
    near(xs.count(0) / N, 0.1, 0.02)
    near(xs.count(4) / N, 0.2, 0.025)
    fs = draw(quniform(0, 1, 0.25))
    assert set(fs) <= {0.0, 0.25, 0.5, 0.75, 1.0} and all(isinstance(x, float) for x in fs)


def test_loguniform_bounds_are_exponents():
    xs = draw(loguniform(-3, 0))
    assert math.exp(-3) <= min(xs) and max(xs) <= 1.0
    logs = [math.log(x) for x in xs]
    near(statistics.fmean(logs), -1.5, 0.05)
    near(statistics.pvariance(logs), 9 / 12, 0.05)


def test_qloguniform():
    xs = draw(qloguniform(0, 3, 1))
    assert all(isinstance(x, int) for x in xs) and min(xs) >= 1 and max(xs) <= 20
    # P(round(e^U) == 1) = P(U < ln 1.5) / 3
    near(xs.count(1) / N, math.log(1.5) / 3, 0.02)


def test_normal_moments():
    xs = draw(normal(5, 2))
    near(statistics.fmean(xs), 5, 0.08)
    near(statistics.pstdev(xs), 2, 0.06)


def test_qnormal():
    xs = draw(qnormal(0, 3, 0.5))
    assert all(abs(x / 0.5 - round(x / 0.5)) < 1e-9 for x in xs)
    near(statistics.fmean(xs), 0, 0.12)
    near(statistics.pstdev(xs), math.sqrt(9 + 0.5**2 / 12), 0.1)


def test_lognormal_is_exp_of_normal():
    xs = draw(lognormal(0, 0.5))
    assert min(xs) > 0
    logs = [math.log(x) for x in xs]
    near(statistics.fmean(logs), 0, 0.03)
    near(statistics.pstdev(logs), 0.5, 0.02)


def test_qlognormal():
    xs = draw(qlognormal(1, 0.3, 1))
    assert all(isinstance(x, int) and x >= 0 for x in xs)
    near(statistics.median(xs), round(math.e), 0.5)


def test_fixed_seed_is_reproducible():
    assert draw(uniform(0, 1), seed=7, n=20) == draw(uniform(0, 1), seed=7, n=20)
    assert draw(uniform(0, 1), seed=7, n=20) != draw(uniform(0, 1), seed=8, n=20)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: uniform(1, 1), "uniform"),
        (lambda: quniform(0, 1, 0), "quniform.q"),
        (lambda: normal(0, -1), "normal.sigma"),
        (lambda: randint(0), "randint.upper"),
        (lambda: choice(), "choice"),
        (lambda: choice([[1]]), "choice"),
        (lambda: uniform("a", 2), "uniform.min_value"),
    ],
)
def test_bad_expressions_name_the_field(make, field):
    with pytest.raises(SpecError) as info:
        make()
    assert info.value.field == field


def test_from_dict_round_trip_and_unknown_type():
    for expr in (choice(1, 2), randint(3), uniform(0, 1), quniform(0, 4, 2), loguniform(-2, 0), qloguniform(0, 2, 1),
                 normal(0, 1), qnormal(0, 1, 0.5), lognormal(0, 1), qlognormal(0, 1, 1)):
        assert ParameterExpression.from_dict(expr.to_dict()) == expr
    with pytest.raises(SpecError) as info:
        ParameterExpression.from_dict({"type": "gaussian", "mu": 0}, "search_space.lr")
    assert info.value.field == "search_space.lr.type" and "unknown expression" in str(info.value)
    with pytest.raises(SpecError) as info:
        ParameterExpression.from_dict({"type": "uniform", "min_value": 0}, "search_space.lr")
    assert info.value.field == "search_space.lr.max_value"


# ---- samplers ----------------------------------------------------------------------------------------


def test_grid_enumerates_exactly():
    space = {"--lr": choice(0.1, 0.01, 0.001), "hidden": choice(16, 64), "--act": choice("relu", "tanh")}
    grid = GridParameterSampling(space)
    assert grid.size() == 12
    points = [grid.suggest(i, seed=0) for i in range(12)]
    expected = [dict(zip(space, combo, strict=True)) for combo in
                itertools.product([0.1, 0.01, 0.001], [16, 64], ["relu", "tanh"])]
    assert points == expected == grid.points()
    assert len({tuple(p.items()) for p in points}) == 12
    with pytest.raises(IndexError):
        grid.suggest(12, seed=0)


def test_grid_takes_choice_only():
    with pytest.raises(SpecError) as info:
        GridParameterSampling({"--lr": uniform(0, 1)})
    assert info.value.field == "parameter_space['--lr']" and "choice" in str(info.value)


def test_random_sampling_is_seeded_and_order_free():
    space = {"--lr": loguniform(-6, -1), "--hidden": quniform(16, 128, 16), "--opt": choice("sgd", "adam")}
    a = RandomParameterSampling(space, seed=5)
    first = [a.suggest(i, seed=5) for i in range(10)]
    assert [a.suggest(i, seed=5) for i in reversed(range(10))][::-1] == first  # a pure function of (seed, i)
    assert first != [a.suggest(i, seed=6) for i in range(10)]
    assert len({p["--lr"] for p in first}) == 10
    assert all(16 <= p["--hidden"] <= 128 and p["--hidden"] % 16 == 0 for p in first)


def test_sampler_spaces_are_checked():
    with pytest.raises(SpecError) as info:
        RandomParameterSampling({"--lr": 0.1})
    assert info.value.field == "parameter_space['--lr']"
    with pytest.raises(SpecError):
        RandomParameterSampling({"--lr": choice(1), "lr": choice(2)})
    with pytest.raises(SpecError):
        RandomParameterSampling({})


def test_bayesian_takes_choice_uniform_quniform():
    with pytest.raises(SpecError) as info:
        BayesianParameterSampling({"--lr": loguniform(-3, 0)})
    assert info.value.field == "parameter_space['--lr']"


def test_bayesian_suggests_from_history_within_the_space():
    pytest.importorskip("optuna")
    space = {"x": uniform(-5, 5), "k": quniform(0, 10, 2), "c": choice("a", "b")}
    bo = BayesianParameterSampling(space, seed=1)
    history = []
    for i in range(25):
        params = bo.suggest(i, seed=1, history=history, maximize=False)
        assert -5 <= params["x"] <= 5 and params["k"] in (0, 2, 4, 6, 8, 10) and params["c"] in ("a", "b")
        history.append((params, (params["x"] - 2) ** 2 + (0 if params["c"] == "a" else 3)))
    assert bo.suggest(25, 1, history, False) == bo.suggest(25, 1, history, False)  # deterministic
    best = min(history, key=lambda h: h[1])
    assert best[1] < 1.0  # TPE found the basin around x=2, c=a


def test_missing_optuna_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(NotSupportedError, match=r"pip install \"torchyard\[sweep\]\""):
        BayesianParameterSampling({"x": uniform(0, 1)})


def test_importing_the_sweep_api_imports_no_optimizer():
    code = "import torchyard.hyperdrive, torchyard.runtime.sweep_controller, torchyard.cli.sweep\nimport sys\n" \
           "print(' '.join(sorted(sys.modules)))"
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not {"optuna", "torch", "numpy"} & mods
