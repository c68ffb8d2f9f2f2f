"""When a load run must stop: the caller's stop, a failed worker, or a safety limit.

:class:`RunGuard` is asked on every controller tick. It holds the caller's stop
request (set from any thread: a notebook's stop button, Ctrl-C), the
:class:`~perfnb.load.safety.SafetyMonitor` and, when a target memory limit is
set, the probe reading the app's memory from its feed. The first reason found
becomes the run's :class:`~perfnb.load.safety.StopEvent`.

>>> from perfnb.load.engine import check_target
>>> guard = RunGuard(Limits(), check_target("http://127.0.0.1:8000"), run_id="r1")
>>> guard.request("interrupt", "Ctrl-C")
>>> guard.check([], elapsed=1.5).reason
'interrupt'
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from perfnb.load.engine import Target
from perfnb.load.pool import WorkerHandle, first_failed
from perfnb.load.safety import (
    Limits,
    SafetyMonitor,
    StopEvent,
    StopReason,
    TargetMemoryProbe,
    Window,
)
from perfnb.load.tally import Tally

__all__ = ["RunGuard"]


class RunGuard:
    """Decide, tick by tick, whether a run goes on; keep every limit breached on the way."""

    def __init__(
        self,
        limits: Limits,
        target: Target,
        *,
        run_id: str,
        probe_memory: bool = True,
        in_process: bool = False,
    ) -> None:
        self.limits = limits
        self.monitor = SafetyMonitor(limits)
        self.in_process = in_process
        self.probe: TargetMemoryProbe | None = None
        if probe_memory and limits.max_target_memory_mb is not None:
            self.probe = TargetMemoryProbe(target, run_id=run_id)
        self.requested = threading.Event()
        self._request: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start reading the target's memory (when a limit needs it)."""
        if self.probe is not None:
            self.probe.start()

    def close(self) -> None:
        """Stop reading the target's memory."""
        if self.probe is not None:
            self.probe.stop()

    def request(self, reason: str, message: str) -> None:
        """Ask for a stop (thread-safe; the first request wins). ``"interrupt"`` keeps its
        name; any other reason is an emergency stop."""
        with self._lock:
            if self._request is None:
                self._request = (reason, message)
        self.requested.set()

    @property
    def breaches(self) -> list[StopEvent]:
        """Every limit crossed so far, the first of each reason."""
        return list(self.monitor.breaches)

    @property
    def target_memory_mb(self) -> float | None:
        """The app's last memory reading (MB), if any."""
        return self.probe.latest if self.probe is not None else None

    def check(self, handles: Sequence[WorkerHandle], *, elapsed: float) -> StopEvent | None:
        """The caller's stop or a failed worker, else None (judged before the shape's tick)."""
        with self._lock:
            request = self._request
        if request is not None:
            asked, message = request
            reason: StopReason = "interrupt" if asked == "interrupt" else "emergency_stop"
            return StopEvent(reason, message, elapsed)
        failed = first_failed(handles)
        if failed is not None:
            text = failed.error or "worker process exited"
            return StopEvent(
                "worker_failed", f"worker {failed.index} failed: {text[-500:]}", elapsed
            )
        return None

    def check_limits(
        self, handles: Sequence[WorkerHandle], tally: Tally, *, elapsed: float
    ) -> StopEvent | None:
        """The first safety limit the last moments cross, or None."""
        window = tally.window(self.limits.error_window)
        generator_mb = sum(h.rss_bytes for h in handles) / 1e6
        if self.in_process:
            generator_mb = 0.0  # the thread shares the caller's memory; nothing to judge apart
        window = Window(
            requests=window.requests,
            errors=window.errors,
            p95_ms=window.p95_ms,
            inflight=window.inflight,
            target_memory_mb=self.target_memory_mb,
            generator_memory_mb=generator_mb or None,
        )
        return self.monitor.check(window, elapsed=elapsed)
