"""Parameter expressions and samplers, with Azure ML HyperDrive's semantics.

Expressions (what one hyperparameter may take):

=========================================  ===========================================================
``choice(*options)``                       one of the options (a list, a range or several arguments)
``randint(upper)``                         an integer in ``[0, upper)``
``uniform(min_value, max_value)``          uniform in ``[min_value, max_value]``
``quniform(min_value, max_value, q)``      ``round(uniform(min_value, max_value) / q) * q``
``loguniform(min_value, max_value)``       ``exp(uniform(min_value, max_value))``: the bounds are exponents
``qloguniform(min_value, max_value, q)``   ``round(exp(uniform(min_value, max_value)) / q) * q``
``normal(mu, sigma)``                      normally distributed
``qnormal(mu, sigma, q)``                  ``round(normal(mu, sigma) / q) * q``
``lognormal(mu, sigma)``                   ``exp(normal(mu, sigma))``
``qlognormal(mu, sigma, q)``               ``round(exp(normal(mu, sigma)) / q) * q``
=========================================  ===========================================================

A q-variant with an integer ``q`` yields ints (``--hidden 64``, not ``64.0``, so ``type=int`` parses it).

Samplers: :class:`GridParameterSampling` (``choice`` only; every combination, in order),
:class:`RandomParameterSampling` (seeded: trial *i*'s values are a pure function of the seed and *i*,
so a sweep is reproducible and a restarted controller draws the same values), and
:class:`BayesianParameterSampling` (``choice``, ``uniform``, ``quniform``; Optuna's TPE, seeded, fed
with the finished trials' results; optuna is imported only when it samples).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchyard.errors import SpecError

_SCALARS = (str, int, float, bool)


class ParameterExpression:
    """One hyperparameter's distribution. Build it with :func:`choice`, :func:`uniform`, ..."""

    #: expression name → the YAML/dict field names of its arguments
    FIELDS: dict[str, tuple[str, ...]] = {
        "choice": ("values",),
        "randint": ("upper",),
        "uniform": ("min_value", "max_value"),
        "quniform": ("min_value", "max_value", "q"),
        "loguniform": ("min_value", "max_value"),
        "qloguniform": ("min_value", "max_value", "q"),
        "normal": ("mu", "sigma"),
        "qnormal": ("mu", "sigma", "q"),
        "lognormal": ("mu", "sigma"),
        "qlognormal": ("mu", "sigma", "q"),
    }

    def __init__(self, kind: str, *args: Any, field: str = "parameter") -> None:
        if kind not in self.FIELDS:
            raise SpecError(f"{field}.type", f"unknown expression {kind!r}; use {', '.join(self.FIELDS)}")
        names = self.FIELDS[kind]
        if len(args) != len(names):
            raise SpecError(field, f"{kind} takes {', '.join(names)}")
        self.kind = kind
        self.args: tuple[Any, ...] = tuple(args)
        self._check(field)

    def _check(self, field: str) -> None:
        kind, a = self.kind, self.args
        if kind == "choice":
            values = a[0]
            if not isinstance(values, list) or not values:
                raise SpecError(field, "choice needs at least one option")
            for v in values:
                if not isinstance(v, _SCALARS):
                    raise SpecError(field, f"choice options must be str, int, float or bool, got {v!r}")
            return
        for name, v in zip(self.FIELDS[kind], a, strict=True):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise SpecError(f"{field}.{name}", f"must be a finite number, got {v!r}")
        if kind == "randint":
            if not isinstance(a[0], int) or a[0] < 1:
                raise SpecError(f"{field}.upper", f"must be an integer of at least 1, got {a[0]!r}")
        elif kind in ("uniform", "quniform", "loguniform", "qloguniform"):
            if not a[0] < a[1]:
                raise SpecError(field, f"min_value must be below max_value, got {a[0]!r} and {a[1]!r}")
        else:
            if not a[1] > 0:
                raise SpecError(f"{field}.sigma", f"must be positive, got {a[1]!r}")
        if kind.startswith("q") and not a[-1] > 0:
            raise SpecError(f"{field}.q", f"must be positive, got {a[-1]!r}")

    @property
    def values(self) -> list[Any]:
        """A choice's options."""
        if self.kind != "choice":
            raise TypeError(f"{self.kind} has no finite list of values")
        return list(self.args[0])

    def sample(self, rng: random.Random) -> Any:
        kind, a = self.kind, self.args
        if kind == "choice":
            return a[0][rng.randrange(len(a[0]))]
        if kind == "randint":
            return rng.randrange(a[0])
        if kind in ("uniform", "quniform", "loguniform", "qloguniform"):
            x = rng.uniform(a[0], a[1])
        else:
            x = rng.gauss(a[0], a[1])
        if "log" in kind:
            x = math.exp(x)
        if kind.startswith("q"):
            return quantize(x, a[-1])
        return x

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **dict(zip(self.FIELDS[self.kind], self.args, strict=True))}

    @classmethod
    def from_dict(cls, data: Any, field: str = "parameter") -> ParameterExpression:
        """``{type: uniform, min_value: 0, max_value: 1}`` (Azure ML v2's search-space form)."""
        if isinstance(data, ParameterExpression):
            return data
        if not isinstance(data, Mapping) or "type" not in data:
            raise SpecError(field, "expected {type: choice|randint|uniform|..., ...}")
        kind = str(data["type"]).lower()
        if kind not in cls.FIELDS:
            raise SpecError(f"{field}.type", f"unknown expression {data['type']!r}; use {', '.join(cls.FIELDS)}")
        names = cls.FIELDS[kind]
        unknown = sorted(set(data) - {"type", *names})
        if unknown:
            raise SpecError(f"{field}.{unknown[0]}", f"unknown field for {kind}; it takes {', '.join(names)}")
        missing = [n for n in names if n not in data]
        if missing:
            raise SpecError(f"{field}.{missing[0]}", "is required")
        args = [data[n] for n in names]
        if kind == "choice":
            args = [_options(args[0], field)]
        return cls(kind, *args, field=field)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParameterExpression) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(repr(a) for a in self.args)})"


