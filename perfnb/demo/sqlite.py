"""A small pool of SQLite connections for the demo app, with timed, optionally slowed calls.

:class:`ConnectionPool` hands out connections (WAL mode, one writer at a time
through ``BEGIN IMMEDIATE``), runs a method on a worker thread inside a ``db``
Server-Timing span (:meth:`ConnectionPool.call`), and sleeps before each call
while the slow-DB fault asks it to. :class:`perfnb.demo.db.Database` builds the
app's queries on it.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

__all__ = ["ConnectionPool"]

P = ParamSpec("P")
T = TypeVar("T")


class ConnectionPool:
    """Up to ``pool_size`` connections to the SQLite file at ``path``."""

    def __init__(
        self,
        path: str | Path,
        *,
        pool_size: int = 8,
        slow_ms: Callable[[], float] = lambda: 0.0,
        span: Callable[[str], AbstractContextManager[object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._pool_size = pool_size
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._slow_ms = slow_ms
        self._span = span or (lambda _name: nullcontext())
        self._clock = clock

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = len(self._opened) < self._pool_size
                if grow:
                    conn = self._open()
                    self._opened.append(conn)
            if not grow:
                conn = self._pool.get(timeout=30.0)
        try:
            yield conn
        finally:
            self._pool.put(conn)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers wait
        # on the busy timeout instead of failing when a read transaction upgrades.
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _delay(self) -> None:
        slow = self._slow_ms()
        if slow > 0:
            time.sleep(slow / 1000.0)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one of this database's methods on a worker thread, timed as ``db``."""
        with self._span("db"):
            return await run_in_threadpool(fn, *args, **kwargs)

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
