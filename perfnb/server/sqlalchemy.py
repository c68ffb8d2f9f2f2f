"""SQLAlchemy adapter: query time into the request's ``db`` span, pool state into records.

>>> import sqlalchemy
>>> engine = sqlalchemy.create_engine("sqlite://")
>>> handle = instrument_engine(engine)
>>> with engine.connect() as conn:
...     conn.execute(sqlalchemy.text("select 1")).scalar()
1
>>> handle.queries
1
>>> handle.remove()

Event listeners on the engine (``before_cursor_execute`` / ``after_cursor_execute``,
and ``handle_error`` for queries that fail) time every statement. Inside a
request served by the perfnb middleware the time is added to that request's
``db`` (``Server-Timing`` and ``db_ms``). On a request path, at most once a
second, the pool's size and checked-out connections are recorded as
``kind="db"`` records (``pool_size``, ``pool_checked_out``, ``pool_overflow``)
into the monitor given here, or else into the monitor of the request being
served. Works for ``AsyncEngine`` too (pass it; its ``sync_engine`` is
instrumented) when the driver keeps the caller's context.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from time import monotonic_ns, perf_counter_ns
from typing import TYPE_CHECKING, Any, Final

from perfnb.schema import Record
from perfnb.server.spans import _current

if TYPE_CHECKING:
    from perfnb.server.monitor import Monitor

__all__ = ["EngineInstrumentation", "instrument_engine"]

_POOL_EVERY_NS: Final = 1_000_000_000
_STARTS: Final = "perfnb_query_starts"


class EngineInstrumentation:
    """The listeners added to one engine; :meth:`remove` takes them off again.

    :attr:`queries` and :attr:`errors` count statements seen since instrumenting.
    """

    def __init__(self, engine: Any, *, monitor: Monitor | None, service: str | None) -> None:
        sync_engine = getattr(engine, "sync_engine", engine)
        self.engine = sync_engine
        self.monitor = monitor
        self.service = service
        self.queries = 0
        self.errors = 0
        self._next_pool_ns = 0
        self._lock = threading.Lock()
        self._installed = False

    def install(self) -> None:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        event.listen(self.engine, "handle_error", self._error)
        self._installed = True

    def remove(self) -> None:
        """Take the listeners off the engine."""
        if not self._installed:
            return
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)
        event.remove(self.engine, "handle_error", self._error)
        self._installed = False

    def _before(self, conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
        conn.info.setdefault(_STARTS, []).append(perf_counter_ns())

    def _after(self, conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
        starts = conn.info.get(_STARTS)
        if not starts:
            return
        self._done(perf_counter_ns() - starts.pop())

    def _error(self, context: Any) -> None:
        conn = getattr(context, "connection", None)
        info = getattr(conn, "info", None)
        starts = info.get(_STARTS) if info is not None else None
        self.errors += 1
        if starts:
            self._done(perf_counter_ns() - starts.pop())

    def _done(self, elapsed_ns: int) -> None:
        self.queries += 1
        timings = _current.get()
        if timings is not None:
            timings.add_db(elapsed_ns)
        now = monotonic_ns()
        if now >= self._next_pool_ns:
            self._pool_sample(now, timings)

    def _pool_sample(self, now_ns: int, timings: object) -> None:
        with self._lock:
            if now_ns < self._next_pool_ns:
                return
            self._next_pool_ns = now_ns + _POOL_EVERY_NS
        monitor = self.monitor
        if monitor is None:
            # The monitor of the request being served, when there is one.
            owner = getattr(timings, "monitor", None)
            monitor = owner if owner is not None else None
        if monitor is None or not monitor.wants("db"):
            return
        pool = self.engine.pool
        now = datetime.now(UTC)
        service = self.service or monitor.service
        tags = {"engine": str(self.engine.url.drivername)[:64]}
        for name, method in (
            ("pool_size", "size"),
            ("pool_checked_out", "checkedout"),
            ("pool_overflow", "overflow"),
        ):
            read = getattr(pool, method, None)
            if read is None:
                continue  # StaticPool, NullPool and friends keep no such count
            try:
                value = float(read())
            except Exception:  # a pool that cannot tell: skip the figure
                continue
            record: Record = {
                "time": now,
                "source": "server",
                "kind": "db",
                "service": service,
                "name": name,
                "value": value,
                "unit": "count",
                "tags": dict(tags),
            }
            monitor.record(record)


def instrument_engine(
    engine: Any, *, monitor: Monitor | None = None, service: str | None = None
) -> EngineInstrumentation:
    """Time every statement of ``engine`` into the current request's ``db`` span.

    ``monitor`` receives the pool records; without it they go to the monitor of
    the request being served. Returns the instrumentation (``.remove()`` undoes it).
    """
    instrumentation = EngineInstrumentation(engine, monitor=monitor, service=service)
    instrumentation.install()
    return instrumentation