def quantize(x: float, q: float) -> int | float:
    """Azure's ``round(x / q) * q``; an int when ``q`` is an int."""
    k = round(x / q)
    if isinstance(q, int):
        return int(k * q)
    value = k * q
    return round(value, 12)  # 0.1 * 3 → 0.3, not 0.30000000000000004


def _options(options: Any, field: str) -> list[Any]:
    if isinstance(options, str | bytes) or not isinstance(options, Iterable):
        raise SpecError(field, f"choice options must be a list, got {options!r}")
    return list(options)


def choice(*options: Any) -> ParameterExpression:
    """One of the options: ``choice(1, 2, 3)``, ``choice([1, 2, 3])`` or ``choice(range(4))``."""
    if len(options) == 1 and not isinstance(options[0], _SCALARS):
        return ParameterExpression("choice", _options(options[0], "choice"), field="choice")
    return ParameterExpression("choice", list(options), field="choice")


def randint(upper: int) -> ParameterExpression:
    """An integer in ``[0, upper)``."""
    return ParameterExpression("randint", upper, field="randint")


def uniform(min_value: float, max_value: float) -> ParameterExpression:
    """A float drawn uniformly from ``[min_value, max_value]``."""
    return ParameterExpression("uniform", min_value, max_value, field="uniform")


def quniform(min_value: float, max_value: float, q: float) -> ParameterExpression:
    """``round(uniform(min_value, max_value) / q) * q``."""
    return ParameterExpression("quniform", min_value, max_value, q, field="quniform")


def loguniform(min_value: float, max_value: float) -> ParameterExpression:
    """``exp(uniform(min_value, max_value))``: the bounds are natural-log exponents, as in Azure."""
    return ParameterExpression("loguniform", min_value, max_value, field="loguniform")


def qloguniform(min_value: float, max_value: float, q: float) -> ParameterExpression:
    """``round(exp(uniform(min_value, max_value)) / q) * q``: the bounds are exponents; an int when ``q`` is one."""
    return ParameterExpression("qloguniform", min_value, max_value, q, field="qloguniform")


