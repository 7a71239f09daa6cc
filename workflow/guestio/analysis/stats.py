"""Seeded bootstrap confidence intervals and Welch's t-test, without scipy.

Every function is deterministic: the same values (in the same order) and the
same seed give bit-identical results, because all randomness comes from one
``numpy.random.default_rng(seed)`` created inside the call.

Conventions
-----------
* Intervals are two-sided percentile bootstrap intervals: the
  ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (numpy's
  default linear interpolation) of the resampled statistic.
* With a single value there is no spread to resample, so the interval is
  ``(nan, nan)``: the point estimate is returned but no CI is claimed.  A
  zero-width ``(v, v)`` interval would suggest a certainty one measurement
  cannot give, and a plot drawing it would look like a tiny error bar.
* Empty input, or NaN/inf among the values, raises ``ValueError``: callers drop
  missing measurements explicitly, never by accident.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["DEFAULT_N_RESAMPLES", "DEFAULT_CONFIDENCE", "SIGNIFICANCE_LEVEL",
           "bootstrap_mean_ci", "bootstrap_ratio_ci", "welch_t_test", "welch_significance",
           "significance_mark", "t_sf"]

DEFAULT_N_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
SIGNIFICANCE_LEVEL = 0.05


def _as_values(values: Sequence[float] | np.ndarray, what: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains NaN or infinite values: {arr.tolist()}")
    return arr


def _check(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, not {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")


def _resampled_means(rng: np.random.Generator, arr: np.ndarray, n_resamples: int) -> np.ndarray:
    idx = rng.integers(0, arr.size, size=(int(n_resamples), arr.size))
    return arr[idx].mean(axis=1)


def _percentiles(stat: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(stat, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, seed: int,
                      n_resamples: int = DEFAULT_N_RESAMPLES,
                      confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and its percentile-bootstrap CI.

    ``n_resamples`` resamples of ``len(values)`` values, drawn with replacement
    by ``numpy.random.default_rng(seed)``.  One value: ``(v, nan, nan)``.
    """
    _check(n_resamples, confidence)
    arr = _as_values(values)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    low, high = _percentiles(_resampled_means(rng, arr, n_resamples), confidence)
    return mean, low, high


def bootstrap_ratio_ci(numerator_values: Sequence[float] | np.ndarray,
                       denominator_values: Sequence[float] | np.ndarray, seed: int,
                       n_resamples: int = DEFAULT_N_RESAMPLES,
                       confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """(ratio of means, low, high) for mean(numerator) / mean(denominator).

    The two groups are independent samples (e.g. VM runs and native runs), so
    each is resampled on its own: one generator seeded with ``seed`` draws the
    numerator resamples first, then the denominator resamples.  If either group
    has a single value the interval is ``(nan, nan)``.  A denominator mean of
    zero raises ``ValueError``; a resample whose denominator mean is zero (only
    possible with zeros among the values) gives an infinite ratio that is kept
    in the quantiles, which then honestly shows the interval as unbounded.
    """
    _check(n_resamples, confidence)
    num = _as_values(numerator_values, "numerator_values")
    den = _as_values(denominator_values, "denominator_values")
    den_mean = float(den.mean())
    if den_mean == 0.0:
        raise ValueError("denominator_values: mean is zero, the ratio is undefined")
    ratio = float(num.mean()) / den_mean
    if num.size < 2 or den.size < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    num_means = _resampled_means(rng, num, n_resamples)
    den_means = _resampled_means(rng, den, n_resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num_means / den_means
    ratios = np.where(np.isnan(ratios), np.inf, ratios)  # 0/0 only if both resamples are all zero
    low, high = _percentiles(ratios, confidence)
    return ratio, low, high


# --- Student's t distribution -------------------------------------------------

def _betacf(a: float, b: float, x: float, max_iter: int = 500, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: continued fraction did not converge (a={a}, b={b}, x={x})")


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (> 0, not necessarily integer) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, not {df!r}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def welch_t_test(a: Sequence[float] | np.ndarray,
                 b: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """(t, df, two-sided p) of Welch's unequal-variance t-test of mean(a) == mean(b).

    Fewer than two values in a group: (nan, nan, nan).  Both groups without
    spread: p = 1 if the means are equal, else 0 (t = +-inf, df = nan).
    """
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    na, nb = xa.size, xb.size
    if na < 2 or nb < 2:
        return math.nan, math.nan, math.nan
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    diff = float(xa.mean() - xb.mean())
    se2 = va + vb
    if se2 == 0.0:
        if diff == 0.0:
            return 0.0, math.nan, 1.0
        return math.copysign(math.inf, diff), math.nan, 0.0
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    return t, df, p


def welch_significance(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test (nan when a group has fewer than 2 values)."""
    return welch_t_test(a, b)[2]


def significance_mark(p: float, level: float = SIGNIFICANCE_LEVEL) -> str:
    """mmtests-style mark: "*" when p < level, "" otherwise (also for nan)."""
    return "*" if (p == p and p < level) else ""
