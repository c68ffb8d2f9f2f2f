"""Safety limits that stop a load run, and the record of why a run stopped.

The controller hands :class:`SafetyMonitor` the figures of the last moments
several times a second; the first limit crossed becomes a :class:`StopEvent`
with its reason and the figures that tripped it. The target's memory is read
from the app's perfnb feed snapshot (``metrics.memoryUsage`` in MB, the
requirements document's shape) by :class:`TargetMemoryProbe`.

>>> limits = Limits(max_error_rate=0.05, min_requests=10)
>>> SafetyMonitor(limits).check(Window(requests=100, errors=9, p95_ms=3.0), elapsed=2.0).reason
'error_rate'
"""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from perfnb.errors import ConfigError
from perfnb.load.engine import Target

__all__ = [
    "STOP_REASONS",
    "Limits",
    "SafetyMonitor",
    "StopEvent",
    "TargetMemoryProbe",
    "Window",
]

StopReason = Literal[
    "completed",
    "error_rate",
    "p95_latency",
    "target_memory",
    "generator_memory",
    "duration",
    "emergency_stop",
    "interrupt",
    "worker_failed",
]
STOP_REASONS: Final = (
    "completed",
    "error_rate",
    "p95_latency",
    "target_memory",
    "generator_memory",
    "duration",
    "emergency_stop",
    "interrupt",
    "worker_failed",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Safety limits of a run; ``None`` switches a limit off.

    - ``max_error_rate``: share of failed requests (0–1) over the last
      ``error_window`` seconds, once at least ``min_requests`` were sent in it;
    - ``max_p95_ms``: p95 of request times over the same window (ms): requests that
      succeeded, failed (their real elapsed time) or are still waiting for a response
      (their age so far), so a target that stops answering trips it while it hangs;
    - ``max_target_memory_mb``: the app's memory from its feed snapshot (MB);
    - ``max_generator_memory_mb``: the load generator's own memory, all workers (MB);
    - ``max_duration``: seconds after which the run is stopped whatever its shape says;
    - ``emergency_stop``: stop when a limit trips (``False``: record the breach only).
    """

    max_error_rate: float | None = None
    error_window: float = 5.0
    min_requests: int = 20
    max_p95_ms: float | None = None
    max_target_memory_mb: float | None = None
    max_generator_memory_mb: float | None = 2048.0
    max_duration: float | None = 3600.0
    emergency_stop: bool = True

    def __post_init__(self) -> None:
        if self.max_error_rate is not None and not 0.0 <= self.max_error_rate <= 1.0:
            msg = f"max_error_rate={self.max_error_rate!r}: accepted: a share from 0 to 1"
            raise ConfigError(msg)
        for name in (
            "max_p95_ms",
            "max_target_memory_mb",
            "max_generator_memory_mb",
            "max_duration",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"{name}={value!r}: accepted: a positive number, or None for no limit"
                raise ConfigError(msg)
        if not self.error_window > 0:
            msg = f"error_window={self.error_window!r}: accepted: a positive number of seconds"
            raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class Window:
    """The figures the monitor judges: the rolling window plus the latest gauges."""

    requests: int = 0
    errors: int = 0
    p95_ms: float = 0.0
    inflight: int = 0  # requests still waiting for a response (their ages are in p95_ms)
    target_memory_mb: float | None = None
    generator_memory_mb: float | None = None


@dataclass(frozen=True, slots=True)
class StopEvent:
    """Why a run stopped, when (seconds into the run) and the figures that tripped it."""

    reason: StopReason
    message: str
    elapsed: float
    figures: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "reason": self.reason,
            "message": self.message,
            "elapsed_s": round(self.elapsed, 3),
            "figures": self.figures,
        }


class SafetyMonitor:
    """Judge windows against :class:`Limits`; every breach is kept in ``breaches``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.breaches: list[StopEvent] = []

    def check(self, window: Window, *, elapsed: float) -> StopEvent | None:
        """The first limit ``window`` crosses as a :class:`StopEvent`, or None.

        With ``emergency_stop=False`` the breach is recorded and None returned.
        """
        event = self._first_breach(window, elapsed)
        if event is None:
            return None
        if not any(b.reason == event.reason for b in self.breaches):
            self.breaches.append(event)
        return event if self.limits.emergency_stop else None

    def _first_breach(self, w: Window, elapsed: float) -> StopEvent | None:
        lim = self.limits
        if lim.max_duration is not None and elapsed >= lim.max_duration:
            return StopEvent(
                "duration",
                f"the run reached its duration limit of {lim.max_duration:g} s",
                elapsed,
                {"elapsed_s": elapsed, "max_duration_s": lim.max_duration},
            )
        if lim.max_error_rate is not None and w.requests >= lim.min_requests:
            rate = w.errors / w.requests
            if rate > lim.max_error_rate:
                return StopEvent(
                    "error_rate",
                    f"error rate {rate:.1%} over the last {lim.error_window:g} s exceeded "
                    f"the limit {lim.max_error_rate:.1%} ({w.errors} of {w.requests} requests)",
                    elapsed,
                    {
                        "error_rate": rate,
                        "max_error_rate": lim.max_error_rate,
                        "errors": float(w.errors),
                        "requests": float(w.requests),
                    },
                )
        if (
            lim.max_p95_ms is not None
            and w.requests + w.inflight >= lim.min_requests
            and w.p95_ms > lim.max_p95_ms
        ):
            return StopEvent(
                "p95_latency",
                f"p95 latency {w.p95_ms:.1f} ms over the last {lim.error_window:g} s "
                f"exceeded the limit {lim.max_p95_ms:g} ms"
                + (f" ({w.inflight} requests still waiting for a response)" if w.inflight else ""),
                elapsed,
                {"p95_ms": w.p95_ms, "max_p95_ms": lim.max_p95_ms, "inflight": float(w.inflight)},
            )
        if (
            lim.max_target_memory_mb is not None
            and w.target_memory_mb is not None
            and w.target_memory_mb > lim.max_target_memory_mb
        ):
            return StopEvent(
                "target_memory",
                f"the target's memory {w.target_memory_mb:.1f} MB exceeded the limit "
                f"{lim.max_target_memory_mb:g} MB",
                elapsed,
                {
                    "target_memory_mb": w.target_memory_mb,
                    "max_target_memory_mb": lim.max_target_memory_mb,
                },
            )
        if (
            lim.max_generator_memory_mb is not None
            and w.generator_memory_mb is not None
            and w.generator_memory_mb > lim.max_generator_memory_mb
        ):
            return StopEvent(
                "generator_memory",
                f"the load generator's memory {w.generator_memory_mb:.1f} MB exceeded "
                f"the limit {lim.max_generator_memory_mb:g} MB",
                elapsed,
                {
                    "generator_memory_mb": w.generator_memory_mb,
                    "max_generator_memory_mb": lim.max_generator_memory_mb,
                },
            )
        return None


class TargetMemoryProbe:
    """Read the target app's memory (MB) from its perfnb feed snapshot, in the background.

    Polls ``GET <target><prefix>`` every ``every`` seconds on its own thread (so a
    slow app never delays the controller) and keeps the last ``metrics.memoryUsage``.
    ``latest`` is None until a reading arrives, or when the app has no feed.

    >>> probe = TargetMemoryProbe(check_target("http://127.0.0.1:8000"))   # doctest: +SKIP
    >>> probe.start(); probe.latest                                     # doctest: +SKIP
    """

    def __init__(
        self,
        target: Target,
        *,
        run_id: str = "",
        prefix: str = "/api/performance-metrics",
        every: float = 0.25,
        token: str | None = None,
    ) -> None:
        self.url = f"{target.url}{prefix}"
        self.run_id = run_id
        self.every = every
        self.token = token
        self.latest: float | None = None
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read_once(self) -> float | None:
        """One reading now (MB), or None when the snapshot has no memory figure."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, headers=headers)
        # no proxies: the target is loopback, and env proxies must not see it
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=2.0) as response:
            data = json.loads(response.read(1_000_000))
        return _memory_mb(data)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.read_once()
            except (OSError, ValueError):
                self.failures += 1
            else:
                if value is not None:
                    self.latest = value
            self._stop.wait(self.every)

    def start(self) -> None:
        """Start polling on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="perfnb-memory-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (returns at once; the thread ends within one poll)."""
        self._stop.set()


def _memory_mb(data: object) -> float | None:
    if not isinstance(data, dict):
        return None
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        value = metrics.get("memoryUsage")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
