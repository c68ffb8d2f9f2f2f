"""The run controller: worker processes, the shape's ticks, safety, records, the result.

:class:`LoadRun` runs off the caller's thread (a notebook kernel stays
responsive, and its stop button works while the run goes on). It starts worker
processes with ``spawn`` (one per core by default), tells them ten times a second
how many users or what rate the shape wants, merges what they report, judges the
safety limits, writes records to the sink and the store, and on any stop halts
all sending: workers are told to stop and killed if they have not obeyed within
2 s. :func:`run_load` is the blocking form; Ctrl-C or a kernel interrupt there
stops the run the same way, with reason ``"interrupt"``.

>>> from perfnb.load import Endpoint, Endpoints, ConstantRate       # doctest: +SKIP
>>> result = run_load("http://127.0.0.1:8000",
...                   Endpoints([Endpoint("GET", "/api/health")]),
...                   ConstantRate(200, duration=10))                # doctest: +SKIP
>>> print(result.table())                                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from perfnb.errors import ConfigError
from perfnb.load.bottleneck import Bottleneck, Thresholds
from perfnb.load.engine import Target, check_target
from perfnb.load.guard import RunGuard
from perfnb.load.histogram import Histogram
from perfnb.load.levels import LevelRecorder
from perfnb.load.pool import (
    WorkerHandle,
    cpu_shares,
    receive,
    send_targets,
    spawn_workers,
    stop_workers,
    worker_count,
)
from perfnb.load.records import detail_record, run_event_record, second_records
from perfnb.load.result import RouteSummary, RunResult
from perfnb.load.safety import Limits, StopEvent
from perfnb.load.scenarios import Endpoints, Journey
from perfnb.load.shapes import Shape, check_shape
from perfnb.load.stats import Cell
from perfnb.load.tally import Tally
from perfnb.load.worker import WorkerSpec
from perfnb.schema import Record, Sink

__all__ = ["LoadRun", "run_load"]

_TICK_S = 0.1
_STOP_GRACE_S = 2.0
_SEND_LAG_LIMIT_MS = 5.0
_CPU_SATURATED = 0.9
_log = logging.getLogger("perfnb.load")


class _StoreLike(Protocol):
    def writer(self) -> Any: ...


class LoadRun:
    """One load run against one target; start it, watch it, stop it, read its result.

    The run's records go to ``sink`` and ``store`` and, on their way, to ``levels``
    (a :class:`~perfnb.load.levels.LevelRecorder` of this run, or ``sink`` itself
    when it is one): the result's ``bottleneck`` is judged from it. Feed it the
    app's own records of the run (``perfnb.connect(url, sink=run.levels)``) and the
    time split holds even where the app sends no Server-Timing.

    >>> run = LoadRun("http://127.0.0.1:8000", scenario, Users(10, duration=30))  # doctest: +SKIP
    >>> run.start(); run.snapshot()["requests"]                                   # doctest: +SKIP
    >>> run.stop(); result = run.wait()                                           # doctest: +SKIP
    """

    def __init__(
        self,
        target: str | Target,
        scenario: Endpoints | Journey,
        shape: Shape,
        *,
        run_id: str | None = None,
        workers: int | None = None,
        limits: Limits | None = None,
        sink: Sink | None = None,
        store: _StoreLike | None = None,
        allow_hosts: Iterable[str] = (),
        timeout: float = 10.0,
        detail_rate: float = 200.0,
        max_connections: int = 256,
        probe_memory: bool = True,
        service: str = "",
        use_uvloop: bool = True,
        name: str = "",
    ) -> None:
        self.target = (
            target if isinstance(target, Target) else check_target(target, allow_hosts=allow_hosts)
        )
        given: object = scenario
        if not isinstance(given, Endpoints | Journey):
            msg = f"scenario: got {type(given).__name__}; accepted: Endpoints or Journey"
            raise ConfigError(msg)
        self.scenario = scenario
        self.shape = check_shape(shape)
        self.run_id = run_id or f"load-{uuid.uuid4().hex[:12]}"
        self.limits = limits or Limits()
        self.sink = sink
        # every run judges its own bottleneck from a recorder beside the sink. A recorder
        # of this very run given as the sink is used as it is, so what the caller feeds it
        # (the app's records of the run) counts too.
        if isinstance(sink, LevelRecorder) and sink.run_id == self.run_id:
            self.levels = sink
        else:
            self.levels = LevelRecorder(run_id=self.run_id)
        self.store = store
        self.timeout = timeout
        self.detail_rate = detail_rate
        self.max_connections = max_connections
        self.probe_memory = probe_memory
        self.service = service
        self.use_uvloop = use_uvloop
        self.name = name or (
            getattr(scenario.func, "__name__", "journey")
            if isinstance(scenario, Journey)
            else "endpoints"
        )
        self.n_workers, self.in_process = worker_count(workers, scenario)
        self._guard = RunGuard(
            self.limits,
            self.target,
            run_id=self.run_id,
            probe_memory=probe_memory,
            in_process=self.in_process,
        )
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._tally = Tally()
        self._current = 0.0
        self._started = 0.0
        self._stopped_at = 0.0
        self._t0 = 0.0
        self.sink_errors = 0
        self._writer: Any = None

    # -- public control -----------------------------------------------------------
    def start(self) -> LoadRun:
        """Start the run on a background thread and return at once."""
        if self._thread is not None:
            msg = f"run {self.run_id} was already started; create a new LoadRun"
            raise ConfigError(msg)
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # a worker process starts by importing the caller's script; a script that
            # starts its run at import would start it again in every worker
            msg = (
                "a load run was started while a worker process imported the script that "
                'starts it: put the script\'s run under `if __name__ == "__main__":`'
            )
            raise ConfigError(msg)
        self._thread = threading.Thread(
            target=self._control, name=f"perfnb-{self.run_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, reason: str = "emergency_stop", message: str = "stopped by the user") -> None:
        """Emergency stop: halt all sending now (workers that do not obey are killed in 2 s)."""
        self._guard.request(reason, message)

    @property
    def running(self) -> bool:
        """True from start until the result is ready."""
        return self._thread is not None and not self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the end of the run and return its result.

        Waits in short steps so Ctrl-C (KeyboardInterrupt) reaches the caller.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.1):
            if deadline is not None and time.monotonic() > deadline:
                msg = f"run {self.run_id} still running after {timeout} s"
                raise TimeoutError(msg)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def snapshot(self) -> dict[str, Any]:
        """Live figures: elapsed, users or rate wanted, requests, errors, p95 of the last 5 s."""
        total = self._tally.total()
        window = self._tally.window(self.limits.error_window)
        return {
            "run_id": self.run_id,
            "elapsed_s": time.monotonic() - self._t0 if self._t0 else 0.0,
            "model": self.shape.model,
            "target": self._current,
            "requests": total.count,
            "errors": total.error_count,
            "error_types": dict(total.errors),
            "reconnects": self._tally.reconnects,
            "window_requests": window.requests,
            "window_errors": window.errors,
            "window_p95_ms": window.p95_ms,
        }

    def route_cells(self) -> dict[str, Cell]:
        """Each route's merged counts so far, keyed ``"METHOD /route"`` (copies)."""
        return {f"{m} {r}": c for (r, m), c in self._tally.routes().items()}

    # -- records ------------------------------------------------------------------
    def _emit(self, records: Iterable[Record]) -> None:
        writer = self._writer
        sinks = (
            self.levels,
            None if self.sink is self.levels else self.sink,
            None if writer is None else writer.append,
        )
        for record in records:
            for sink in sinks:
                if sink is None:
                    continue
                try:
                    sink(record)
                except Exception:
                    # a bad sink must not stop a load run mid-way (and leave load running)
                    self.sink_errors += 1

    # -- the controller -----------------------------------------------------------
    def _spawn(self) -> list[WorkerHandle]:
        specs = [
            WorkerSpec(
                index=index,
                run_id=self.run_id,
                target=self.target,
                scenario=self.scenario,
                model=self.shape.model,
                timeout=self.timeout,
                detail_rate=self.detail_rate / self.n_workers,
                max_connections=self.max_connections,
                use_uvloop=self.use_uvloop,
            )
            for index in range(self.n_workers)
        ]
        return spawn_workers(specs, in_process=self.in_process)

    def _receive(self, handles: list[WorkerHandle], timeout: float) -> None:
        receive(handles, timeout, self._merge)

    def _merge(self, handle: WorkerHandle, payload: dict[str, Any]) -> None:
        self._tally.add(payload)
        handle.cpu_s += float(payload["cpu_s"])
        handle.wall_s += float(payload["wall_s"])
        handle.rss_bytes = int(payload["rss_bytes"])
        if payload.get("final"):
            handle.final = True
        details = payload["details"]
        if details:
            self._emit(
                detail_record(d, run_id=self.run_id, service=self.service, worker=handle.index)
                for d in details
            )

    def _flush_seconds(self, *, all_: bool) -> None:
        for (sec, route, method), cell in self._tally.take_seconds(settle=None if all_ else 2):
            self._emit(
                second_records(
                    sec,
                    route,
                    method,
                    cell,
                    run_id=self.run_id,
                    service=self.service,
                    open_model=self.shape.model == "open",
                )
            )

    def _control(self) -> None:
        handles: list[WorkerHandle] = []
        guard = self._guard
        stop: StopEvent | None = None
        try:
            if self.store is not None:
                self._writer = self.store.writer()
            self._started = time.time()
            self._emit(
                [
                    run_event_record(
                        "run_start", self._start_tags(), run_id=self.run_id, service=self.service
                    )
                ]
            )
            handles = self._spawn()
            guard.start()
            deadline = time.monotonic() + 60.0
            while not all(h.ready for h in handles):
                self._receive(handles, 0.05)
                if (
                    guard.requested.is_set()
                    or time.monotonic() > deadline
                    or any(h.error for h in handles)
                ):
                    break
            t0_ns = time.monotonic_ns()
            self._t0 = t0_ns / 1e9
            if self.shape.model == "open":
                # every worker's schedule is anchored here, not on when its messages arrive
                length = getattr(self.shape, "duration", None)
                ends = float(length) if isinstance(length, int | float) else None
                for h in handles:
                    h.send(("schedule", (t0_ns, ends)))
            next_tick = self._t0
            last_flush = self._t0
            while stop is None:
                now_ns = time.monotonic_ns()
                now = now_ns / 1e9
                if now >= next_tick:
                    next_tick = now + _TICK_S
                    stop = self._tick(handles, now_ns, (now_ns - t0_ns) / 1e9)
                    if stop is not None:
                        break
                if now - last_flush >= 1.0:
                    last_flush = now
                    self._flush_seconds(all_=False)
                self._receive(handles, max(0.0, min(next_tick - time.monotonic(), 0.05)))
        except BaseException as exc:
            self._error = exc
            stop = StopEvent("worker_failed", f"the controller failed: {exc!r}", self._elapsed())
        finally:
            assert stop is not None or self._error is not None
            final_stop = stop or StopEvent("worker_failed", "unknown", self._elapsed())
            self._stopped_at = time.time()
            killed = stop_workers(
                handles, final_stop.reason, grace=_STOP_GRACE_S, on_report=self._merge
            )
            guard.close()
            try:
                self._finish(final_stop, handles, killed)
            except BaseException as exc:  # pragma: no cover - reported through wait()
                self._error = self._error or exc
            finally:
                if self._writer is not None:
                    with contextlib.suppress(Exception):
                        self._writer.close()
                self._done.set()

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0 if self._t0 else 0.0

    def _tick(self, handles: list[WorkerHandle], at_ns: int, elapsed: float) -> StopEvent | None:
        stop = self._guard.check(handles, elapsed=elapsed)
        if stop is not None:
            return stop
        wanted = self.shape.tick(elapsed)
        if wanted is None:
            return StopEvent("completed", "the shape finished", elapsed)
        wanted = _checked(wanted, elapsed)
        self._current = wanted
        send_targets(handles, wanted, self.shape.model, at_ns=at_ns)
        return self._guard.check_limits(handles, self._tally, elapsed=elapsed)

    def _bottleneck(self) -> Bottleneck | None:
        # the analysis only reads what the run recorded: whatever goes wrong in it, the
        # run's result stands without it
        try:
            return _judged(self.levels.bottleneck(shape=self.shape))
        except Exception:
            _log.warning("run %s: the bottleneck analysis failed", self.run_id, exc_info=True)
            return None

    def _start_tags(self) -> dict[str, str]:
        return {
            "scenario": self.name[:200],
            "model": self.shape.model,
            "target": self.target.url[:200],
            "workers": str(self.n_workers),
        }

    def _finish(self, stop: StopEvent, handles: list[WorkerHandle], killed: int) -> None:
        self._flush_seconds(all_=True)
        elapsed = max(stop.elapsed, 1e-6)
        length = getattr(self.shape, "duration", None)
        if stop.reason == "completed" and isinstance(length, int | float):
            # the controller notices the end on its next tick, late on a busy machine;
            # rates are over the time the shape asked for
            elapsed = min(elapsed, float(length))
        tally = self._tally
        totals = tally.routes()
        routes = [RouteSummary.of(r, m, c, elapsed) for (r, m), c in sorted(totals.items())]
        all_cell = tally.total()
        total = RouteSummary.of("ALL", "", all_cell, elapsed)
        cpu = cpu_shares(handles)
        reasons = _doubts(tally.send_lag, cpu, killed=killed, in_process=self.in_process)
        if all_cell.count and not all_cell.latency.count:
            reasons.append(
                f"every request failed ({all_cell.count}): there is no latency to report, "
                "only the errors"
            )
        self._result = RunResult(
            run_id=self.run_id,
            target=self.target.url,
            model=self.shape.model,
            scenario=self.name,
            workers=self.n_workers,
            started=self._started,
            stopped_at=self._stopped_at,
            elapsed_s=stop.elapsed,
            stop=stop,
            breaches=self._guard.breaches,
            routes=routes,
            total=total,
            latency=all_cell.latency,
            corrected=all_cell.corrected,
            send_lag=tally.send_lag,
            dropped=tally.dropped,
            reconnects=tally.reconnects,
            worker_cpu=cpu,
            generator_memory_mb=sum(h.rss_bytes for h in handles) / 1e6,
            target_memory_mb=self._guard.target_memory_mb,
            killed_workers=killed,
            journey_errors=tally.journey_errors,
            reliable=not reasons,
            unreliable_reasons=reasons,
            bottleneck=self._bottleneck(),
        )
        tags = {
            "reason": stop.reason,
            "message": stop.message[:250],
            "reliable": str(not reasons).lower(),
            **{k[:64]: f"{v:.6g}" for k, v in list(stop.figures.items())[:12]},
        }
        self._emit(
            [
                run_event_record(
                    "run_stop", tags, run_id=self.run_id, service=self.service, value=stop.elapsed
                )
            ]
        )


