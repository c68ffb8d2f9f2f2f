"""Polling runaway detection: one client polling far more often than it should.

A well-behaved front end polls every ``poll_min_s``–``poll_max_s`` seconds (2–5 s
by default), one request at a time. A runaway shows up in three ways, each
judged per client over the last ``runaway_window_s`` seconds of its polls, as
soon as each poll is seen (so it is caught within a few polling periods):

- the **median interval** between its polls falls below
  ``poll_min_s × runaway_interval_ratio`` (1 s by default);
- **overlapping polls**: ``runaway_overlaps`` or more polls started before the
  client's previous poll had answered (a healthy loop waits for the answer);
- a **sudden multiplication** of its rate: ``runaway_rate_jump`` times the rate
  the client kept while it was calm, and faster than the expected minimum.

It needs ``runaway_min_polls`` polls in the look-back to judge. The alert clears
when the median interval is back above the leave threshold (the enter threshold
divided by ``recover_ratio``) with no overlaps, for ``leave_windows`` polls in a
row, or when the client stops polling for a whole look-back.

>>> from perfnb.analysis.healthconfig import HealthConfig
>>> tracker = PollTracker(HealthConfig())
>>> events = [tracker.poll("c1", "/api/poll", t * 0.25, 0.01) for t in range(12)]
>>> [e.state for e in events if e is not None]
['raised']
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

from perfnb.analysis.healthconfig import HealthConfig

__all__ = ["PollTracker", "RunawayEvent"]

#: Most polls one client keeps in its look-back: a runaway beyond this is plain.
_MAX_POLLS = 512


@dataclass(frozen=True, slots=True)
class RunawayEvent:
    """A runaway raised or cleared for one client."""

    state: Literal["raised", "cleared"]
    client: str
    route: str
    interval_s: float | None
    polls: int
    overlaps: int
    reason: str


class _Client:
    __slots__ = ("calm", "calm_rate", "last_median", "last_seen", "polls", "route", "runaway")

    def __init__(self) -> None:
        # (start, end) of recent polls, sorted by start.
        self.polls: deque[tuple[float, float]] = deque()
        self.last_seen = 0.0
        self.route = ""
        self.calm_rate: float | None = None
        self.runaway = False
        self.calm = 0
        self.last_median: float | None = None


class PollTracker:
    """Per-client polling cadence; :meth:`poll` says when a runaway starts or ends."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    @property
    def runaways(self) -> dict[str, float | None]:
        """Clients now in a runaway, with their last median interval (s)."""
        return {key: c.last_median for key, c in self._clients.items() if c.runaway}

    def __len__(self) -> int:
        return len(self._clients)

    def poll(self, client: str, route: str, start: float, duration_s: float) -> RunawayEvent | None:
        """Note one poll (start in epoch s, its duration); an event when the verdict changes."""
        cfg = self.config
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client()
            while len(self._clients) > cfg.max_clients:
                self._clients.popitem(last=False)  # the least recently seen
        else:
            self._clients.move_to_end(client)
        state.route = route
        state.last_seen = max(state.last_seen, start)
        polls = state.polls
        # Arrival order is nearly start order; insort keeps the rare late one in place.
        if not polls or start >= polls[-1][0]:
            polls.append((start, start + max(0.0, duration_s)))
        else:
            bisect.insort(polls, (start, start + max(0.0, duration_s)))
        horizon = polls[-1][0] - cfg.runaway_window_s
        while polls and (polls[0][0] < horizon or len(polls) > _MAX_POLLS):
            polls.popleft()
        return self._judge(client, state)

    def _judge(self, key: str, state: _Client) -> RunawayEvent | None:
        cfg = self.config
        polls = state.polls
        if len(polls) < 2:
            return None
        starts = [p[0] for p in polls]
        intervals = [b - a for a, b in itertools.pairwise(starts)]
        median = statistics.median(intervals)
        state.last_median = median
        if len(polls) < cfg.runaway_min_polls:
            # Too few to judge; a slow, steady poller still teaches its normal rate.
            if not state.runaway and median >= cfg.poll_min_s:
                self._learn(state, len(starts), starts[-1] - starts[0])
            return None
        overlaps = 0
        latest_end = polls[0][1]
        for begin, end in list(polls)[1:]:
            if begin < latest_end:
                overlaps += 1
            latest_end = max(latest_end, end)
        span = starts[-1] - starts[0]
        rate = (len(starts) - 1) / span if span > 0 else float("inf")
        enter_interval = cfg.poll_min_s * cfg.runaway_interval_ratio
        expected = f"expected every {cfg.poll_min_s:g}–{cfg.poll_max_s:g} s"
        if not state.runaway:
            reasons = []
            if median < enter_interval:
                reasons.append(f"polls every {median:.2f} s (median of {len(starts)} polls)")
            if overlaps >= cfg.runaway_overlaps:
                reasons.append(f"{overlaps} polls overlapped the previous one")
            jump = state.calm_rate is not None and rate >= cfg.runaway_rate_jump * state.calm_rate
            if jump and median < cfg.poll_min_s and state.calm_rate is not None:
                reasons.append(f"rate ×{rate / state.calm_rate:.1f} ({rate:.2f}/s)")
            if not reasons:
                if median < cfg.poll_min_s:
                    return None  # faster than expected, not (yet) a runaway: no new normal
                self._learn(state, len(starts), span)
                return None
            state.runaway, state.calm = True, 0
            return RunawayEvent(
                "raised",
                key,
                state.route,
                median,
                len(starts),
                overlaps,
                f"client {key} {'; '.join(reasons)}, {expected}",
            )
        leave_interval = enter_interval / cfg.recover_ratio
        if median >= leave_interval and overlaps == 0:
            state.calm += 1
        else:
            state.calm = 0
        if state.calm < cfg.leave_windows:
            return None
        return self._clear(key, state, f"client {key} polls every {median:.2f} s again")

    @staticmethod
    def _learn(state: _Client, polls: int, span: float) -> None:
        # Calm: remember the rate this client keeps, to spot a sudden jump.
        if span <= 0:
            return
        rate = (polls - 1) / span
        old = state.calm_rate
        state.calm_rate = rate if old is None else 0.8 * old + 0.2 * rate

    def _clear(self, key: str, state: _Client, reason: str) -> RunawayEvent:
        state.runaway, state.calm = False, 0
        state.calm_rate = None
        return RunawayEvent(
            "cleared", key, state.route, state.last_median, len(state.polls), 0, reason
        )

    def sweep(self, now: float) -> list[RunawayEvent]:
        """Clear runaways of clients silent for a look-back; forget long-gone clients."""
        cfg = self.config
        events = []
        forget_before = now - max(6 * cfg.runaway_window_s, 60.0)
        for key, state in list(self._clients.items()):
            if state.runaway and state.last_seen < now - cfg.runaway_window_s:
                events.append(self._clear(key, state, f"client {key} stopped polling"))
            if state.last_seen < forget_before:
                del self._clients[key]
        return events
