"""Per-route health against a rolling baseline: degradation, error rate, timeouts.

Each evaluation window, the health engine hands every route its window's tally
(requests, errors, timeouts and a reservoir of durations) and the route judges
three alert levels, each with hysteresis (:class:`~perfnb.analysis.hysteresis.Hysteresis`):

- ``timeout``: at least ``timeout_min_count`` timeouts and ``timeout_share`` of
  the requests;
- ``error_rate``: an error share at or above ``error_rate_enter`` and the
  baseline's error share plus ``error_rate_margin``;
- ``degradation``: a p95 at or above ``degrade_ratio ×`` the baseline p95 and at
  least ``degrade_min_ms`` above it, once ``baseline_min_windows`` windows exist.

Leave thresholds sit ``recover_ratio`` of the way from the baseline to the enter
threshold. The baseline is the median of the last ``baseline_windows`` *calm*
windows (no alert open or forming), so a degradation never becomes the new normal
while it lasts.

>>> from perfnb.analysis.healthconfig import HealthConfig
>>> route = RouteHealth(HealthConfig(min_requests=1, enter_windows=1))
>>> tally = Tally()
>>> for _ in range(10):
...     tally.add(5.0, error=True, timeout=False)
>>> [(c.name, c.raised) for c in route.judge(tally, requests=10, timeouts=0)]
[('error_rate', True)]
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from typing import Final, NamedTuple

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.hysteresis import Hysteresis

__all__ = ["RouteChange", "RouteHealth", "Tally", "is_timeout", "percentile"]

#: Durations kept per window and route: enough for a p95, bounded at any volume.
RESERVOIR: Final = 512


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.95)
    4.0
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def is_timeout(status: int, error_type: str | None, duration: float | None, limit: float) -> bool:
    """A request timed out: 504 or 408, an error naming a timeout, or ``limit`` ms or longer.

    >>> is_timeout(0, "timeout", None, 10_000.0), is_timeout(200, None, 12.0, 10_000.0)
    (True, False)
    """
    if status in (408, 504):
        return True
    if error_type and "timeout" in error_type.lower():
        return True
    return duration is not None and duration >= limit


class Tally:
    """One window of one route from one view: requests, errors, timeouts, durations."""

    __slots__ = ("durations", "errors", "requests", "rng", "timeouts")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.durations: list[float] = []
        self.rng = rng

    def add(self, duration: float | None, *, error: bool, timeout: bool) -> None:
        """Count one request."""
        self.requests += 1
        self.errors += error
        self.timeouts += timeout
        if duration is None:
            return
        if len(self.durations) < RESERVOIR:
            self.durations.append(duration)
            return
        # Reservoir sampling keeps the window's p95 honest at any volume; a seeded
        # generator makes replays give the same answers.
        if self.rng is None:
            self.rng = random.Random(self.requests)
        slot = self.rng.randrange(self.requests)
        if slot < RESERVOIR:
            self.durations[slot] = duration


class RouteChange(NamedTuple):
    """An alert of one route raised (``raised=True``) or cleared, with its figure."""

    name: str
    raised: bool
    value: float
    reason: str


class RouteHealth:
    """A route's rolling baseline and its three alert levels."""

    __slots__ = ("config", "degradation", "error_shares", "errors", "p95s", "timeouts")

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.p95s: deque[float] = deque(maxlen=config.baseline_windows)
        self.error_shares: deque[float] = deque(maxlen=config.baseline_windows)
        enter, leave = config.enter_windows, config.leave_windows
        self.degradation = Hysteresis(enter=enter, leave=leave)
        self.errors = Hysteresis(enter=enter, leave=leave)
        self.timeouts = Hysteresis(enter=enter, leave=leave)

    @property
    def alerting(self) -> bool:
        """Whether an alert of this route is open."""
        return bool(self.degradation.level or self.errors.level or self.timeouts.level)

    @property
    def baseline(self) -> tuple[float, float, int] | None:
        """(p95 ms, error share, windows) of the baseline, or ``None`` before the first."""
        if not self.p95s:
            return None
        return statistics.median(self.p95s), statistics.median(self.error_shares), len(self.p95s)

    def judge(self, primary: Tally, *, requests: int, timeouts: int) -> list[RouteChange]:
        """Judge one window (``requests``/``timeouts`` over both views); the changes."""
        cfg = self.config
        recover = cfg.recover_ratio
        changes: list[RouteChange] = []

        def level(name: str, h: Hysteresis, up: bool, down: bool, value: float, why: str) -> None:
            if h.update(int(up), int(down)):
                changes.append(RouteChange(name, bool(h.level), value, why))

        share = primary.errors / primary.requests if primary.requests else 0.0
        p95 = percentile(primary.durations, 0.95) if primary.durations else None
        t_share = timeouts / requests if requests else 0.0
        level(
            "timeout",
            self.timeouts,
            timeouts >= cfg.timeout_min_count and t_share >= cfg.timeout_share,
            timeouts >= 1 and t_share >= cfg.timeout_share * recover,
            t_share,
            f"{timeouts} of {requests} requests timed out ({t_share:.0%})",
        )
        base_err = statistics.median(self.error_shares) if self.error_shares else 0.0
        enter = max(cfg.error_rate_enter, base_err + cfg.error_rate_margin)
        leave = base_err + (enter - base_err) * recover
        level(
            "error_rate",
            self.errors,
            share >= enter,
            share >= leave,
            share,
            f"{share:.0%} of {primary.requests} requests failed (baseline {base_err:.0%})",
        )
        slow = False
        if len(self.p95s) >= cfg.baseline_min_windows and p95 is not None:
            base = statistics.median(self.p95s)
            enter_ms = max(base * cfg.degrade_ratio, base + cfg.degrade_min_ms)
            leave_ms = base + (enter_ms - base) * recover
            slow = p95 >= enter_ms
            level(
                "degradation",
                self.degradation,
                slow,
                p95 >= leave_ms,
                p95,
                f"p95 {p95:.0f} ms against a baseline of {base:.0f} ms",
            )
        calm = not (slow or self.alerting or timeouts or share >= enter)
        if calm and p95 is not None:
            self.p95s.append(p95)
            self.error_shares.append(share)
        return changes
