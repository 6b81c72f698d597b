"""One look for every figure: a fixed colour per algorithm, a fixed order, compression labels.

A fixed map (not a colour cycle) keeps synflow the same red in every figure,
whatever subset of algorithms a panel happens to hold.
"""
from __future__ import annotations

import zlib
from typing import Iterable, List

ALGORITHM_COLORS = {
    "synflow": "#d62728",
    "snip": "#1f77b4",
    "grasp": "#2ca02c",
    "magnitude": "#9467bd",
    "random": "#7f7f7f",
    "imp": "#ff7f0e",
    "force": "#17becf",
    "grasp_abs": "#bcbd22",
    "synflow_l2": "#ff9896",
    "prospr": "#8c564b",
    "ntk_sap": "#e377c2",
    "px": "#393b79",
}
# For plugins' algorithms: none of these is a fixed colour above.
FALLBACK_COLORS = ("#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363")
DENSE_COLOR = "#222222"


def algorithm_color(algorithm: str) -> str:
    """The algorithm's colour; an unknown name gets a fallback colour that is stable across figures."""
    if algorithm in ALGORITHM_COLORS:
        return ALGORITHM_COLORS[algorithm]
    return FALLBACK_COLORS[zlib.crc32(algorithm.encode()) % len(FALLBACK_COLORS)]


def algorithm_order(algorithms: Iterable[str]) -> List[str]:
    """Known algorithms in the fixed order, then any others alphabetically."""
    names = set(algorithms)
    known = [a for a in ALGORITHM_COLORS if a in names]
    return known + sorted(names - set(known))


def format_ratio(compression: float) -> str:
    """A compression ratio as text, e.g. 31.6x or 1,000x."""
    if compression >= 1000:
        return f"{compression:,.0f}x"
    return f"{compression:.3g}x"
