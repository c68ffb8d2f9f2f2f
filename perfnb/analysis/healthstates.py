"""The three app-wide health states, judged once per window of the health engine.

Each judge returns a :class:`Verdict`: the level (0 best) against the thresholds
of :class:`~perfnb.analysis.healthconfig.HealthConfig`, the level against the
same thresholds scaled by ``recover_ratio`` (what a worse state must get under to
recover; :mod:`perfnb.analysis.hysteresis` decides), and the reason, or ``None``
when the window holds nothing to judge. The rules are tabled in
:mod:`perfnb.analysis.health`.

>>> from perfnb.analysis.routehealth import Tally
>>> tally = Tally()
>>> for _ in range(20):
...     tally.add(600.0, error=False, timeout=False)
>>> judge_server(HealthConfig(), tally, requests=20, timeouts=0)
Verdict(up=1, down=1, reason='p95 600 ms over 20 requests (slow at 500 ms)')
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from typing import Final, NamedTuple

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.routehealth import Tally, percentile

__all__ = ["ClientWindow", "Verdict", "judge_polling", "judge_server"]

_LONG_FRAMES: Final = frozenset({"long-animation-frame", "long-task"})


class Verdict(NamedTuple):
    """One state's judgement of a window: levels against the thresholds, and why."""

    up: int
    down: int
    reason: str


def judge_polling(
    cfg: HealthConfig,
    polls: Tally,
    runaways: Mapping[str, float | None],
    intervals: list[float],
) -> Verdict | None:
    """``apiPolling`` from the window's polls, the clients running away and poll intervals."""
    if not polls.requests and not runaways:
        return None
    share = polls.errors / polls.requests if polls.requests else 0.0
    median = statistics.median(intervals) if intervals else None
    slow = cfg.poll_max_s * cfg.poll_slow_ratio

    def grade(scale: float) -> int:
        if share >= cfg.poll_failing_errors * scale:
            return 2
        late = median is not None and median > slow * scale
        return int(share >= cfg.poll_degraded_errors * scale or bool(runaways) or late)

    if runaways:
        client, interval = next(iter(runaways.items()))
        every = f"every {interval:.2f} s" if interval is not None else "too often"
        reason = f"{len(runaways)} client(s) running away ({client} polls {every})"
    elif median is not None and median > slow:
        reason = f"polls every {median:.1f} s, expected {cfg.poll_min_s:g}–{cfg.poll_max_s:g} s"
    else:
        every = f", median every {median:.1f} s" if median is not None else ""
        reason = f"{share:.0%} of {polls.requests} polls failed{every}"
    return Verdict(grade(1.0), grade(cfg.recover_ratio), reason)


def judge_server(
    cfg: HealthConfig, primary: Tally | None, *, requests: int, timeouts: int
) -> Verdict | None:
    """``serverResponse`` from all requests of the window (``primary``: the view with data)."""
    if primary is None or requests < cfg.min_requests or not primary.durations:
        return None
    p95 = percentile(primary.durations, 0.95)
    share = timeouts / requests

    def grade(scale: float) -> int:
        if share >= cfg.timeout_share * scale and timeouts:
            return 2
        return int(p95 >= cfg.slow_ms * scale)

    if share >= cfg.timeout_share * cfg.recover_ratio and timeouts:
        reason = f"{timeouts} of {requests} requests timed out ({share:.0%})"
    else:
        reason = f"p95 {p95:.0f} ms over {requests} requests (slow at {cfg.slow_ms:g} ms)"
    return Verdict(grade(1.0), grade(cfg.recover_ratio), reason)


class ClientWindow:
    """``clientPerformance``: browsers' Web Vitals and long frames over ``vitals_window_s``.

    Bounded: at most 20,000 vitals and 20,000 long frames are kept.

    >>> window = ClientWindow(HealthConfig())
    >>> window.vital(0.0, "LCP", 5000.0)
    >>> window.judge(1.0).up
    2
    """

    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg
        self._vitals: deque[tuple[float, str, float]] = deque(maxlen=20_000)
        self._long_frames: deque[float] = deque(maxlen=20_000)
        self._renders_seen = 0.0

    def vital(self, now: float, name: object, value: object) -> None:
        """A Web Vital arrived at ``now`` (names the config does not judge are left out)."""
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(name, str) and name in self.cfg.vitals and number:
            self._vitals.append((now, name, float(value)))  # type: ignore[arg-type]

    def render(self, now: float, name: object, length: float) -> None:
        """A render measure arrived at ``now``; a long enough frame counts."""
        self._renders_seen = now
        if name in _LONG_FRAMES and length >= self.cfg.long_frame_ms:
            self._long_frames.append(now)

    def judge(self, now: float) -> Verdict | None:
        """The state over the look-back ending at ``now``; ``None`` when browsers are silent."""
        cfg = self.cfg
        horizon = now - cfg.vitals_window_s
        while self._vitals and self._vitals[0][0] < horizon:
            self._vitals.popleft()
        while self._long_frames and self._long_frames[0] < horizon:
            self._long_frames.popleft()
        if not self._vitals and self._renders_seen < horizon:
            return None
        by_name: dict[str, list[float]] = {}
        for _, name, value in self._vitals:
            by_name.setdefault(name, []).append(value)
        per_minute = len(self._long_frames) * 60.0 / cfg.vitals_window_s
        judged = []
        for name, values in sorted(by_name.items()):
            good, poor = cfg.vitals[name]
            p75 = percentile(values, 0.75)
            shown = f"{p75:.3g}" if name == "CLS" else f"{p75:.0f} ms"
            judged.append((p75, good, poor, f"{name} {shown}"))

        def grade(scale: float) -> int:
            worst = 0
            for p75, good, poor, _text in judged:
                worst = max(worst, 2 if p75 > poor * scale else int(p75 > good * scale))
            if per_minute >= cfg.long_frames_poor * scale:
                return 2
            return max(worst, int(per_minute >= cfg.long_frames_degraded * scale))

        parts = [text for *_, text in judged]
        reason = ", ".join(parts) + (" at p75; " if parts else "")
        reason += f"{per_minute:.0f} long frames/min"
        return Verdict(grade(1.0), grade(cfg.recover_ratio), reason)
