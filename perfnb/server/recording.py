"""What the ASGI and WSGI middlewares share: options, input checks, the once-a-second tick.

Everything here sits on the request path, so it is written for speed: checks
on request headers are cached by value, and the work that may be done at most
once a second (process samples, the overhead summary) hides behind one integer
comparison.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from time import perf_counter_ns
from typing import Any, Final

from perfnb.collect.servertiming import format_server_timing
from perfnb.errors import ConfigError
from perfnb.schema import Record, Sink
from perfnb.server.beacon import client_key
from perfnb.server.monitor import Monitor
from perfnb.server.routes import OVERFLOW, UNMATCHED
from perfnb.server.sampler import ProcessSampler
from perfnb.server.spans import RequestTimings

__all__ = ["FAST_TIMING", "METHODS", "RUN_ID_PATTERN", "Exchange", "Recorder", "timing_value"]

log = logging.getLogger("perfnb.server")

#: Methods recorded as themselves; any other method is recorded as ``OTHER``.
METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
#: What an ``X-Perfnb-Run`` value may be; anything else is counted and dropped.
RUN_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}"
_RUN_ID: Final = re.compile(RUN_ID_PATTERN.encode())
_COOKIE_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
#: perfnb's Server-Timing value when the request had no spans and no DB time.
FAST_TIMING: Final = b"app;dur=%.3f, perfnb;dur=%.3f"
_TICK_NS: Final = 1_000_000_000
# Per-value caches stay small: they hold run ids, client addresses and session
# ids, and are emptied when full rather than evicting one by one.
_CACHE_MAX: Final = 4096
_MAX_ROUTE_CHARS: Final = 256


class Exchange(RequestTimings):
    """One request's state: what the spans added, and what the wrapped send saw.

    Class-level defaults, no ``__init__`` (see :class:`RequestTimings`); the
    middleware sets ``rec`` (its :class:`Recorder`) on every instance.
    """

    rec: Recorder
    status: int = 0
    start_ns: int = 0
    first_ns: int = 0
    end_ns: int = 0
    chunks: int = 0
    out_bytes: int = 0
    own_ns: int = 0
    # The response headers as the app sent them (not copied), to look at later.
    headers: Any = ()

    @property
    def monitor(self) -> Monitor:
        """The monitor of the request, for adapters recording beside the request record."""
        return self.rec.monitor

    def is_event_stream(self) -> bool:
        """Whether the response's Content-Type is ``text/event-stream``."""
        try:
            for name, value in self.headers:
                if len(name) == 12 and _lower_bytes(name) == b"content-type":
                    return _lower_bytes(value)[:17] == b"text/event-stream"
        except (TypeError, ValueError):  # headers of a shape no server would accept
            pass
        return False


def _lower_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("latin-1", "replace").lower()
    return bytes(value).lower()  # type: ignore[call-overload,no-any-return]


def timing_value(app_ns: int, own_ns: int, timings: RequestTimings) -> bytes:
    """The ``Server-Timing`` value perfnb adds: app, db, the spans, then perfnb."""
    spans = timings.spans
    if spans is None and not timings.db_count:
        # The common case is written directly: this runs on every response and
        # the general formatter's checks are not needed for fixed names.
        return FAST_TIMING % (app_ns / 1e6, own_ns / 1e6)
    metrics: list[tuple[str, float]] = [("app", app_ns / 1e6)]
    if timings.db_count:
        metrics.append(("db", timings.db_ns / 1e6))
    if spans is not None:
        metrics.extend((name, ns / 1e6) for name, ns in list(spans.items()))
    metrics.append(("perfnb", own_ns / 1e6))
    return format_server_timing(metrics).encode("latin-1")


