"""What a value may be, declared once: the limits :meth:`Run.log` and tags enforce, identical on SQLite
and PostgreSQL, and how values JSON cannot carry travel over the wire.

Limits (in characters, after conversion to ``str``):

=====================  =======  ==============================================
what                   limit    where it is checked
=====================  =======  ==============================================
metric name            250      ``run.log*`` in the script (and MLflow's bridge)
tag / property key     250      ``run.tag``, ``set_tags``, ``add_properties``
tag / property value   8,000    the same
string metric value    65,536   ``run.log("m", "text")``, list/row/table cells
run display name       250      submit (``display_name``)
run description        5,000    submit (``description``)
=====================  =======  ==============================================

No name or text may hold a NUL character or an unpaired surrogate (PostgreSQL's text type and UTF-8
refuse both). A value over its limit raises :class:`ValueError` naming the limit at the call, in the
script; everything logged before stays recorded and the run goes on if the script catches it.

Non-finite floats (a diverged loss) are stored as such and read back as ``float('inf')``,
``float('-inf')`` and ``float('nan')`` by the SDK. JSON has no such numbers, so the JSON API writes
them as the strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"`` (the names JavaScript and Python's
``float()`` read), and charts leave them out as gaps.
"""

from __future__ import annotations

import math
from typing import Any

MAX_NAME = 250
MAX_TAG_VALUE = 8000
MAX_STRING_VALUE = 65536
MAX_DISPLAY_NAME = 250
MAX_DESCRIPTION = 5000

#: ``limit name -> characters``: what the README and the docs table show
LIMITS: dict[str, int] = {
    "metric name": MAX_NAME,
    "tag or property key": MAX_NAME,
    "tag or property value": MAX_TAG_VALUE,
    "string metric value": MAX_STRING_VALUE,
    "run display name": MAX_DISPLAY_NAME,
    "run description": MAX_DESCRIPTION,
}

NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def check_text(value: str, what: str, limit: int, *, empty_ok: bool = True) -> str:
    """``value`` if it is storable text of at most ``limit`` characters, else a ValueError naming
    ``what`` and the limit (so the caller's line says what to change)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not empty_ok:
        raise ValueError(f"{what} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value):,} characters long; the limit is {limit:,} "
                         f"(torchyard.limits): {value[:40]!r}...")
    if "\x00" in value:
        raise ValueError(f"{what} holds a NUL character (\\x00), which no store can keep: {value[:40]!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} holds an unpaired surrogate, which is not valid UTF-8: {value[:40]!r}") from None
    return value


def check_name(name: str, what: str = "metric name") -> str:
    """A metric name, tag key or property key: 1 to :data:`MAX_NAME` storable characters."""
    return check_text(name, what, MAX_NAME, empty_ok=False)


def encode_non_finite(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth of dicts, lists and tuples) replaced by
    ``"Infinity"``, ``"-Infinity"`` or ``"NaN"``: what the JSON API sends."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: encode_non_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_non_finite(v) for v in value]
    return value


def decode_number(value: Any) -> Any:
    """The float a JSON API number field stands for: ``"Infinity"`` and friends back to floats; anything
    else unchanged."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    return value
