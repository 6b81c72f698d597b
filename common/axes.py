"""Parsing a grid axis from the command line: the sweep builds grids with it, the analysis selects with it.

Torch-free, so `prune-sweep-summary --seeds 0:2` reads a seed range exactly as `prune-sweep --seeds 0:2` does.
One range rule for every axis: `start:stop[:step]` includes both ends (0:2 is 0, 1, 2; 0:3:0.25 ends at 3).
"""
from __future__ import annotations

import math
from typing import Callable, List, Tuple

MAX_AXIS_VALUES = 10_000
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def too_many(what: str, text: str, count: int) -> ValueError:
    shown = f"{count:,}" if count < 10**12 else f"about {float(count):.2g}"
    return ValueError(f"{what} {text!r} gives {shown} values, more than {MAX_AXIS_VALUES:,}")


RANGE_RULE = ("a list like 0,1,2 or a range start:stop[:step] that includes both ends (step 1 if left out), "
              "the same for every axis")


def _numbers(text: str, parse: Callable[[str], float], bad: ValueError) -> list:
    try:
        return [parse(p) for p in text.split(",") if p.strip()] if ":" not in text else [parse(p) for p in text.split(":")]
    except (ValueError, OverflowError):
        raise bad from None


def _range(what: str, text: str, parts: list, bad: ValueError) -> list:
    """start:stop[:step], both ends included: the one range rule of every axis."""
    if len(parts) not in (2, 3):
        raise bad
    start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
    if step <= 0 or stop < start:
        raise bad
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_AXIS_VALUES:
        raise too_many(what, text, count)
    return [start + i * step for i in range(count)]


def parse_compressions(text: str) -> Tuple[float, ...]:
    """`0,0.5,1` (a list) or `0:3:0.25` (start:stop[:step], both ends included) -> log10 compressions."""
    text = text.strip()
    bad = ValueError(f"bad log10 compressions {text!r}; give {RANGE_RULE}, e.g. 0,0.5,1 or 0:3:0.25 (step > 0)")
    parts = _numbers(text, float, bad)
    if not parts or not all(map(math.isfinite, parts)):
        raise bad
    if ":" in text:
        parts = _range("log10 compressions", text, parts, bad)
    if len(parts) > MAX_AXIS_VALUES:
        raise too_many("log10 compressions", text, len(parts))
    return tuple(round(p, 6) for p in parts)


def parse_seeds(text: str) -> Tuple[int, ...]:
    """`0,1,2` (a list) or `0:2` (start:stop[:step], both ends included): the same rule as every axis."""
    text = text.strip()
    bad = ValueError(f"bad seeds {text!r}; seeds are integers in [0, {MAX_SEED}]: give {RANGE_RULE}, e.g. 0,1,2 "
                     f"or 0:2")
    parts: List[int] = _numbers(text, int, bad)
    if ":" in text:
        parts = _range("seeds", text, parts, bad)
    if not parts or any(not 0 <= s <= MAX_SEED for s in parts):
        raise bad
    if len(parts) > MAX_AXIS_VALUES:
        raise too_many("seeds", text, len(parts))
    return tuple(parts)


def parse_names(text: str, what: str) -> Tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise ValueError(f"--{what} {text!r} names nothing; give a comma-separated list")
    return names