class Recorder:
    """The state both middlewares keep: the monitor, caches, counters and the tick."""

    def __init__(
        self,
        *,
        service: str | None,
        monitor: Monitor | None,
        sink: Sink | None,
        prefix: str | None,
        token: str | None,
        session_cookie: str | None,
        stream_routes: Iterable[str],
        max_routes: int,
        sampler: ProcessSampler | None,
    ) -> None:
        if monitor is None:
            monitor = Monitor(
                service=service or "app",
                sink=sink,
                prefix=prefix or "/api/performance-metrics",
                token=token,
            )
        elif sink is not None or prefix is not None or token is not None:
            msg = (
                "monitor: a Monitor was passed together with sink/prefix/token; "
                "give those to the Monitor instead"
            )
            raise ConfigError(msg)
        if isinstance(max_routes, bool) or not isinstance(max_routes, int) or max_routes < 1:
            msg = f"max_routes: got {max_routes!r}; expected a positive integer"
            raise ConfigError(msg)
        if session_cookie is not None and (
            not isinstance(session_cookie, str) or not _COOKIE_NAME.fullmatch(session_cookie)
        ):
            msg = f"session_cookie: got {session_cookie!r}; expected a cookie name"
            raise ConfigError(msg)
        self.monitor = monitor
        self.service: str = service or monitor.service
        self.prefix: str = monitor.prefix
        self.stream_routes = frozenset(stream_routes)
        self.max_routes = max_routes
        self.session_cookie = None if session_cookie is None else session_cookie.encode() + b"="
        self.sampler = sampler or ProcessSampler(service=self.service)
        # Shared with the monitor when it offers one, so that browser beacons and
        # server records of the same client get the same key.
        secret = getattr(monitor, "client_secret", None)
        self._secret: bytes = secret if isinstance(secret, bytes) else secrets.token_bytes(16)
        self._routes: set[str] = set()
        self._run_ids: dict[bytes, str | None] = {}
        self.clients: dict[str, str] = {}
        self._lock = threading.Lock()
        self.tick_ns = 0
        #: Requests seen since start (the ASGI middleware measures its own cost
        #: on every 16th), and at the last tick.
        self.seen = 0
        self._seen_at_tick = 0
        # perfnb's own cost since the last tick, for the overhead record: the
        # in-line work of the requests that measured it.
        self.own_ns = 0
        self.own_count = 0
        #: Mean cost per request over the last window with a measured request,
        #: for Server-Timing ``perfnb``.
        self.own_ns_mean = 0
        #: The common Server-Timing values (no spans, no DB) by handler time in
        #: whole µs: formatting two floats costs more than the rest of writing
        #: the header. Emptied when perfnb's own figure changes (once a second).
        self.timing_values: dict[int, bytes] = {}
        #: (perf_counter_ns reading, the wall-clock time then), refreshed every
        #: tick, so a request's start time is derived from its perf_counter stamp.
        self.anchor: tuple[int, datetime] = (perf_counter_ns(), datetime.now(UTC))
        self.counters: dict[str, int] = {"bad_run_id": 0, "internal_errors": 0}

    # -- request inputs --------------------------------------------------------------

    def run_id(self, raw: bytes) -> str | None:
        """The run id of an ``X-Perfnb-Run`` value, or ``None`` (counted) when it is bad."""
        cache = self._run_ids
        try:
            found = cache[raw]
        except KeyError:
            found = raw.decode("ascii") if _RUN_ID.fullmatch(raw) else None
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            if len(raw) <= 256:
                cache[raw] = found
        if found is None:
            self.counters["bad_run_id"] += 1
        return found

    def client(self, value: str) -> str:
        """The hashed key of a session id or address; the raw value is never recorded."""
        cache = self.clients
        try:
            return cache[value]
        except KeyError:
            key = client_key(self._secret, value)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[value] = key
            return key

    def session(self, cookie_header: bytes) -> str | None:
        """The session cookie's value in a ``Cookie`` header, if configured and present."""
        name = self.session_cookie
        if name is None:
            return None
        for part in cookie_header.split(b";", 64):
            part = part.strip()
            if part.startswith(name):
                value = part[len(name) :]
                return value[:512].decode("latin-1") if value else None
        return None

    def route(self, template: str | None) -> str:
        """Bound the set of route names: unmatched and past-the-limit requests share buckets."""
        if template is None:
            return UNMATCHED
        if template in self._routes:
            return template
        with self._lock:
            if len(self._routes) >= self.max_routes or len(template) > _MAX_ROUTE_CHARS:
                return OVERFLOW
            self._routes.add(template)
        return template

    # -- once a second ---------------------------------------------------------------

    def tick(self, now_ns: int) -> None:
        """Process samples, the loop-lag probe and the overhead summary; never raises."""
        self.tick_ns = now_ns + _TICK_NS
        try:
            monitor = self.monitor
            record = monitor.record
            now = datetime.now(UTC)
            self.anchor = (perf_counter_ns(), now)
            # Entries put without a lock wait in the ring's intake until a reader
            # numbers them; with no reader, this keeps that wait under a second.
            monitor.buffer.drain()
            if monitor.wants("process"):
                self.sampler.maybe_sample(now, record)
                self.sampler.probe_loop(record)
            seen = self.seen
            requests = seen - self._seen_at_tick
            self._seen_at_tick = seen
            if self.own_count:
                self.own_ns_mean = self.own_ns // self.own_count
                self.own_ns = self.own_count = 0
                self.timing_values.clear()
            if requests and self.own_ns_mean and monitor.wants("overhead"):
                record(self.overhead_record(now, self.own_ns_mean, requests))
        except Exception:
            self.internal_error()

    def timing_value_of(self, app_us: int) -> bytes:
        """The common Server-Timing value for ``app_us`` µs of handler time (cached)."""
        cache = self.timing_values
        value = FAST_TIMING % (app_us / 1000.0, self.own_ns_mean / 1e6)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[app_us] = value
        return value

    def overhead_record(self, now: datetime, mean_ns: int, count: int) -> Record:
        """The ``kind="overhead"`` record: mean µs the middleware added per request.

        ``count`` is the number of requests the window saw; ``mean_ns`` is the
        mean over the requests that measured it (the latest window that had one).
        """
        return {
            "time": now,
            "source": "perfnb",
            "kind": "overhead",
            "service": self.service,
            "name": "middleware_us",
            "value": mean_ns / 1000.0,
            "unit": "us",
            "tags": {"requests": str(count)},
        }

    def add_own(self, own_ns: int) -> None:
        """Account one request that measured the middleware's own cost."""
        self.seen += 1
        self.own_ns += own_ns
        self.own_count += 1

    def internal_error(self) -> None:
        """Count a failure inside perfnb that was kept away from the app (call in ``except``).

        The first one is logged with its traceback; later ones are only counted.
        """
        self.counters["internal_errors"] += 1
        if self.counters["internal_errors"] == 1:
            log.error("perfnb: internal error kept away from the app", exc_info=True)
