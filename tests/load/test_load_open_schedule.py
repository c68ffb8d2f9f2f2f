"""The open-model schedule under changing rates: ramps from 0, pauses at 0, late messages.

The schedule's arithmetic is checked on a simulated clock (pure logic: the worker's
clock is replaced, its sends are collected); the real run goes against the load
target on uvicorn, judged by the server's own log.
"""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing

import pytest
from load_target import TargetApp

import perfnb.load.worker as worker_module
from perfnb.errors import ConfigError
from perfnb.load import Endpoint, Endpoints, LoadRun, Stages, run_load
from perfnb.load.engine import check_target
from perfnb.load.shapes import Shape
from perfnb.load.worker import Worker, WorkerSpec

_SCENARIO = Endpoints([Endpoint("GET", "/a", route="/a"), Endpoint("GET", "/b", route="/b")])
# 0 → 200/s over 2 s, 200/s for 3 s, back to 0 over 1 s, then 1.5 s of nothing
_UP_HOLD_DOWN = Stages([(2, 200), (3, 200), (1, 0), (1.5, 0)], model="open")


def _simulate(
    shape: Shape, monkeypatch: pytest.MonkeyPatch, *, late_ms: float = 0.0
) -> list[float]:
    """Intended send times (s into the run) of one worker following ``shape``, its rate
    changes asked every 0.1 s (as the controller does) and delivered ``late_ms`` late."""
    clock = [0]
    monkeypatch.setattr(worker_module, "_perf_ns", lambda: clock[0])
    start = 1_000_000_000
    sent: list[float] = []

    async def main() -> None:
        here, _there = multiprocessing.Pipe()
        spec = WorkerSpec(
            index=0,
            run_id="sim",
            target=check_target("http://127.0.0.1:9"),
            scenario=_SCENARIO,
            model="open",
        )
        worker = Worker(spec, here)
        worker.dispatch = lambda intended, now: sent.append((intended - start) / 1e9)  # type: ignore[method-assign]
        worker.start_ns = float(start)
        length = getattr(shape, "duration", None)
        if isinstance(length, int | float):
            worker.end_ns = start + length * 1e9
        inbox: list[tuple[int, float, int]] = []  # (delivered at, rate, asked at)
        next_tick = start
        now = start
        while True:
            clock[0] = now
            if now >= next_tick:
                wanted = shape.tick((now - start) / 1e9)
                if wanted is None:
                    break
                inbox.append((now + int(late_ms * 1e6), wanted, now))
                next_tick += 100_000_000
            while inbox and inbox[0][0] <= now:
                _, rate, asked = inbox.pop(0)
                worker.set_rate(rate, at_ns=asked)
            if worker.next_ns <= now:
                worker.tick()  # what the event loop's timer would do
            now += 1_000_000  # 1 ms steps
        worker.stop("end of the simulation")

    asyncio.run(main())
    return sent


def _count(times: list[float], low: float, high: float) -> int:
    return bisect.bisect_left(times, high) - bisect.bisect_left(times, low)


def test_a_ramp_from_zero_does_not_wait_out_its_first_tiny_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    times = sorted(_simulate(_UP_HOLD_DOWN, monkeypatch))
    # the first tick asks 0/s (the ramp's start): the first request goes at the second
    assert 0.0 <= times[0] <= 0.1 + 1e-9
    # the ramp's requests follow the rates asked tick by tick: 10, 20, ... 190 per second
    assert abs(_count(times, 0.0, 2.0) - 190) <= 1
    assert abs(_count(times, 2.0, 5.0) - 600) <= 1
    assert abs(_count(times, 5.0, 6.0) - 110) <= 1
    assert _count(times, 6.0, 99.0) == 0


def test_a_rate_of_zero_sends_nothing_until_it_rises(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Stages([(1, 0), (1, 100), (1, 100)], model="open")
    times = sorted(_simulate(shape, monkeypatch))
    assert _count(times, 0.0, 1.1) == 0
    assert abs(_count(times, 2.0, 3.0) - 100) <= 1


def test_late_rate_changes_neither_add_nor_cut_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    on_time = sorted(_simulate(_UP_HOLD_DOWN, monkeypatch))
    late = sorted(_simulate(_UP_HOLD_DOWN, monkeypatch, late_ms=45.0))
    assert abs(len(late) - len(on_time)) <= 1
    for low, high in ((0.0, 2.0), (2.0, 5.0), (5.0, 6.0)):
        assert abs(_count(late, low, high) - _count(on_time, low, high)) <= 1, (low, high)
    # a send made before the late pause arrived stays made; none after it
    assert _count(late, 6.045, 99.0) == 0


@pytest.mark.slow
def test_a_stages_run_from_zero_holds_its_middle_stage_and_then_sends_nothing(
    target: TargetApp,
) -> None:
    result = run_load(target.url, _SCENARIO, _UP_HOLD_DOWN, workers=2)
    assert result.stop.reason == "completed"
    seen = sorted(t for t, _, run in target.log if run == result.run_id)
    assert seen, "no request reached the server"
    # The server's clock: the first request went out with the first rate above 0, at
    # the run's start (give or take a tick). The stage edges are ramps, so the count
    # in the middle stage hardly moves if this anchor is off by a tenth of a second.
    start = seen[0]
    middle = _count(seen, start + 2.0, start + 5.0)
    assert abs(middle - 600) <= 30, (middle, len(seen))
    # the ramp down ends 6 s in; the last rates asked are a few per second, so half a
    # second covers a late controller tick and the anchor's slack
    assert _count(seen, start + 6.5, float("inf")) == 0, seen[-5:]
    assert abs(result.total.count - 900) <= 0.08 * 900


class _Runaway:
    """A custom shape with a bug: it asks for an infinite rate."""

    model = "open"

    def tick(self, elapsed: float) -> float | None:
        return float("inf") if elapsed < 5 else None


def test_a_shape_asking_an_infinite_rate_fails_the_run_naming_the_value() -> None:
    # an infinite rate would be a zero interval: a worker looping for ever on one send time
    run = LoadRun("http://127.0.0.1:9", _SCENARIO, _Runaway(), workers=0, probe_memory=False)
    with pytest.raises(ConfigError, match=r"returned inf: accepted: a finite number"):
        run.start().wait(timeout=30)
