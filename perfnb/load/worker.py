"""One load worker: an event loop that sends a share of the run's traffic.

A worker runs in its own process (or, for notebook-defined journeys, in a thread)
and talks to the controller over a pipe: it receives the target number of users
or the arrival rate and ``stop``, and sends back, several times a second, what
it measured (:class:`~perfnb.load.stats.Stats` drained to plain data).

The open model schedules every request at an *intended* time; latency measured
from it (``corrected``) includes any wait caused by a slow target, so
coordinated omission is corrected. The send lag (how late the generator itself
was) is measured separately — from the intended time in the open model, from a
10 ms probe timer in the closed model. Closed-model users live in
:mod:`perfnb.load.users`; the controller's side of the pipe in :mod:`perfnb.load.pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import ssl
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any, Literal

import httpx

from perfnb.load.engine import Connection, Target, build_request, open_connection
from perfnb.load.histogram import Histogram
from perfnb.load.scenarios import Endpoints, Journey, Session, make_client
from perfnb.load.stats import Stats
from perfnb.load.users import ClosedUser

__all__ = ["Worker", "WorkerSpec", "run_worker", "worker_main"]

Model = Literal["closed", "open"]
_perf_ns = time.perf_counter_ns
_PROBE_S = 0.01
_NEVER = float("inf")
#: The open model sends in batches: each wake-up sends every request due within the
#: next ``_BATCH_NS``, and the next wake-up comes ``_EARLY_NS`` before the first request
#: left over. Timers wake a loop in whole milliseconds at best (uvloop fires a shorter
#: delay at once and would spin; asyncio rounds its wait up), so a wake-up every ~2 ms
#: holds the CPU down at high rates; sending a little early, never late, keeps the
#: generator's timer out of the measured latency.
_BATCH_NS = 3_000_000
_EARLY_NS = 1_000_000


def _from_monotonic(mono_ns: float) -> float:
    """A controller's ``time.monotonic_ns()`` on this worker's perf_counter clock."""
    return float(mono_ns) + (_perf_ns() - time.monotonic_ns())


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, picklable for a spawned process."""

    index: int
    run_id: str
    target: Target
    scenario: Endpoints | Journey
    model: Model
    timeout: float = 10.0
    report_every: float = 0.25
    detail_rate: float = 200.0  # keep every request while this worker's rate is at most this
    max_connections: int = 256  # open model: most connections (or journeys) in flight
    max_pending: int = 10_000  # open model: due requests waiting for a connection
    use_uvloop: bool = True


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Worker:
    """The state of one worker's event loop: its users or its schedule, its connections."""

    def __init__(self, spec: WorkerSpec, pipe: Pipe) -> None:
        self.spec = spec
        self.pipe = pipe
        self.stats = Stats()
        self.running = True
        self.offset_ns = time.time_ns() - _perf_ns()
        self.timeout_ns = int(spec.timeout * 1e9)
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self.conns: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.journey_errors = 0
        self.stop_reason = ""
        # closed model
        self.users: list[ClosedUser] = []
        # open model
        # The schedule follows the integral of the rate: request k (from 0) is intended when
        # the requests earned so far reach k. `earned` is that integral at `base_ns`, where the
        # current rate began; the first request goes out as soon as the rate is above 0.
        self.rate = 0.0
        self.interval_ns = 0.0
        self.base_ns = -_NEVER
        self.earned = 0.0
        self.sent = 0
        self.next_ns = _NEVER  # the next intended send (perf_counter ns)
        # The open-model schedule is anchored on the controller's clock, not on when its
        # messages arrive: it starts at the run's start, each change of rate applies from
        # the controller's tick that asked for it, and it ends after the shape's length.
        # Every worker's intended send times then fall in the same window, however late a
        # "target" or the final "stop" reach it on a busy machine.
        self.start_ns: float | None = None
        self.end_ns = _NEVER
        self.tick_handle: asyncio.TimerHandle | None = None
        self.idle: list[Connection] = []
        self.pending: deque[int] = deque()
        self.opening = 0
        self.position = 0
        self.inflight_journeys = 0
        self.journey_requests: dict[object, int] = {}  # journeys' requests in flight: start ns
        self._ssl: ssl.SSLContext | None = None  # shared by every journey's client
        scenario = spec.scenario
        self.requests: list[tuple[bytes, str, str]] = []
        if isinstance(scenario, Endpoints):
            for e in scenario.cycle():
                raw = build_request(
                    e.method,
                    e.path,
                    target=spec.target,
                    run_id=spec.run_id,
                    headers=list(scenario.headers) + list(e.headers),
                    body=e.body,
                )
                self.requests.append((raw, e.route, e.method))
        self.last_cpu = time.process_time()
        self.last_wall = time.monotonic()

    # -- control ------------------------------------------------------------------
    def listen(self) -> None:
        """Read the controller's messages (on a thread of its own) and hand them to the loop.

        The pipe is never registered with the event loop: a loop's reader would make
        it non-blocking (uvloop does), and a report sent into a full non-blocking pipe
        stops mid-message and corrupts the stream. A thread doing blocking reads keeps
        the pipe blocking, so every message is whole, and it also hears ``stop`` when
        the loop is too busy to poll.
        """
        while True:
            try:
                message = self.pipe.recv()
            except Exception:  # EOF, a closed pipe, a garbled message: the controller is gone
                message = ("stop", "controller gone")
            try:
                self.loop.call_soon_threadsafe(self.on_message, message)
            except RuntimeError:  # the loop has closed: the worker is over
                return
            if message[0] == "stop":
                return

    def on_message(self, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "stop":
            self.stop(str(value))
        elif kind == "target":
            wanted, at_mono_ns = value
            self.set_target(float(wanted), at_ns=_from_monotonic(at_mono_ns))
        elif kind == "schedule":
            start_mono_ns, length = value
            start = _from_monotonic(start_mono_ns)
            self.start_ns = start
            if length is not None:
                self.end_ns = start + float(length) * 1e9

    def set_target(self, value: float, *, at_ns: float | None = None) -> None:
        if not self.running:
            return
        if self.spec.model == "closed":
            self.set_users(int(value))
        else:
            self.set_rate(value, at_ns=at_ns)

    def stop(self, reason: str) -> None:
        if not self.running:
            return
        self.running = False
        self.stop_reason = reason
        if self.tick_handle is not None:
            self.tick_handle.cancel()
        # aborting the sockets is what halts sending at once; in-flight requests are
        # not reported (they would only measure the stop)
        for conn in list(self.conns):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        self.finished.set()

    def stopped(self) -> bool:
        # a method, not the attribute: the flag changes while a coroutine awaits
        return not self.running

    # -- reporting ----------------------------------------------------------------
    def report(self, final: bool = False) -> None:
        now_cpu, now_wall = time.process_time(), time.monotonic()
        payload = self.stats.drain()
        payload.update(
            inflight=self.inflight().to_dict(),
            worker=self.spec.index,
            cpu_s=now_cpu - self.last_cpu,
            wall_s=now_wall - self.last_wall,
            rss_bytes=_rss_bytes(),
            journey_errors=self.journey_errors,
            connections=len(self.conns),
            final=final,
            stop_reason=self.stop_reason,
        )
        self.journey_errors = 0
        count = sum(c["count"] for c in payload["cells"].values())
        wall = max(now_wall - self.last_wall, 1e-6)
        self.stats.keep_details = count / wall <= self.spec.detail_rate
        self.last_cpu, self.last_wall = now_cpu, now_wall
        # a blocking send: the message goes whole or, when the controller is gone, not at all
        with contextlib.suppress(OSError):
            self.pipe.send(("report", payload))

    def inflight(self) -> Histogram:
        """How long each request still waiting for its response has waited so far (µs).

        A target that stops answering completes no request, so only these ages show
        it to the latency limit while it hangs.
        """
        ages = Histogram()
        if self.running:
            now = _perf_ns()
            for conn in self.conns:
                if conn.busy:
                    ages.record((now - conn.start_ns) // 1000)
            for start in list(self.journey_requests.values()):
                ages.record((now - start) // 1000)
        return ages

    async def reporter(self) -> None:
        while self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), self.spec.report_every)
            if self.stopped():
                break
            self.sweep_timeouts()
            self.report()

    async def probe(self) -> None:
        # the closed model has no intended times: a 10 ms timer's overshoot shows how
        # late this loop runs its callbacks, which is how late it sends
        while self.running:
            before = _perf_ns()
            await asyncio.sleep(_PROBE_S)
            late = _perf_ns() - before - int(_PROBE_S * 1e9)
            self.stats.send_lag.record(max(0, late) // 1000)

    def sweep_timeouts(self) -> None:
        now = _perf_ns()
        for conn in list(self.conns):
            if conn.busy and now - conn.start_ns > self.timeout_ns:
                conn.fail("timeout", f"no complete response within {self.spec.timeout} s")

    # -- recording ----------------------------------------------------------------
    def record(self, conn: Connection, route: str, method: str, intended_ns: int) -> None:
        start = conn.start_ns
        self.stats.add(
            (start + self.offset_ns) // 1000,
            route,
            method,
            conn.status,
            (conn.end_ns - start) // 1000,
            (conn.ttfb_ns - start) // 1000,
            conn.response_bytes,
            conn.error,
            conn.error_message,
            # from when it was due, or sent if that was earlier (a batch goes out early)
            (conn.end_ns - min(intended_ns, start)) // 1000 if intended_ns else -1,
            conn.server_timing,
        )

    def record_failure(
        self, route: str, method: str, error: str, message: str, intended_ns: int, started_ns: int
    ) -> None:
        """Count a request that never got a connection, with the time it took to fail."""
        now = _perf_ns()
        corrected = (now - min(intended_ns, started_ns)) // 1000 if intended_ns else -1
        elapsed = (now - started_ns) // 1000
        self.stats.add(
            (started_ns + self.offset_ns) // 1000,
            route,
            method,
            0,
            elapsed,
            elapsed,
            0,
            error,
            message,
            corrected,
            "",
        )

    def next_request(self) -> tuple[bytes, str, str]:
        item = self.requests[self.position % len(self.requests)]
        self.position += 1
        return item

    # -- closed model -------------------------------------------------------------
    def set_users(self, n: int) -> None:
        n = max(0, n)
        live = [u for u in self.users if not u.retired]
        for user in live[n:]:
            user.retire()
        for _ in range(n - len(live)):
            user = ClosedUser(self, len(self.users))
            self.users.append(user)
            user.start()
        self.users = [u for u in self.users if not u.retired]

    # -- open model ---------------------------------------------------------------
    def set_rate(self, rate: float, *, at_ns: float | None = None) -> None:
        """Send ``rate`` requests per second from ``at_ns`` on (perf_counter ns; now if None).

        The next send moves at once: a ramp from 0 does not wait out its first tiny
        rate's interval, and 0 sends nothing until the rate rises again. A change
        that reaches the worker late still applies from ``at_ns``: requests the new
        rate owed since then go out at once (their lag measured), and requests the
        old rate sent too many since then push the next ones back, so the count
        sent follows the rate the controller asked, not the pipe's delays.
        """
        rate = max(0.0, rate)
        if rate == self.rate:
            return
        now = float(_perf_ns())
        at = now if at_ns is None else min(at_ns, now)
        if self.start_ns is not None:
            at = max(at, self.start_ns)
        at = max(at, self.base_ns)  # changes apply in the order they were asked
        if self.rate > 0:
            self.advance(at)  # what the old rate owed before the change
            self.earned += (at - self.base_ns) / self.interval_ns
        if self.tick_handle is not None:
            self.tick_handle.cancel()
            self.tick_handle = None
        self.base_ns = at
        self.rate = rate
        if rate == 0.0:
            self.next_ns = _NEVER
            return
        self.interval_ns = 1e9 / rate
        self.tick()

    def advance(self, until: float) -> None:
        """Dispatch every send intended before ``until`` (and before the schedule's end)."""
        now = _perf_ns()
        while self.running and self.rate > 0:
            intended = self.base_ns + (self.sent - self.earned) * self.interval_ns
            if intended >= self.end_ns:
                self.next_ns = _NEVER  # the schedule is over; the controller's stop follows
                return
            if intended >= until:
                self.next_ns = intended
                return
            self.dispatch(int(intended), now)
            self.sent += 1

    def tick(self) -> None:
        self.tick_handle = None
        self.advance(_perf_ns() + _BATCH_NS)
        if self.running and self.rate > 0 and self.next_ns < self.end_ns:
            # wake when the next send enters the batch, in whole ms (at least one)
            wait_ms = (self.next_ns - _EARLY_NS - _perf_ns()) / 1e6
            self.tick_handle = self.loop.call_later(max(1, math.ceil(wait_ms)) / 1e3, self.tick)

    def dispatch(self, intended: int, now: int) -> None:
        if isinstance(self.spec.scenario, Journey):
            if self.inflight_journeys >= self.spec.max_connections:
                self.stats.dropped += 1
                return
            self.stats.send_lag.record(max(0, now - intended) // 1000)
            self.spawn(self.one_journey())
            return
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:  # the server closed it while it was idle
                self.conns.discard(conn)
                continue
            self.stats.send_lag.record(max(0, _perf_ns() - intended) // 1000)
            self.send_open(conn, intended)
            return
        if len(self.pending) >= self.spec.max_pending:
            self.stats.dropped += 1
            return
        self.pending.append(intended)
        if len(self.conns) + self.opening < self.spec.max_connections:
            self.spawn(self.open_one())

    def send_open(self, conn: Connection, intended: int) -> None:
        raw, route, method = self.next_request()
        conn.send(raw, (route, method, intended))

    async def open_one(self, retry: tuple[bytes, Any] | None = None) -> None:
        """Open a connection for the pending sends (or to send ``retry`` once more)."""
        self.opening += 1
        started = _perf_ns()
        try:
            conn = await open_connection(
                self.spec.target, self.on_open_done, timeout=self.spec.timeout
            )
        except (OSError, TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "connect"
            if retry is not None and self.running:
                route, method, intended = retry[1]
                self.record_failure(route, method, kind, str(exc)[:200], intended, started)
            elif self.pending and self.running:
                intended = self.pending.popleft()
                _, route, method = self.next_request()
                self.record_failure(route, method, kind, str(exc)[:200], intended, started)
                await asyncio.sleep(0.01)  # a refused port must not become a busy loop
            return
        finally:
            self.opening -= 1
        if not self.running:
            conn.close()
            return
        self.conns.add(conn)
        if retry is not None:
            conn.send(*retry)
        else:
            self.release(conn)

    def release(self, conn: Connection) -> None:
        if self.pending:
            self.send_open(conn, self.pending.popleft())
        else:
            self.idle.append(conn)

    def on_open_done(self, conn: Connection) -> None:
        route, method, intended = conn.tag
        if not self.running:
            return
        if conn.retryable:
            self.stats.reconnects += 1
            self.conns.discard(conn)
            self.spawn(self.open_one(retry=(conn.raw, conn.tag)))
            return
        self.record(conn, route, method, intended)
        if conn.closed:
            self.conns.discard(conn)
            if self.pending and len(self.conns) + self.opening < self.spec.max_connections:
                self.spawn(self.open_one())
        else:
            self.release(conn)

    # -- journeys -----------------------------------------------------------------
    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def journey_client(self) -> httpx.AsyncClient:
        """A fresh client for one journey of the run's scenario (its run id, headers, timeout)."""
        scenario = self.spec.scenario
        assert isinstance(scenario, Journey)
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return make_client(
            self.spec.target,
            run_id=self.spec.run_id,
            timeout=scenario.timeout,
            headers=scenario.headers,
            ssl_context=self._ssl,
        )

    async def one_journey(self) -> None:
        scenario = self.spec.scenario
        assert isinstance(scenario, Journey)
        self.inflight_journeys += 1
        try:
            async with self.journey_client() as client:
                session = Session(
                    client,
                    recorder=self.stats.add,
                    think_time=scenario.think_time,
                    inflight=self.journey_requests,
                )
                session.data.update(scenario.params)
                await scenario.func(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.journey_errors += 1
        finally:
            self.inflight_journeys -= 1

    # -- main ---------------------------------------------------------------------
    async def run(self) -> None:
        listener = threading.Thread(
            target=self.listen, name=f"perfnb-worker-{self.spec.index}-pipe", daemon=True
        )
        listener.start()
        reporter = self.loop.create_task(self.reporter())
        probe = self.loop.create_task(self.probe()) if self.spec.model == "closed" else None
        self.pipe.send(("ready", self.spec.index))
        await self.finished.wait()
        for task in (reporter, probe):
            if task is not None:
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.report(final=True)


async def run_worker(spec: WorkerSpec, pipe: Pipe) -> None:
    """Run one worker on the current event loop until told to stop."""
    worker = Worker(spec, pipe)
    await worker.run()


def worker_main(spec: WorkerSpec, pipe: Pipe) -> None:
    """The entry point of a worker process (or thread): run, report errors, return."""
    if threading.current_thread() is threading.main_thread():
        # a worker process: Ctrl-C in a terminal reaches the whole process group, and the
        # controller alone answers it (it stops the workers and reports the run). The
        # controller started this process with SIGINT blocked, so none arrived before now.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        if spec.use_uvloop:
            try:
                import uvloop  # the faster loop when it is installed (it comes with uvicorn)
            except ImportError:
                asyncio.run(run_worker(spec, pipe))
            else:
                uvloop.run(run_worker(spec, pipe))
        else:
            asyncio.run(run_worker(spec, pipe))
    except BaseException as exc:
        with contextlib.suppress(OSError, BrokenPipeError):
            pipe.send(("error", "".join(traceback.format_exception(exc))[-4000:]))
        if not isinstance(exc, Exception):
            raise
    finally:
        with contextlib.suppress(OSError):
            pipe.close()
