"""The checks behind every "bad value" message: one wording, one place."""
from __future__ import annotations

import difflib
import math
import operator
from typing import Any, Iterable


class UsageError(ValueError):
    """Bad input: one line, exit code 2."""


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


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """' (did you mean 'synflow'?)' for the closest choice to a mistyped value, or ''."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(what: str, value: Any, choices: Iterable[Any]) -> None:
    """`value` is one of `choices`; the message names the closest and lists them all."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}{did_you_mean(value, choices)}; valid {what}s: "
                         f"{', '.join(map(str, choices))}")
