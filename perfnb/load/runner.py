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
import multiprocessing
import os
import pickle
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_pipes
from typing import Any, Protocol

from perfnb.errors import ConfigError
from perfnb.load.engine import Target, check_target
from perfnb.load.histogram import Histogram
from perfnb.load.records import detail_record, run_event_record, second_records
from perfnb.load.result import RouteSummary, RunResult
from perfnb.load.safety import (
    Limits,
    SafetyMonitor,
    StopEvent,
    StopReason,
    TargetMemoryProbe,
    Window,
)
from perfnb.load.scenarios import Endpoints, Journey
from perfnb.load.shapes import Shape, check_shape
from perfnb.load.stats import Cell
from perfnb.load.worker import WorkerSpec, worker_main
from perfnb.schema import Record, Sink

__all__ = ["LoadRun", "run_load"]

_TICK_S = 0.1
_STOP_GRACE_S = 2.0
_SEND_LAG_LIMIT_MS = 5.0
_CPU_SATURATED = 0.9


class _StoreLike(Protocol):
    def writer(self) -> Any: ...


@dataclass(slots=True)
class _Handle:
    index: int
    pipe: Pipe
    process: Any  # multiprocessing Process or threading.Thread
    ready: bool = False
    final: bool = False
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_bytes: int = 0
    error: str = ""
    sent_target: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[str, object]) -> None:
        with self.lock, contextlib.suppress(OSError, BrokenPipeError, ValueError):
            self.pipe.send(message)

    def alive(self) -> bool:
        return bool(self.process.is_alive())


