"""Cost of perfnb's httpx instrumentation and of its Server-Timing parser and formatter.

Added cost per request: a plain and an instrumented client call the same
in-process ``httpx.MockTransport`` in alternating rounds (the order flips every
round); the figure is the median over rounds of (instrumented - plain) CPU time
of this thread per request (CPU time, because the machine is shared: wall time
would count the other processes). Two response shapes: a body already in memory (what MockTransport
usually builds) and a streamed body (what real transports give, where
instrumentation wraps the stream to time the last byte). Target: ≤ 5 µs.

Run: ``python -m benchmarks httpx`` (``PERFNB_BENCH_QUICK=1`` for a short run).
"""

from __future__ import annotations

import asyncio
import collections
import os
import statistics
import time
from collections.abc import Callable, Iterator

import httpx

from perfnb.collect import format_server_timing, parse_server_timing
from perfnb.collect.httpx import instrument

TARGET_US = 5.0
QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
ROUNDS = 15 if QUICK else 41
PER_ROUND = 100 if QUICK else 300
HEADER = 'db;dur=1.25, app;dur=4.5;desc="handler"'


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body read from the 'network' in two chunks, as a real transport delivers it."""

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"id": 1, '
        yield b'"ok": true}'

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'{"id": 1, '
        yield b'"ok": true}'


def _handler(streamed: bool) -> Callable[[httpx.Request], httpx.Response]:
    headers = {"Server-Timing": HEADER, "Content-Type": "application/json"}
    if streamed:
        return lambda request: httpx.Response(200, headers=headers, stream=_Body())
    return lambda request: httpx.Response(200, headers=headers, content=b'{"id": 1, "ok": true}')


def _paired(plain: Callable[[], None], instrumented: Callable[[], None]) -> tuple[float, ...]:
    """(plain µs, instrumented µs, added µs) per request, medians over rounds."""
    for _ in range(PER_ROUND // 2):  # warm both up
        plain()
        instrumented()
    plain_us: list[float] = []
    inst_us: list[float] = []
    added: list[float] = []
    for round_ in range(ROUNDS):
        pair = [plain, instrumented] if round_ % 2 == 0 else [instrumented, plain]
        times = {}
        for fn in pair:
            start = time.thread_time()
            for _ in range(PER_ROUND):
                fn()
            times[fn] = (time.thread_time() - start) / PER_ROUND * 1e6
        plain_us.append(times[plain])
        inst_us.append(times[instrumented])
        added.append(times[instrumented] - times[plain])
    return statistics.median(plain_us), statistics.median(inst_us), statistics.median(added)


def _sync_case(streamed: bool) -> tuple[float, ...]:
    sink: collections.deque[object] = collections.deque(maxlen=1000)
    handler = _handler(streamed)
    plain = httpx.Client(transport=httpx.MockTransport(handler))
    inst = instrument(httpx.Client(transport=httpx.MockTransport(handler)), sink=sink.append)
    url = "http://127.0.0.1:8000/api/cards/42"
    with plain, inst:
        result = _paired(lambda: plain.get(url).close(), lambda: inst.get(url).close())
    assert len(sink) > 0
    return result


def _async_case() -> tuple[float, ...]:
    sink: collections.deque[object] = collections.deque(maxlen=1000)
    handler = _handler(True)
    loop = asyncio.new_event_loop()
    plain = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    inst = instrument(httpx.AsyncClient(transport=httpx.MockTransport(handler)), sink=sink.append)
    url = "http://127.0.0.1:8000/api/cards/42"

    def call(client: httpx.AsyncClient) -> Callable[[], None]:
        async def one() -> None:
            response = await client.get(url)
            await response.aclose()

        return lambda: loop.run_until_complete(one())

    try:
        return _paired(call(plain), call(inst))
    finally:
        loop.run_until_complete(plain.aclose())
        loop.run_until_complete(inst.aclose())
        loop.close()


def _per_call_us(fn: Callable[[], object], *, number: int = 20_000) -> float:
    samples = []
    for _ in range(9 if not QUICK else 5):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def main() -> None:
    print(f"rounds={ROUNDS} x {PER_ROUND} requests per client; thread CPU µs, medians over rounds")
    print(f"{'case':<34}{'plain µs':>10}{'instr. µs':>11}{'added µs':>10}{'ratio':>8}  target")
    cases = [
        ("sync, body in memory", lambda: _sync_case(False)),
        ("sync, streamed body", lambda: _sync_case(True)),
        ("async, streamed body", _async_case),
    ]
    for label, run in cases:
        plain, inst, added = run()
        verdict = "met" if added <= TARGET_US else "MISSED"
        print(
            f"{label:<34}{plain:>10.1f}{inst:>11.1f}{added:>10.2f}{inst / plain:>8.3f}  "
            f"≤ {TARGET_US:.0f} µs {verdict}"
        )
    print()
    metrics = parse_server_timing(HEADER)
    one = "app;dur=4.5"
    garbage = "<html>" + "x" * 200
    rows = [
        ("parse 'app;dur=4.5'", lambda: parse_server_timing(one)),
        ("parse 2 metrics, quoted desc", lambda: parse_server_timing(HEADER)),
        ("parse 200 chars of garbage", lambda: parse_server_timing(garbage)),
        ("format [('app', 4.5)]", lambda: format_server_timing([("app", 4.5)])),
        ("format 2 metrics, quoted desc", lambda: format_server_timing(metrics)),
    ]
    print(f"{'Server-Timing':<34}{'µs/call':>10}")
    for label, fn in rows:
        print(f"{label:<34}{_per_call_us(fn):>10.2f}")


if __name__ == "__main__":
    main()
