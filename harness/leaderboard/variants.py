"""Scenario variants: one set of scenario parameters, as a run records it (the JSON text in its
``scenario_params`` column), e.g. each ``n_classes`` of ``omniglot-stream`` or each ordering of
``video-frames``. Parsing, a numeric sort order and short labels for tables and figures.

Pure functions over strings and dicts; nothing is read, written or printed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any


def parse_params(text: object) -> dict[str, Any]:
    """The parameters in a ``scenario_params`` cell: {} where it is missing or empty; a cell
    that is not a JSON object is kept whole under the key ``params``."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return {}
    raw = str(text).strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"params": raw}
    return value if isinstance(value, dict) else {"params": value}


def _value_key(value: Any) -> tuple[Any, ...]:
    """Sort key of one parameter value: numbers by value (10 before 50 before 100), then text
    and booleans by their text, then lists element by element."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "", ())
    if isinstance(value, list):
        return (2, 0.0, "", tuple(_value_key(v) for v in value))
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return (1, 0.0, text, ())


def params_sort_key(text: object) -> tuple[Any, ...]:
    """Sort key of a ``scenario_params`` cell: parameter by parameter (in name order), numbers
    compared as numbers, so that n_classes 10, 50, 100, 600 and ways 5, 20 come in that order."""
    return tuple((k, _value_key(v)) for k, v in sorted(parse_params(text).items()))


def format_value(value: Any) -> str:
    """A parameter value as written in a label: text as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def varying_keys(params: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters whose value differs between `params` (sorted), leaving out a parameter
    that only repeats an earlier one (video-frames' ``variant``, always equal to its
    ``ordering``)."""
    keys = sorted({k for p in params for k in p})
    values = {k: [format_value(p.get(k, "")) for p in params] for k in keys}
    varying: list[str] = []
    for k in keys:
        if len(set(values[k])) > 1 and all(values[k] != values[v] for v in varying):
            varying.append(k)
    return varying


def variant_label(params: dict[str, Any], keys: Iterable[str], sep: str = ", ") -> str:
    """``key=value`` for each of `keys` in `params`, e.g. ``n_classes=100``."""
    return sep.join(f"{k}={format_value(params[k])}" for k in keys if k in params)