def _doubts(send_lag: Histogram, cpu: list[float], *, killed: int, in_process: bool) -> list[str]:
    """Why the generator itself may have distorted a run's figures (empty: trust them)."""
    reasons: list[str] = []
    lag99 = send_lag.percentile(99)
    if lag99 > _SEND_LAG_LIMIT_MS:
        reasons.append(f"send lag p99 {lag99:.1f} ms exceeded {_SEND_LAG_LIMIT_MS:g} ms")
    for index, share in enumerate(cpu):
        # a thread worker shares the caller's process: its CPU share says nothing alone
        if share >= _CPU_SATURATED and not in_process:
            reasons.append(f"worker {index} saturated its CPU ({share:.0%} of a core)")
    if killed:
        reasons.append(f"{killed} worker(s) did not stop in time and were killed")
    return reasons


def _judged(found: Bottleneck) -> Bottleneck | None:
    """``found``, or None when no level of the run had enough requests to judge."""
    least = Thresholds().min_requests
    if found.found or any(row["requests"] >= least for row in found.levels):
        return found
    return None


def _checked(wanted: float, elapsed: float) -> float:
    value = float(wanted)
    if not (math.isfinite(value) and value >= 0):
        msg = (
            f"shape.tick({elapsed:.3f}) returned {wanted!r}: accepted: a finite number ≥ 0 "
            "(users or requests per second), or None to end the run"
        )
        raise ConfigError(msg)
    return value


def run_load(
    target: str | Target,
    scenario: Endpoints | Journey,
    shape: Shape,
    **options: Any,
) -> RunResult:
    """Run a load test to its end and return the result (blocking).

    Ctrl-C or a kernel interrupt stops the run (reason ``"interrupt"``) and still
    returns its result. Options are those of :class:`LoadRun`.
    """
    run = LoadRun(target, scenario, shape, **options).start()
    try:
        return run.wait()
    except KeyboardInterrupt:
        run.stop("interrupt", "interrupted (Ctrl-C or kernel interrupt)")
        return run.wait()
