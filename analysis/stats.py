"""Small-sample statistics for seed-level results: Student-t quantiles and 95% intervals of a mean.

Pure Python/numpy (scipy is not a dependency of the analysis). The t quantile
inverts the exact t distribution function, written with the regularized
incomplete beta function (continued fraction, Numerical Recipes 6.4), by
bisection; it agrees with scipy.stats.t.ppf to about 1e-9 relative.
"""
from __future__ import annotations

import functools
import math
from typing import Iterable, Tuple

import numpy as np

LEVEL = 0.95  # every interval in the analysis is a two-sided 95% t-interval


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 20000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (t >= 0)."""
    squared = t * t
    if squared < df:  # near the centre: 1/2 minus a small term, kept accurate by computing the small term
        return 0.5 - 0.5 * regularized_beta(squared / (df + squared), 0.5, df / 2.0)
    return 0.5 * regularized_beta(df / (df + squared), df / 2.0, 0.5)


def t_cdf(t: float, df: float) -> float:
    tail = t_upper_tail(abs(t), df)
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` > 0 degrees of freedom, e.g. t_quantile(0.975, 2) = 4.303."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must lie strictly between 0 and 1, got {p!r}")
    if not (df > 0 and math.isfinite(df)):
        raise ValueError(f"t_quantile: degrees of freedom must be a positive number, got {df!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p  # find t with P(T > t) = tail; the tail falls as t grows
    low, high = 0.0, 2.0
    while t_upper_tail(high, df) > tail:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_upper_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)


def half_width(std: float, n: int, level: float = LEVEL) -> float:
    """Half-width of the t-interval of a mean of `n` values with sample std `std`; NaN for n < 2."""
    if n is None or n < 2 or std is None or not math.isfinite(std):
        return math.nan
    return t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)


def half_widths(std: Iterable[float], n: Iterable[int], level: float = LEVEL) -> np.ndarray:
    """`half_width` element-wise (a column of stds and a column of counts)."""
    return np.array([half_width(float(s), int(k), level) for s, k in zip(std, n)], dtype=float)


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Tuple[float, float, int]:
    """(mean, half-width, n) of the non-NaN `values`; the half-width is NaN for fewer than two values."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), half_width(std, int(array.size), level), int(array.size)


def excludes_zero(low: float, high: float) -> bool:
    """True when the interval [low, high] lies strictly on one side of zero (False when it is NaN)."""
    return bool((low > 0) or (high < 0))
