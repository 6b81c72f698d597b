"""The checks behind every "bad value" message: one wording, one place."""
from __future__ import annotations

import math
import operator
from typing import Any, Iterable


def check_number(what: str, value: Any, minimum: float, maximum: float, integer: bool = False) -> None:
    """`value` is finite, within [minimum, maximum], and an int where asked (bools never count as numbers)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not minimum <= value <= maximum \
            or (isinstance(value, float) and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{what} must be {kind} in [{minimum:g}, {maximum:g}], got {value!r}")


def integer_at_least(what: str, value: Any, minimum: int = 1) -> int:
    """`value` as a Python int (numpy integers welcome) if it is an integer >= minimum."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return number


def check_choice(what: str, value: Any, choices: Iterable[Any]) -> None:
    """`value` is one of `choices`; the message lists them all."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s: {', '.join(map(str, choices))}")
