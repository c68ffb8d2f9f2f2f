"""Significance tests for comparing two periods, computed from sketches and counts.

- :func:`mann_whitney`: the Mann–Whitney U test of two latency sketches from their
  bucket counts (values in one bucket count as ties, with the tie correction and the
  normal approximation), with Cliff's delta and the common-language effect size;
- :func:`two_proportion_test`: a one-sided pooled z-test of two error rates;
- :func:`rate_test`: a one-sided test of two Poisson rates (conditional binomial).

Normal tails come from :func:`math.erfc`; no SciPy.

>>> a = LatencySketch.of([10.0] * 50 + [12.0] * 50)
>>> b = LatencySketch.of([12.0] * 50 + [14.0] * 50)
>>> mann_whitney(a, b).p_greater < 0.001
True
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from perfnb.analysis.sketch import LatencySketch

__all__ = ["RankTest", "mann_whitney", "rate_test", "two_proportion_test"]


class RankTest(NamedTuple):
    """A Mann–Whitney U test of ``current`` against ``baseline`` from bucket counts.

    ``u`` counts pairs where the current value is larger (ties ½); ``prob_greater`` is
    ``u / (n1 n2)`` (the common-language effect size), ``cliffs_delta`` is
    ``2 prob_greater - 1``; ``p_greater`` is the one-sided p-value for "current is
    slower", ``z`` its normal score (continuity and tie corrected).
    """

    u: float
    z: float
    p_greater: float
    prob_greater: float
    cliffs_delta: float


#: Key of the zero bucket in the rank test: below every real bucket key.
_ZERO_KEY: Final = -(2**62)


def _buckets(sketch: LatencySketch) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    keys, counts = sketch.to_arrays()
    if sketch.zeros:
        keys = np.concatenate([[_ZERO_KEY], keys]).astype(np.int64)
        counts = np.concatenate([[sketch.zeros], counts]).astype(np.int64)
    return keys, counts


def mann_whitney(baseline: LatencySketch, current: LatencySketch) -> RankTest:
    """Mann–Whitney U of two sketches (values in one bucket are ties).

    >>> a = LatencySketch.of([1.0, 2.0, 3.0] * 20)
    >>> b = LatencySketch.of([2.0, 3.0, 4.0] * 20)
    >>> test = mann_whitney(a, b)
    >>> round(test.cliffs_delta, 3), test.p_greater < 0.01
    (0.556, True)
    """
    n1, n2 = baseline.count, current.count
    if n1 == 0 or n2 == 0:
        return RankTest(math.nan, math.nan, math.nan, math.nan, math.nan)
    ka, ca = _buckets(baseline)
    kb, cb = _buckets(current)
    keys = np.union1d(ka, kb)
    a = np.zeros(keys.size, dtype=np.float64)
    b = np.zeros(keys.size, dtype=np.float64)
    np.add.at(a, np.searchsorted(keys, ka), ca)
    np.add.at(b, np.searchsorted(keys, kb), cb)
    below_a = np.cumsum(a) - a  # baseline values strictly below each bucket
    u = float(np.sum(b * (below_a + 0.5 * a)))
    pairs = float(n1) * float(n2)
    n = float(n1 + n2)
    ties = a + b
    tie_term = float(np.sum(ties**3 - ties)) / (n * (n - 1.0)) if n > 1 else 0.0
    variance = pairs / 12.0 * ((n + 1.0) - tie_term)
    prob = u / pairs
    if variance <= 0.0:
        return RankTest(u, 0.0, 1.0, prob, 2.0 * prob - 1.0)
    z = (u - pairs / 2.0 - 0.5) / math.sqrt(variance)
    return RankTest(u, z, _upper_tail(z), prob, 2.0 * prob - 1.0)


def _upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_test(errors_a: int, n_a: int, errors_b: int, n_b: int) -> float:
    """One-sided p-value that the second error rate is higher (pooled z-test).

    >>> two_proportion_test(10, 1000, 40, 1000) < 0.001
    True
    """
    if n_a <= 0 or n_b <= 0:
        return math.nan
    pooled = (errors_a + errors_b) / (n_a + n_b)
    spread = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if spread <= 0.0:
        return 1.0
    z = (errors_b / n_b - errors_a / n_a) / math.sqrt(spread)
    return _upper_tail(z)


def rate_test(count_a: int, seconds_a: float, count_b: int, seconds_b: float) -> float:
    """One-sided p-value that the second rate is lower (Poisson counts, conditional test).

    Given ``count_a + count_b`` events, ``count_b`` is binomial with share
    ``seconds_b / (seconds_a + seconds_b)`` when the rates are equal.

    >>> rate_test(1000, 60, 700, 60) < 0.001
    True
    """
    total = count_a + count_b
    if total == 0 or seconds_a <= 0 or seconds_b <= 0:
        return math.nan
    share = seconds_b / (seconds_a + seconds_b)
    expected = total * share
    z = (count_b - expected) / math.sqrt(total * share * (1.0 - share))
    return _upper_tail(-z)