def normal(mu: float, sigma: float) -> ParameterExpression:
    """A float drawn from the normal distribution with mean ``mu`` and standard deviation ``sigma``."""
    return ParameterExpression("normal", mu, sigma, field="normal")


def qnormal(mu: float, sigma: float, q: float) -> ParameterExpression:
    """``round(normal(mu, sigma) / q) * q``; an int when ``q`` is one."""
    return ParameterExpression("qnormal", mu, sigma, q, field="qnormal")


def lognormal(mu: float, sigma: float) -> ParameterExpression:
    """``exp(normal(mu, sigma))``."""
    return ParameterExpression("lognormal", mu, sigma, field="lognormal")


def qlognormal(mu: float, sigma: float, q: float) -> ParameterExpression:
    """``round(exp(normal(mu, sigma)) / q) * q``; an int when ``q`` is one."""
    return ParameterExpression("qlognormal", mu, sigma, q, field="qlognormal")


# ---- samplers ---------------------------------------------------------------------------------------


def _space(parameter_space: Any, field: str) -> dict[str, ParameterExpression]:
    if not isinstance(parameter_space, Mapping) or not parameter_space:
        raise SpecError(field, "must be a non-empty dict of name → expression, e.g. {'--lr': uniform(0.01, 0.1)}")
    out: dict[str, ParameterExpression] = {}
    flags = set()
    for key, expr in parameter_space.items():
        if not isinstance(key, str) or not key.lstrip("-"):
            raise SpecError(field, f"parameter names must be non-empty strings, got {key!r}")
        flag = key.lstrip("-")
        if flag in flags:
            raise SpecError(f"{field}[{key!r}]", "given twice (with and without '--')")
        flags.add(flag)
        if isinstance(expr, Mapping):
            expr = ParameterExpression.from_dict(expr, f"{field}[{key!r}]")
        if not isinstance(expr, ParameterExpression):
            raise SpecError(
                f"{field}[{key!r}]", f"expected an expression such as choice(...) or uniform(...), got {expr!r}"
            )
        out[key] = expr
    return out


