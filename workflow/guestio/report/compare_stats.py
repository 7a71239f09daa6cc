"""The statistics of one compared row: a centre with its bootstrap CI, and a test of A against B."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats

from guestio.analysis.stats import DEFAULT_CONFIDENCE, SIGNIFICANCE_LEVEL, bootstrap_mean_ci

DEFAULT_SEED = 2010
DEFAULT_N_RESAMPLES = 10_000


@dataclass
class Options:
    robust: bool = False
    alpha: float = SIGNIFICANCE_LEVEL
    seed: int = DEFAULT_SEED
    n_resamples: int = DEFAULT_N_RESAMPLES


def median_ci(values: np.ndarray, seed: int, n_resamples: int) -> tuple[float, float, float]:
    """(median, low, high): the percentile-bootstrap CI of the median, drawn as
    guestio.analysis.stats draws the mean's (one generator seeded with ``seed``)."""
    median = float(np.median(values))
    if values.size < 2:
        return median, math.nan, math.nan
    result = _stats.bootstrap((values,), np.median, n_resamples=n_resamples, vectorized=True, axis=-1,
                              confidence_level=DEFAULT_CONFIDENCE, method="percentile",
                              rng=np.random.default_rng(seed))
    return median, float(result.confidence_interval.low), float(result.confidence_interval.high)


def mann_whitney(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the Mann-Whitney U test (exact for small samples without ties);
    nan with fewer than two values a side, as Welch's test."""
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0      # one value everywhere: nothing to rank
    return float(_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def centre_ci(values: np.ndarray, opts: Options) -> tuple[float, float, float]:
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if opts.robust:
        return median_ci(values, opts.seed, opts.n_resamples)
    return bootstrap_mean_ci(values, opts.seed, opts.n_resamples)


def ci_z_test(va: float, la: float, ha: float, vb: float, lb: float, hb: float) -> float:
    """Two-sided p that two estimates with 95% CIs are equal, the standard error read from each
    CI's width (on the log scale where everything is positive, as a ratio's CI is skewed)."""
    values = [va, la, ha, vb, lb, hb]
    if not all(math.isfinite(v) for v in values):
        return math.nan
    if all(v > 0 for v in values):
        va, la, ha, vb, lb, hb = (math.log(v) for v in values)
    z975 = float(_stats.norm.ppf(0.5 + DEFAULT_CONFIDENCE / 2))
    se = math.hypot((ha - la) / (2 * z975), (hb - lb) / (2 * z975))
    if se == 0.0:
        return 1.0 if va == vb else 0.0    # both exact (counts): equal or not
    return float(2 * _stats.norm.sf(abs(vb - va) / se))
