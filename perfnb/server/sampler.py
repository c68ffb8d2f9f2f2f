"""Process samples taken on the request path, at most once per interval.

The monitored app gets no timer, no thread and no polling loop from perfnb: the
middleware asks :meth:`ProcessSampler.maybe_sample` on each request whether a
sample is due, which costs one comparison when it is not. When it is, the
sampler reads the process's vital signs and returns them as ``kind="process"``
records, one per metric:

========================  =======  ==============================================
name                      unit     what
========================  =======  ==============================================
``rss_bytes``             bytes    resident set size
``cpu_percent``           percent  process CPU time over wall time since the last
                                   sample (100 = one core busy)
``threads``               count    OS threads of the process
``open_files``            count    open file descriptors (Unix) or handles
``gc_collections``        count    garbage collections since the last sample, per
                                   generation (tag ``generation``)
``loop_lag_ms``           ms       event-loop lag: how long a callback scheduled
                                   with ``call_soon`` waited to run (ASGI only)
========================  =======  ==============================================

The loop-lag probe is scheduled on the request path too; its callback records
the lag when the loop gets to it. psutil is used when installed; without it the
sampler falls back to ``/proc`` and the standard library.

>>> from datetime import datetime, timezone
>>> sampler = ProcessSampler(service="app", interval=1.0)
>>> records = sampler.sample(datetime(2026, 1, 1, tzinfo=timezone.utc))
>>> sorted({r["name"] for r in records} & {"rss_bytes", "threads"})
['rss_bytes', 'threads']
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from perfnb.errors import ConfigError
from perfnb.schema import Record, Sink

__all__ = ["ProcessSampler"]

_NS: Final = 1_000_000_000


class ProcessSampler:
    """Reads the process's vital signs when asked, at most once per ``interval`` seconds.

    ``clock`` is a monotonic clock in nanoseconds (injectable for tests). The
    latest value of each metric is kept in :attr:`latest` for snapshots.

    >>> sampler = ProcessSampler(service="app", clock=lambda: 5 * 10**9)
    >>> sampler.due(5 * 10**9)
    True
    """

    def __init__(
        self,
        *,
        service: str = "app",
        interval: float = 1.0,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            msg = f"interval: got {interval!r}; expected a positive number of seconds"
            raise ConfigError(msg)
        self.service = service
        self.interval_ns = int(interval * _NS)
        self._clock = clock
        # Due at once: the first request of a process gives the first sample.
        self.next_ns = clock()
        self._lock = threading.Lock()
        self._last_wall_ns = 0
        self._last_cpu_ns = 0
        self._last_gc: list[int] = []
        self._process: Any = None
        self._psutil_tried = False
        #: Latest value of each metric, by name (for snapshots).
        self.latest: dict[str, float] = {}

    def due(self, now_ns: int) -> bool:
        """Whether a sample is due at monotonic time ``now_ns``."""
        return now_ns >= self.next_ns

    def claim(self) -> bool:
        """Take the due sample: True for exactly one caller per interval (thread-safe)."""
        now = self._clock()
        with self._lock:
            if now < self.next_ns:
                return False
            self.next_ns = now + self.interval_ns
            return True

    def maybe_sample(self, now: datetime, sink: Sink) -> bool:
        """Sample into ``sink`` when due; return whether a sample was taken."""
        if not self.due(self._clock()) or not self.claim():
            return False
        for record in self.sample(now):
            sink(record)
        return True

    def probe_loop(self, sink: Sink) -> None:
        """Schedule the event-loop lag probe; the lag is recorded when it runs.

        Does nothing outside a running event loop (WSGI apps).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self._loop_probe_done, time.perf_counter_ns(), sink)

    def _loop_probe_done(self, scheduled_ns: int, sink: Sink) -> None:
        lag_ms = (time.perf_counter_ns() - scheduled_ns) / 1e6
        self.latest["loop_lag_ms"] = lag_ms
        with contextlib.suppress(Exception):  # a failing sink must not break the loop
            sink(self._metric(datetime.now(UTC), "loop_lag_ms", lag_ms, "ms"))

    def _metric(
        self, now: datetime, name: str, value: float, unit: str, tags: dict[str, str] | None = None
    ) -> Record:
        record: Record = {
            "time": now,
            "source": "server",
            "kind": "process",
            "service": self.service,
            "name": name,
            "value": float(value),
            "unit": unit,
        }
        if tags:
            record["tags"] = tags
        return record

    def sample(self, now: datetime) -> list[Record]:
        """Read every metric now and return one record per metric (and GC generation)."""
        out: list[Record] = []
        values = self._read()
        units = {"rss_bytes": "bytes", "cpu_percent": "percent"}
        for name, value in values.items():
            out.append(self._metric(now, name, value, units.get(name, "count")))
        counts = [int(s.get("collections", 0)) for s in gc.get_stats()]
        if self._last_gc:
            for generation, (count, before) in enumerate(zip(counts, self._last_gc, strict=False)):
                out.append(
                    self._metric(
                        now,
                        "gc_collections",
                        count - before,
                        "count",
                        {"generation": str(generation)},
                    )
                )
        self._last_gc = counts
        self.latest.update(values)
        return out

    def _read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        wall = time.monotonic_ns()
        cpu = time.process_time_ns()
        if self._last_wall_ns and wall > self._last_wall_ns:
            values["cpu_percent"] = 100.0 * (cpu - self._last_cpu_ns) / (wall - self._last_wall_ns)
        self._last_wall_ns, self._last_cpu_ns = wall, cpu
        process = self._psutil_process()
        if process is not None:
            try:
                with process.oneshot():
                    values["rss_bytes"] = float(process.memory_info().rss)
                    values["threads"] = float(process.num_threads())
                    if hasattr(process, "num_fds"):
                        values["open_files"] = float(process.num_fds())
                    else:  # pragma: no cover - Windows
                        values["open_files"] = float(process.num_handles())
                return values
            except Exception:  # psutil failed (a sandbox, say): fall back to /proc
                pass
        values.update(_read_proc())
        return values

    def _psutil_process(self) -> Any:
        if not self._psutil_tried:
            self._psutil_tried = True
            try:
                import psutil  # optional: the server extra installs it
            except ImportError:
                return None
            self._process = psutil.Process()
        return self._process


def _read_proc() -> dict[str, float]:
    values: dict[str, float] = {"threads": float(threading.active_count())}
    try:
        with open("/proc/self/statm", "rb") as handle:
            pages = int(handle.read().split()[1])
        values["rss_bytes"] = float(pages * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        pass
    with contextlib.suppress(OSError):
        values["open_files"] = float(len(os.listdir("/proc/self/fd")))
    return values