def _split(value: float, n: int, model: str) -> list[float]:
    if model == "open":
        return [value / n] * n
    users = int(value)
    return [float(users // n + (1 if i < users % n else 0)) for i in range(n)]


class LoadRun:
    """One load run against one target; start it, watch it, stop it, read its result.

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
        self.in_process = False
        if workers is None:
            workers = os.cpu_count() or 1
            if isinstance(scenario, Journey):
                try:
                    pickle.dumps(scenario)
                except (pickle.PicklingError, AttributeError, TypeError):
                    workers = 0  # a notebook-defined journey runs on a thread here
        if workers < 0:
            msg = f"workers={workers!r}: accepted: 0 (a thread in this process) or more processes"
            raise ConfigError(msg)
        if workers == 0:
            self.in_process = True
            workers = 1
        self.n_workers = workers
        self._stop_request: tuple[str, str] | None = None
        self._stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        # live state
        self._seconds: dict[tuple[int, str, str], Cell] = {}
        self._totals: dict[tuple[str, str], Cell] = {}
        self._send_lag = Histogram()
        self._dropped = 0
        self._journey_errors = 0
        self._current = 0.0
        self._started = 0.0
        self._t0 = 0.0
        self.sink_errors = 0
        self._writer: Any = None

    # -- public control -----------------------------------------------------------
    def start(self) -> LoadRun:
        """Start the run on a background thread and return at once."""
        if self._thread is not None:
            msg = f"run {self.run_id} was already started; create a new LoadRun"
            raise ConfigError(msg)
        self._thread = threading.Thread(
            target=self._control, name=f"perfnb-{self.run_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, reason: str = "emergency_stop", message: str = "stopped by the user") -> None:
        """Emergency stop: halt all sending now (workers that do not obey are killed in 2 s)."""
        with self._lock:
            if self._stop_request is None:
                self._stop_request = (reason, message)
        self._stop_flag.set()

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
        with self._lock:
            total = Cell()
            for cell in self._totals.values():
                total.merge(cell)
            window = self._window(self.limits.error_window)
        return {
            "run_id": self.run_id,
            "elapsed_s": time.monotonic() - self._t0 if self._t0 else 0.0,
            "model": self.shape.model,
            "target": self._current,
            "requests": total.count,
            "errors": total.error_count,
            "window_requests": window.requests,
            "window_errors": window.errors,
            "window_p95_ms": window.p95_ms,
        }

    def route_cells(self) -> dict[str, Cell]:
        """Each route's merged counts so far, keyed ``"METHOD /route"`` (copies)."""
        with self._lock:
            return {f"{m} {r}": Cell().merge(c) for (r, m), c in self._totals.items()}

    # -- records ------------------------------------------------------------------
    def _emit(self, records: Iterable[Record]) -> None:
        for record in records:
            for sink in (self.sink, self._writer.append if self._writer is not None else None):
                if sink is None:
                    continue
                try:
                    sink(record)
                except Exception:
                    # a bad sink must not stop a load run mid-way (and leave load running)
                    self.sink_errors += 1

    # -- the controller -----------------------------------------------------------
    def _spawn(self) -> list[_Handle]:
        handles: list[_Handle] = []
        ctx = multiprocessing.get_context("spawn")
        for index in range(self.n_workers):
            spec = WorkerSpec(
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
            if self.in_process:
                parent, child = multiprocessing.Pipe()
                proc: Any = threading.Thread(
                    target=worker_main,
                    args=(spec, child),
                    name=f"perfnb-worker-{index}",
                    daemon=True,
                )
            else:
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main,
                    args=(spec, child),
                    name=f"perfnb-worker-{index}",
                    daemon=True,
                )
            proc.start()
            if not self.in_process:
                child.close()
            handles.append(_Handle(index, parent, proc))
        return handles

    def _receive(self, handles: list[_Handle], timeout: float) -> None:
        by_pipe = {h.pipe: h for h in handles if not h.final}
        if not by_pipe:
            return
        for pipe in wait_pipes(list(by_pipe), timeout=timeout):
            handle = by_pipe[pipe]  # type: ignore[index]
            try:
                kind, payload = handle.pipe.recv()
            except (EOFError, OSError):
                handle.final = True
                if not handle.error:
                    handle.error = "worker ended without a final report"
                continue
            if kind == "ready":
                handle.ready = True
            elif kind == "error":
                handle.error = str(payload)
                handle.final = True
            elif kind == "report":
                self._merge(handle, payload)

    def _merge(self, handle: _Handle, payload: dict[str, Any]) -> None:
        details = payload["details"]
        with self._lock:
            for key, wire in payload["cells"].items():
                cell = Cell.from_wire(wire)
                _, route, method = key
                mine = self._seconds.get(key)
                self._seconds[key] = cell if mine is None else mine.merge(cell)
                total = self._totals.get((route, method))
                if total is None:
                    self._totals[(route, method)] = Cell().merge(cell)
                else:
                    total.merge(cell)
            self._send_lag.merge(Histogram.from_dict(payload["send_lag"]))
            self._dropped += int(payload["dropped"])
            self._journey_errors += int(payload["journey_errors"])
        handle.cpu_s += float(payload["cpu_s"])
        handle.wall_s += float(payload["wall_s"])
        handle.rss_bytes = int(payload["rss_bytes"])
        if payload.get("final"):
            handle.final = True
        if details:
            self._emit(
                detail_record(d, run_id=self.run_id, service=self.service, worker=handle.index)
                for d in details
            )

    def _window(self, seconds: float) -> Window:
        now_sec = int(time.time())
        first = now_sec - int(seconds) + 1
        requests = errors = 0
        latency = Histogram()
        for (sec, _, _), cell in self._seconds.items():
            if sec >= first:
                requests += cell.count
                errors += cell.error_count
                latency.merge(cell.latency)
        return Window(requests=requests, errors=errors, p95_ms=latency.percentile(95))

    def _flush_seconds(self, *, all_: bool) -> None:
        cutoff = int(time.time()) - 2
        with self._lock:
            ready = sorted(k for k in self._seconds if all_ or k[0] <= cutoff)
            cells = [(k, self._seconds.pop(k)) for k in ready]
        for (sec, route, method), cell in cells:
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
        handles: list[_Handle] = []
        probe: TargetMemoryProbe | None = None
        stop: StopEvent | None = None
        monitor = SafetyMonitor(self.limits)
        killed = 0
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
            if self.probe_memory and self.limits.max_target_memory_mb is not None:
                probe = TargetMemoryProbe(self.target, run_id=self.run_id)
                probe.start()
            deadline = time.monotonic() + 60.0
            while not all(h.ready for h in handles):
                self._receive(handles, 0.05)
                if (
                    self._stop_flag.is_set()
                    or time.monotonic() > deadline
                    or any(h.error for h in handles)
                ):
                    break
            t0_ns = time.monotonic_ns()
            self._t0 = t0_ns / 1e9
            if self.shape.model == "open":
                length = getattr(self.shape, "duration", None)
                ends = float(length) if isinstance(length, int | float) else None
                for h in handles:
                    h.send(("schedule", (t0_ns, ends)))
            next_tick = self._t0
            last_flush = self._t0
            while stop is None:
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + _TICK_S
                    stop = self._tick(handles, monitor, probe, now - self._t0)
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
            for h in handles:
                h.send(("stop", final_stop.reason))
            grace = time.monotonic() + _STOP_GRACE_S
            while any(not h.final for h in handles) and time.monotonic() < grace:
                self._receive(handles, 0.05)
            for h in handles:
                if not h.final and not self.in_process and h.alive():
                    h.process.kill()
                    killed += 1
            for h in handles:
                if not self.in_process:
                    h.process.join(timeout=1.0)
                with contextlib.suppress(OSError):
                    h.pipe.close()
            if probe is not None:
                probe.stop()
            try:
                self._finish(final_stop, monitor, handles, killed, probe)
            except BaseException as exc:  # pragma: no cover - reported through wait()
                self._error = self._error or exc
            finally:
                if self._writer is not None:
                    with contextlib.suppress(Exception):
                        self._writer.close()
                self._done.set()

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0 if self._t0 else 0.0

    def _tick(
        self,
        handles: list[_Handle],
        monitor: SafetyMonitor,
        probe: TargetMemoryProbe | None,
        elapsed: float,
    ) -> StopEvent | None:
        with self._lock:
            request = self._stop_request
        if request is not None:
            asked, message = request
            reason: StopReason = "interrupt" if asked == "interrupt" else "emergency_stop"
            return StopEvent(reason, message, elapsed)
        failed = [h for h in handles if h.error or (h.final and not h.error) or not h.alive()]
        if failed:
            h = failed[0]
            text = h.error or "worker process exited"
            return StopEvent("worker_failed", f"worker {h.index} failed: {text[-500:]}", elapsed)
        wanted = self.shape.tick(elapsed)
        if wanted is None:
            return StopEvent("completed", "the shape finished", elapsed)
        self._current = float(wanted)
        for h, share in zip(
            handles, _split(float(wanted), len(handles), self.shape.model), strict=True
        ):
            if share != h.sent_target:
                h.sent_target = share
                h.send(("target", share))
        with self._lock:
            window = self._window(self.limits.error_window)
        generator_mb = sum(h.rss_bytes for h in handles) / 1e6
        if self.in_process:
            generator_mb = 0.0  # the thread shares the caller's memory; nothing to judge apart
        window = Window(
            requests=window.requests,
            errors=window.errors,
            p95_ms=window.p95_ms,
            target_memory_mb=probe.latest if probe is not None else None,
            generator_memory_mb=generator_mb or None,
        )
        return monitor.check(window, elapsed=elapsed)

    def _start_tags(self) -> dict[str, str]:
        return {
            "scenario": self.name[:200],
            "model": self.shape.model,
            "target": self.target.url[:200],
            "workers": str(self.n_workers),
        }

    def _finish(
        self,
        stop: StopEvent,
        monitor: SafetyMonitor,
        handles: list[_Handle],
        killed: int,
        probe: TargetMemoryProbe | None,
    ) -> None:
        self._flush_seconds(all_=True)
        elapsed = max(stop.elapsed, 1e-6)
        length = getattr(self.shape, "duration", None)
        if stop.reason == "completed" and isinstance(length, int | float):
            # the controller notices the end on its next tick, late on a busy machine;
            # rates are over the time the shape asked for
            elapsed = min(elapsed, float(length))
        with self._lock:
            totals = dict(self._totals)
        routes = [RouteSummary.of(r, m, c, elapsed) for (r, m), c in sorted(totals.items())]
        all_cell = Cell()
        for cell in totals.values():
            all_cell.merge(cell)
        total = RouteSummary.of("ALL", "", all_cell, elapsed)
        cpu = [h.cpu_s / h.wall_s if h.wall_s > 0 else 0.0 for h in handles]
        reasons: list[str] = []
        lag99 = self._send_lag.percentile(99)
        if lag99 > _SEND_LAG_LIMIT_MS:
            reasons.append(f"send lag p99 {lag99:.1f} ms exceeded {_SEND_LAG_LIMIT_MS:g} ms")
        for h, share in zip(handles, cpu, strict=True):
            if share >= _CPU_SATURATED and not self.in_process:
                reasons.append(f"worker {h.index} saturated its CPU ({share:.0%} of a core)")
        if killed:
            reasons.append(f"{killed} worker(s) did not stop in time and were killed")
        self._result = RunResult(
            run_id=self.run_id,
            target=self.target.url,
            model=self.shape.model,
            scenario=self.name,
            workers=self.n_workers,
            started=self._started,
            elapsed_s=stop.elapsed,
            stop=stop,
            breaches=list(monitor.breaches),
            routes=routes,
            total=total,
            latency=all_cell.latency,
            corrected=all_cell.corrected,
            send_lag=self._send_lag,
            dropped=self._dropped,
            worker_cpu=cpu,
            generator_memory_mb=sum(h.rss_bytes for h in handles) / 1e6,
            target_memory_mb=probe.latest if probe is not None else None,
            killed_workers=killed,
            journey_errors=self._journey_errors,
            reliable=not reasons,
            unreliable_reasons=reasons,
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
