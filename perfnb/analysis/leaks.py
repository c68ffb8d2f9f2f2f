"""Memory leak detection: sustained growth of a memory floor, robust to GC sawtooth.

Memory that is collected goes up and down: a sawtooth whose peaks say nothing.
What a leak raises is the *floor*, the lowest value between collections. The
detector keeps the minimum of each ``leak_bin_s`` bin (a bin longer than a GC
cycle holds a post-collection low) for the last ``leak_bins`` bins, and fits a
Theil–Sen slope (the median of the slopes between every pair of floors: a few
outliers cannot move it). A leak is reported when, over the most recent floors spanning
``leak_min_duration_s`` (a fast leak, caught soon after it starts) or over all
of them (a slow one):

- the slope is positive and the growth it implies over the floors' span is at
  least ``leak_min_growth_bytes`` and ``leak_min_growth_ratio`` of the first floor;
- at least ``leak_monotonic`` of the pairs of floors rise (growth is sustained,
  not one step).

It clears when the floor stops rising for ``leave_windows`` bins (or falls, when
the memory is freed).

Give it server RSS samples (``process`` records named ``rss_bytes``) or a
browser's JS heap (``js_heap_bytes``), one detector per process or page.

>>> from perfnb.analysis.healthconfig import HealthConfig
>>> config = HealthConfig(leak_bin_s=1, leak_min_duration_s=5, leak_min_growth_bytes=1e6)
>>> leak = LeakDetector(config)
>>> found = [leak.add(float(t), 50e6 + 1e6 * t) for t in range(12)]
>>> [e.state for e in found if e is not None]
['raised']
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from perfnb.analysis.healthconfig import HealthConfig

__all__ = ["LeakDetector", "LeakEvent", "theil_sen"]


@lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of every pair ``i < j`` of ``n`` points (a series keeps its length)."""
    first, second = np.triu_indices(n, k=1)
    return first, second


def theil_sen(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The Theil–Sen slope of ``(x, y)`` points and the share of pairs that rise.

    >>> theil_sen([(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0), (4, 100.0)])[0]
    1.0
    """
    # Every pair at once: with the 60 floors kept by default that is 1,770
    # slopes, which a loop in Python takes a millisecond to go through.
    n = len(points)
    if n < 2:
        return 0.0, 0.0
    xy = np.asarray(points, dtype=np.float64)
    first, second = _pairs(n)
    dx = xy[second, 0] - xy[first, 0]
    apart = dx != 0
    if not apart.any():
        return 0.0, 0.0
    slopes = (xy[second, 1] - xy[first, 1])[apart] / dx[apart]
    m = len(slopes)
    half = m // 2
    # The median by partition: np.median's generic path costs several times more here.
    if m % 2:
        median = float(np.partition(slopes, half)[half])
    else:
        low, high = np.partition(slopes, (half - 1, half))[half - 1 : half + 1]
        median = (float(low) + float(high)) / 2
    return median, float(np.count_nonzero(slopes > 0)) / m


@dataclass(frozen=True, slots=True)
class LeakEvent:
    """A leak raised or cleared: the floor's growth rate and the reason."""

    state: Literal["raised", "cleared"]
    bytes_per_s: float
    floor_bytes: float
    reason: str


class LeakDetector:
    """Floors of one memory series; :meth:`add` says when a leak starts or ends."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.floors: deque[tuple[float, float]] = deque(maxlen=config.leak_bins)
        self.leaking = False
        self._bin: int | None = None
        self._low = math.inf
        self._quiet = 0

    def add(self, t: float, value: float) -> LeakEvent | None:
        """One sample (epoch s, bytes); an event when a bin closes and the verdict changes."""
        index = math.floor(t / self.config.leak_bin_s)
        if self._bin is None:
            self._bin = index
        if index <= self._bin:
            # A late sample of an earlier bin only lowers the open floor: never harmful.
            self._low = min(self._low, value)
            return None
        closed = (self._bin * self.config.leak_bin_s, self._low)
        self._bin, self._low = index, value
        self.floors.append(closed)
        return self._judge()

    def _judge(self) -> LeakEvent | None:
        floors = list(self.floors)
        if self.leaking:
            return self._judge_recovery(floors)
        # The most recent floors that span the minimum duration catch a fast leak soon
        # after it starts; all the floors catch a slow one that needs the whole span.
        newest = floors[-1][0]
        recent = [f for f in floors if newest - f[0] <= self.config.leak_min_duration_s]
        if len(recent) < len(floors):
            recent = floors[-len(recent) - 1 :]
        for candidate in (recent, floors) if len(recent) < len(floors) else (floors,):
            event = self._leak_in(candidate)
            if event is not None:
                self.leaking, self._quiet = True, 0
                return event
        return None

    def _leak_in(self, floors: list[tuple[float, float]]) -> LeakEvent | None:
        cfg = self.config
        if len(floors) < 3:
            return None
        span = floors[-1][0] - floors[0][0]
        if span < cfg.leak_min_duration_s:
            return None
        slope, rising = theil_sen(floors)
        growth = slope * span
        first = floors[0][1]
        if (
            slope > 0
            and growth >= cfg.leak_min_growth_bytes
            and growth >= cfg.leak_min_growth_ratio * first
            and rising >= cfg.leak_monotonic
        ):
            reason = (
                f"memory floor grew {growth / 2**20:.1f} MiB in {span:.0f} s "
                f"({slope * 3600 / 2**20:.1f} MiB/h; {rising:.0%} of floor pairs rising), "
                f"now {floors[-1][1] / 2**20:.1f} MiB"
            )
            return LeakEvent("raised", slope, floors[-1][1], reason)
        return None

    def _judge_recovery(self, floors: list[tuple[float, float]]) -> LeakEvent | None:
        cfg = self.config
        k = cfg.leave_windows
        if len(floors) < 2:
            return None
        # The slowest leak the thresholds would report, per bin: a quarter of it is noise.
        tolerance = 0.25 * cfg.leak_min_growth_bytes * cfg.leak_bin_s / cfg.leak_min_duration_s
        before = floors[-2][1]
        self._quiet = self._quiet + 1 if floors[-1][1] <= before + tolerance else 0
        if self._quiet < k:
            return None
        self.leaking, self._quiet = False, 0
        last = floors[-1]
        self.floors.clear()
        self.floors.append(last)
        reason = f"memory floor stopped growing at {last[1] / 2**20:.1f} MiB"
        return LeakEvent("cleared", 0.0, last[1], reason)