class HyperParameterSampling:
    """Base of the samplers: a parameter space and how to draw trial *i*'s values from it."""

    name = ""
    supported: tuple[str, ...] = tuple(ParameterExpression.FIELDS)

    def __init__(
        self, parameter_space: Mapping[str, Any], properties: Mapping[str, Any] | None = None, *, seed: int | None = None
    ) -> None:
        self.parameter_space = _space(parameter_space, "parameter_space")
        if properties is not None and not isinstance(properties, Mapping):
            raise SpecError("properties", f"must be a dict, got {type(properties).__name__}")
        self.properties = dict(properties or {})
        if seed is None and "seed" in self.properties:
            seed = self.properties["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SpecError("seed", f"must be an integer, got {seed!r}")
        self.seed = seed
        for key, expr in self.parameter_space.items():
            if expr.kind not in self.supported:
                raise SpecError(
                    f"parameter_space[{key!r}]",
                    f"{self.name} sampling takes {', '.join(self.supported)} only; got {expr.kind}",
                )

    def size(self) -> int | None:
        """How many distinct points the space has, when that is finite and enumerated (grid)."""
        return None

    def suggest(self, index: int, seed: int, history: Sequence[tuple[dict[str, Any], float]] = (),
                maximize: bool = True) -> dict[str, Any]:
        """Trial ``index``'s values. ``history``: (values, best primary metric) of finished trials."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The sampling as a JSON-able dict (type, seed, parameter space, properties), as stored with the sweep."""
        return {
            "type": self.name,
            "seed": self.seed,
            "parameter_space": {k: e.to_dict() for k, e in self.parameter_space.items()},
            "properties": self.properties,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> HyperParameterSampling:
        """The sampling that :meth:`to_dict` described (its ``type`` picks the class)."""
        cls = SAMPLERS[str(data["type"])]
        return cls(data["parameter_space"], data.get("properties"), seed=data.get("seed"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter_space!r}, seed={self.seed!r})"


class RandomParameterSampling(HyperParameterSampling):
    """Every expression; values drawn independently. Seeded: with ``seed=`` (or a seed chosen at
    submit and stored with the sweep) trial *i* always gets the same values."""

    name = "random"

    def suggest(self, index: int, seed: int, history: Sequence[tuple[dict[str, Any], float]] = (),
                maximize: bool = True) -> dict[str, Any]:
        rng = random.Random(f"torchyard-sweep:{seed}:{index}")
        return {key: expr.sample(rng) for key, expr in self.parameter_space.items()}


class GridParameterSampling(HyperParameterSampling):
    """``choice`` only: every combination exactly once, the last parameter varying fastest."""

    name = "grid"
    supported = ("choice",)

    def size(self) -> int:
        return math.prod(len(e.values) for e in self.parameter_space.values())

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the choices, in order: the trials a grid sweep runs."""
        keys = list(self.parameter_space)
        grid = itertools.product(*(self.parameter_space[k].values for k in keys))
        return [dict(zip(keys, combo, strict=True)) for combo in grid]

    def suggest(self, index: int, seed: int, history: Sequence[tuple[dict[str, Any], float]] = (),
                maximize: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rest = index
        for key in reversed(list(self.parameter_space)):
            values = self.parameter_space[key].values
            rest, pos = divmod(rest, len(values))
            out[key] = values[pos]
        if rest:
            raise IndexError(f"grid point {index} is past the grid's {self.size()} points")
        return {k: out[k] for k in self.parameter_space}


class BayesianParameterSampling(HyperParameterSampling):
    """``choice``, ``uniform`` and ``quniform``, suggested by Optuna's TPE sampler from the finished
    trials' results (needs ``pip install "torchyard[sweep]"``). As in Azure, it takes no early
    termination policy, and works best with few concurrent trials."""

    name = "bayesian"
    supported = ("choice", "uniform", "quniform")

    def __init__(
        self, parameter_space: Mapping[str, Any], properties: Mapping[str, Any] | None = None, *, seed: int | None = None
    ) -> None:
        super().__init__(parameter_space, properties, seed=seed)
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("optuna") is None:
            require_optuna()  # raises with how to install it

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: PLC0415

        out: dict[str, Any] = {}
        for key, expr in self.parameter_space.items():
            if expr.kind == "choice":
                out[key] = CategoricalDistribution(expr.values)
            elif expr.kind == "uniform":
                out[key] = FloatDistribution(float(expr.args[0]), float(expr.args[1]))
            else:  # quniform: the multiple k of q, so TPE models the same discrete support
                lo, hi, q = expr.args
                out[key] = IntDistribution(round(lo / q), max(round(lo / q), round(hi / q)))
        return out

    def _to_optuna(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, expr in self.parameter_space.items():
            v = values[key]
            out[key] = round(v / expr.args[2]) if expr.kind == "quniform" else v
        return out

    def suggest(self, index: int, seed: int, history: Sequence[tuple[dict[str, Any], float]] = (),
                maximize: bool = True) -> dict[str, Any]:
        optuna = require_optuna()
        dists = self._distributions()
        study = optuna.create_study(
            direction="maximize" if maximize else "minimize",
            sampler=optuna.samplers.TPESampler(seed=(seed + index) % (2**32)),
        )
        for values, value in history:
            try:
                params = self._to_optuna(values)
            except (KeyError, TypeError):
                continue
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(value)))
        trial = study.ask(dists)
        out = {}
        for key, expr in self.parameter_space.items():
            v = trial.params[key]
            out[key] = quantize(v * expr.args[2], expr.args[2]) if expr.kind == "quniform" else v
        return out


SAMPLERS: dict[str, type[HyperParameterSampling]] = {
    "random": RandomParameterSampling,
    "grid": GridParameterSampling,
    "bayesian": BayesianParameterSampling,
}


def require_optuna() -> Any:
    """Import optuna (quietly), or say how to install it."""
    from torchyard.errors import NotSupportedError  # noqa: PLC0415

    try:
        import optuna  # noqa: PLC0415
    except ImportError:
        raise NotSupportedError(
            "hyperparameter_sampling",
            'Bayesian sampling needs Optuna: pip install "torchyard[sweep]" (or pip install optuna)',
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
