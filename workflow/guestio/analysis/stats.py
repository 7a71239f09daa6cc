"""Seeded bootstrap confidence intervals and Welch's t-test, on top of scipy.stats.

Every function is deterministic: the same values (in the same order) and the
same seed give bit-identical results, because all randomness comes from one
``numpy.random.default_rng(seed)`` created inside the call and handed to
``scipy.stats.bootstrap``.

Conventions
-----------
* Intervals are two-sided percentile bootstrap intervals
  (``scipy.stats.bootstrap(method="percentile")``): the ``(1 - confidence) / 2``
  and ``(1 + confidence) / 2`` quantiles (linear interpolation) of the
  resampled statistic.  Each resample draws ``len(values)`` indices with
  replacement, ``rng.integers(0, n, (n_resamples, n))``; with two independent
  groups (``paired=False``) the numerator's indices are drawn first, then the
  denominator's.
* With a single value there is no spread to resample, so the interval is
  ``(nan, nan)``: the point estimate is returned but no CI is claimed.  A
  zero-width ``(v, v)`` interval would suggest a certainty one measurement
  cannot give, and a plot drawing it would look like a tiny error bar.
* Empty input, or NaN/inf among the values, raises ``ValueError``: callers drop
  missing measurements explicitly, never by accident.
* Welch's unequal-variance t-test is ``scipy.stats.ttest_ind(equal_var=False)``;
  the cases scipy answers with NaN and a warning (fewer than two values, no
  spread in either group) are decided here, as documented on ``welch_t_test``.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats as _stats

__all__ = ["DEFAULT_N_RESAMPLES", "DEFAULT_CONFIDENCE", "SIGNIFICANCE_LEVEL",
           "bootstrap_mean_ci", "bootstrap_ratio_ci", "bootstrap_sum_ratio_ci", "welch_t_test", "welch_significance",
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


def _percentile_ci(samples: tuple[np.ndarray, ...], statistic, seed: int, n_resamples: int,
                   confidence: float) -> tuple[float, float]:
    # errstate: scipy also computes the bootstrap distribution's standard error (not used here),
    # which warns about inf - inf when a resampled ratio is infinite; the quantiles are exact.
    with np.errstate(invalid="ignore"):
        result = _stats.bootstrap(samples, statistic, n_resamples=int(n_resamples), batch=None,
                                  vectorized=True, paired=False, axis=-1, confidence_level=confidence,
                                  alternative="two-sided", method="percentile",
                                  rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


def _ratio_of_means(numerator: np.ndarray, denominator: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.mean(numerator, axis=axis) / np.mean(denominator, axis=axis)
    return np.where(np.isnan(ratios), np.inf, ratios)  # 0/0 only if both resamples are all zero


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
    low, high = _percentile_ci((arr,), _mean, seed, n_resamples, confidence)
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
    low, high = _percentile_ci((num, den), _ratio_of_means, seed, n_resamples, confidence)
    return ratio, low, high


def _sum_ratio_of_means(numerator: np.ndarray, *denominators: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.mean(numerator, axis=axis) / sum(np.mean(d, axis=axis) for d in denominators)
    return np.where(np.isnan(ratios), np.inf, ratios)


def bootstrap_sum_ratio_ci(numerator: np.ndarray, denominators: Sequence[np.ndarray], seed: int,
                           n_resamples: int) -> tuple[float, float, float]:
    """mean(numerator) / (sum of the denominators' means), each group resampled on its own."""
    ratio = float(numerator.mean()) / sum(float(d.mean()) for d in denominators)
    if numerator.size < 2 or any(d.size < 2 for d in denominators):
        return ratio, math.nan, math.nan
    low, high = _percentile_ci((numerator, *denominators), _sum_ratio_of_means, seed, n_resamples, 0.95)
    return ratio, low, high


# --- Welch's t-test -------------------------------------------------------------

def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (> 0, not necessarily integer) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, not {df!r}")
    return float(_stats.t.sf(t, df))


def welch_t_test(a: Sequence[float] | np.ndarray,
                 b: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """(t, df, two-sided p) of Welch's unequal-variance t-test of mean(a) == mean(b).

    Fewer than two values in a group: (nan, nan, nan).  Both groups without
    spread: p = 1 if the means are equal, else 0 (t = +-inf, df = nan).
    """
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    if xa.size < 2 or xb.size < 2:
        return math.nan, math.nan, math.nan
    if xa.var(ddof=1) == 0.0 and xb.var(ddof=1) == 0.0:
        diff = float(xa.mean() - xb.mean())
        if diff == 0.0:
            return 0.0, math.nan, 1.0
        return math.copysign(math.inf, diff), math.nan, 0.0
    with warnings.catch_warnings():
        # One group without spread (e.g. a CPU utilisation of 81 % in every run) is valid input;
        # scipy flags it as "nearly identical" data although its variance is exactly zero.
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        result = _stats.ttest_ind(xa, xb, equal_var=False)
    return float(result.statistic), float(result.df), float(result.pvalue)


def welch_significance(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test (nan when a group has fewer than 2 values)."""
    return welch_t_test(a, b)[2]


def significance_mark(p: float, level: float = SIGNIFICANCE_LEVEL) -> str:
    """mmtests-style mark: "*" when p < level, "" otherwise (also for nan)."""
    return "*" if (p == p and p < level) else ""
