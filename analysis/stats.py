"""Small-sample statistics for seed-level results: Student-t quantiles and 95% intervals of a mean.

Pure Python/numpy (scipy is not a dependency of the analysis). The t quantile
inverts the exact t distribution function, written with the regularized
incomplete beta function (continued fraction, Numerical Recipes 6.4), by
bisection; it agrees with scipy.stats.t.ppf to about 1e-9 relative.
"""
from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence, Tuple

import numpy as np

LEVEL = 0.95  # every interval in the analysis is a two-sided 95% t-interval
ALPHA = 1.0 - LEVEL
# Below this many seeds no interval and no test: with 2 seeds the 95% t-interval is mean ± 12.7 · std / √2,
# wider than an accuracy's whole range, and one lucky pair decides a "significant" difference.
MIN_SEEDS_FOR_INTERVAL = 3


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
    """Half-width of the t-interval of a mean of `n` values with sample std `std`; NaN below
    MIN_SEEDS_FOR_INTERVAL values."""
    if n is None or n < MIN_SEEDS_FOR_INTERVAL or std is None or not math.isfinite(std):
        return math.nan
    return t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)


def half_widths(std: Iterable[float], n: Iterable[int], level: float = LEVEL) -> np.ndarray:
    """`half_width` element-wise (a column of stds and a column of counts)."""
    return np.array([half_width(float(s), int(k), level) for s, k in zip(std, n)], dtype=float)


def paired_t_p_value(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (the paired t-test on differences); NaN when
    untestable: fewer than MIN_SEEDS_FOR_INTERVAL values, or no spread (every difference the same)."""
    if n < MIN_SEEDS_FOR_INTERVAL or not (std > 0) or not math.isfinite(std):
        return math.nan
    return min(1.0, 2.0 * t_upper_tail(abs(mean) / (std / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holm-Bonferroni over one family: (adjusted p-values, rejected, the alpha each test was held to).

    NaN p-values (untested comparisons) are outside the family. With the m
    tested p-values sorted, p_(1) <= ... <= p_(m), step i compares p_(i) with
    alpha / (m - i + 1) and the procedure stops at the first k that fails;
    the adjusted p-value is max over j <= i of min(1, (m - j + 1) p_(j)).
    `levels[i]` is alpha / (m - min(i, k) + 1): the level Holm tested
    comparison i at (every comparison after the stop is held to the stop's
    level). A two-sided t-interval at that level excludes zero exactly when
    Holm rejects, so a table's intervals and its marks never disagree.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    rejected = np.zeros(p.shape, dtype=bool)
    levels = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return adjusted, rejected, levels
    order = tested[np.argsort(p[tested], kind="stable")]
    running, stop = 0.0, m  # stop: the 0-based rank of the first comparison Holm fails to reject
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
        if stop == m and p[index] > alpha / (m - rank):
            stop = rank
        levels[index] = alpha / (m - min(rank, stop))
        rejected[index] = rank < stop
    return adjusted, rejected, levels


def interval_at(mean: float, std: float, n: int, alpha: float) -> Tuple[float, float]:
    """The two-sided (1 - alpha) t-interval of a mean; NaNs when `alpha` is NaN (an untested comparison)."""
    if not math.isfinite(alpha) or n < 2:
        return math.nan, math.nan
    half = t_quantile(1.0 - alpha / 2.0, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half
