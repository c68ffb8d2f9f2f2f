"""timing() spans: nesting, sums, sync and async code, the db span, bad names."""

from __future__ import annotations

import asyncio

import pytest

from perfnb.errors import ConfigError
from perfnb.server.spans import MAX_SPANS, RequestTimings, _current, current_timings, timing


def _within(timings: RequestTimings) -> object:
    return _current.set(timings)


def test_spans_nest_and_sum_by_name() -> None:
    timings = RequestTimings()
    token = _current.set(timings)
    try:
        with timing("render"), timing("template"):
            pass
        with timing("render"):
            pass
    finally:
        _current.reset(token)
    assert timings.spans is not None
    assert list(timings.spans) == ["template", "render"]
    assert all(ns >= 0 for ns in timings.spans.values())


def test_db_span_feeds_db_time_not_spans() -> None:
    timings = RequestTimings()
    token = _current.set(timings)
    try:
        with timing("db"):
            pass
        with timing("db"):
            pass
    finally:
        _current.reset(token)
    assert timings.spans is None
    assert timings.db_count == 2


def test_async_with_and_tasks_see_the_request() -> None:
    timings = RequestTimings()

    async def child() -> None:
        async with timing("child"):
            await asyncio.sleep(0)

    async def main() -> None:
        token = _current.set(timings)
        try:
            await asyncio.gather(child(), child())
        finally:
            _current.reset(token)

    asyncio.run(main())
    assert timings.spans is not None
    assert list(timings.spans) == ["child"]


def test_threads_started_with_the_context_see_the_request() -> None:
    timings = RequestTimings()

    def work() -> None:
        with timing("thread"):
            pass

    async def main() -> None:
        token = _current.set(timings)
        try:
            await asyncio.to_thread(work)  # copies the context, as Starlette's pool does
        finally:
            _current.reset(token)

    asyncio.run(main())
    assert timings.spans is not None
    assert "thread" in timings.spans


def test_outside_a_request_the_span_still_times() -> None:
    assert current_timings() is None
    with timing("alone") as span:
        sum(range(100))
    assert span.duration_ms >= 0


def test_span_names_are_bounded_per_request() -> None:
    timings = RequestTimings()
    for index in range(MAX_SPANS + 10):
        timings.add_span(f"s{index}", 1)
    assert timings.spans is not None
    assert len(timings.spans) == MAX_SPANS


@pytest.mark.parametrize("name", ["", "two words", "app", "perfnb", "x" * 65, "semi;colon", 7])
def test_bad_names_are_refused_with_the_name(name: object) -> None:
    with pytest.raises(ConfigError, match="timing"):
        timing(name)  # type: ignore[arg-type]
