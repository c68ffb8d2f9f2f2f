"""Closed-model users: each holds a connection (or runs a journey) and goes round in a loop.

A :class:`ClosedUser` belongs to one worker (:class:`~perfnb.load.worker.Worker`).
For an endpoint list it keeps one keep-alive connection, sends the next endpoint
of the cycle as soon as the last response is in (after the think time), and
reconnects with a growing backoff when the connection fails. For a journey it
runs the user's function again and again on its own session. Retiring a user (the
shape asked for fewer) lets its request in flight finish, then closes it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from perfnb.load.engine import Connection, open_connection
from perfnb.load.scenarios import Journey, Session

if TYPE_CHECKING:
    from perfnb.load.worker import Worker

__all__ = ["ClosedUser"]


class ClosedUser:
    """One closed-model user: a connection, a place in the cycle, think time."""

    def __init__(self, worker: Worker, number: int) -> None:
        self.worker = worker
        self.number = number
        self.retired = False
        self.conn: Connection | None = None
        self.failures = 0
        self.position = number * 7  # spread users over the cycle so every endpoint is hit early
        scenario = worker.spec.scenario
        self.think = scenario.think_time

    def start(self) -> None:
        if isinstance(self.worker.spec.scenario, Journey):
            self.worker.spawn(self.journey_loop())
        else:
            self.worker.spawn(self.connect())

    def is_retired(self) -> bool:
        return self.retired

    def retire(self) -> None:
        self.retired = True
        if self.conn is not None and not self.conn.busy:
            self.conn.close()
            self.worker.conns.discard(self.conn)

    async def connect(self) -> None:
        worker = self.worker
        while worker.running and not self.retired:
            started = time.perf_counter_ns()
            try:
                conn = await open_connection(
                    worker.spec.target, self.on_done, timeout=worker.spec.timeout
                )
            except (OSError, TimeoutError) as exc:
                _, route, method = self.peek()
                kind = "timeout" if isinstance(exc, TimeoutError) else "connect"
                worker.record_failure(route, method, kind, str(exc)[:200], 0, started)
                self.failures += 1
                await asyncio.sleep(min(1.0, 0.01 * 2 ** min(self.failures, 7)))
                continue
            self.failures = 0
            if worker.stopped() or self.is_retired():
                conn.close()
                return
            self.conn = conn
            worker.conns.add(conn)
            self.send()
            return

    def peek(self) -> tuple[bytes, str, str]:
        requests = self.worker.requests
        return requests[self.position % len(requests)]

    def send(self) -> None:
        conn = self.conn
        if conn is None or not self.worker.running or self.retired:
            return
        if conn.closed:
            # the server closed the connection while this user thought: a new one, and
            # no error, since the request was never sent
            self.worker.stats.reconnects += 1
            self.worker.conns.discard(conn)
            self.conn = None
            self.worker.spawn(self.connect())
            return
        raw, route, method = self.peek()
        self.position += 1
        conn.send(raw, (route, method))

    def on_done(self, conn: Connection) -> None:
        worker = self.worker
        if not worker.running:
            return
        route, method = conn.tag
        if conn.retryable and not self.retired:
            # the server closed the idle connection: the same request again, afresh
            worker.stats.reconnects += 1
            worker.conns.discard(conn)
            self.conn = None
            self.position -= 1
            worker.spawn(self.connect())
            return
        worker.record(conn, route, method, 0)
        if self.retired:
            conn.close()
            worker.conns.discard(conn)
            return
        if conn.closed:
            worker.conns.discard(conn)
            self.conn = None
            worker.spawn(self.connect())
        elif self.think > 0:
            worker.loop.call_later(self.think, self.send)
        else:
            self.send()

    async def journey_loop(self) -> None:
        worker = self.worker
        scenario = worker.spec.scenario
        assert isinstance(scenario, Journey)
        async with worker.journey_client() as client:
            session = Session(
                client,
                recorder=worker.stats.add,
                think_time=scenario.think_time,
                user=self.number,
                inflight=worker.journey_requests,
            )
            session.data.update(scenario.params)
            failures = 0
            while worker.running and not self.retired:
                try:
                    await scenario.func(session)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception:
                    worker.journey_errors += 1
                    failures += 1
                    await asyncio.sleep(min(1.0, 0.05 * failures))
