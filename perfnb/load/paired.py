"""Paired comparisons over rounds: the statistics of the impact measurement.

Each round measures a figure in both states (off, on); the rounds are the
independent units. The difference on − off is summarised by its mean and a
**paired t-interval**: mean ± t(1 − α/2, n − 1) · sd / √n, with Student's t
quantile computed here (stdlib only). The same is done for the per-round relative
differences (on/off − 1, in %).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from perfnb.errors import ConfigError

__all__ = ["Difference", "paired_difference", "t_quantile"]


@dataclass(frozen=True, slots=True)
class Difference:
    """on − off for one figure: mean over rounds, with its confidence interval.

    ``pct*`` are the same for the per-round relative differences (on/off − 1, in %).
    """

    name: str
    unit: str
    off: float
    on: float
    diff: float
    low: float
    high: float
    pct: float
    pct_low: float
    pct_high: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _t_cdf(x: float, df: int) -> float:
    # Simpson's rule over the density from 0 to x; exact enough (1e-7) for quantiles
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    n = 2000
    h = x / n
    total = 0.0
    for i in range(n + 1):
        t = i * h
        w = 1 if i in (0, n) else (4 if i % 2 else 2)
        total += w * (1 + t * t / df) ** (-(df + 1) / 2)
    return 0.5 + c * total * h / 3


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t distribution with ``df`` degrees of freedom.

    >>> round(t_quantile(0.975, 4), 3), round(t_quantile(0.975, 30), 3)
    (2.776, 2.042)
    """
    if not 0.5 < p < 1 or df < 1:
        msg = f"t_quantile(p={p!r}, df={df!r}): accepted: 0.5 < p < 1 and df ≥ 1"
        raise ConfigError(msg)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _interval(values: Sequence[float], confidence: float) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_difference(
    name: str, unit: str, pairs: Sequence[tuple[float, float]], confidence: float
) -> Difference:
    """on − off over paired (off, on) figures: the mean difference and a paired t-interval.

    >>> d = paired_difference("p50", "µs", [(100.0, 110.0), (200.0, 212.0), (150.0, 158.0)], 0.95)
    >>> round(d.diff, 1), round(d.low, 1), round(d.high, 1)
    (10.0, 5.0, 15.0)
    """
    diffs = [on - off for off, on in pairs]
    rel = [100.0 * (on / off - 1.0) for off, on in pairs if off > 0]
    mean, low, high = _interval(diffs, confidence)
    pct, pct_low, pct_high = _interval(rel, confidence) if rel else (0.0, 0.0, 0.0)
    return Difference(
        name=name,
        unit=unit,
        off=statistics.fmean(off for off, _ in pairs),
        on=statistics.fmean(on for _, on in pairs),
        diff=mean,
        low=low,
        high=high,
        pct=pct,
        pct_low=pct_low,
        pct_high=pct_high,
    )
