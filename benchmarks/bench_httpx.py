"""Cost of perfnb's httpx instrumentation and of its Server-Timing parser and formatter.

Added cost per request: a plain and an instrumented client call the same
in-process ``httpx.MockTransport`` in short alternating blocks (the order flips
every pair of blocks); the figure is the median over pairs of (instrumented -
plain) CPU time of this thread per request, with the half-width of its 95%
interval (CPU time, because the machine is shared: wall time would count the
other processes; short blocks, so both halves of a pair see the same load). Two
response shapes: a body already in memory (what MockTransport usually builds)
and a streamed body (what real transports give, where instrumentation wraps the
stream to time the last byte). Target: ≤ 5 µs.

The sink keeps records without reading them (a bounded deque). By default it
gets plain dicts, built when the response ends; with ``instrument(...,
lazy=True)`` it gets ``ClientRecord`` mappings built when first read (see
``perfnb.collect.clientrecord``), so the request pays only for noting what it
saw and a reader pays the building later: both are shown, and the bytecode
counts show what a sink that reads every record (``dict(record)``) pays.

Run: ``python -m benchmarks httpx`` (``PERFNB_BENCH_QUICK=1`` for a short run).
"""

from __future__ import annotations

import asyncio
import collections
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import httpx

from perfnb.collect import format_server_timing, parse_server_timing
from perfnb.collect.httpx import instrument

TARGET_US = 5.0
QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
PAIRS = 300 if QUICK else 900
BLOCK = 10
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
    """(plain µs, instrumented µs, added µs, half-width of its 95% interval) per request.

    The two clients run in short blocks of BLOCK requests, one block of each per
    pair, the order flipping every pair: neighbouring blocks see the same machine
    (other processes, CPU frequency, cache pressure), so their difference is the
    instrumentation's cost plus noise that the median over many pairs removes.
    Long rounds would let the load of a shared machine drift between the two
    halves of a pair, which dwarfs a few microseconds.
    """
    for _ in range(200):  # warm both up
        plain()
        instrumented()
    plain_us: list[float] = []
    inst_us: list[float] = []
    added: list[float] = []
    clock = time.thread_time_ns
    for pair in range(PAIRS):
        order = (plain, instrumented) if pair % 2 == 0 else (instrumented, plain)
        spent = []
        for fn in order:
            start = clock()
            for _ in range(BLOCK):
                fn()
            spent.append((clock() - start) / BLOCK / 1e3)
        p, i = (spent[0], spent[1]) if pair % 2 == 0 else (spent[1], spent[0])
        plain_us.append(p)
        inst_us.append(i)
        added.append(i - p)
    added.sort()
    # Distribution-free 95% interval of the median: order statistics n/2 ± 0.98 sqrt(n).
    reach = max(1, round(0.98 * len(added) ** 0.5))
    middle = len(added) // 2
    half_width = (added[min(middle + reach, len(added) - 1)] - added[max(middle - reach, 0)]) / 2
    return (
        statistics.median(plain_us),
        statistics.median(inst_us),
        statistics.median(added),
        half_width,
    )


def _sync_case(streamed: bool, *, reading: bool = False, lazy: bool = False) -> tuple[float, ...]:
    sink: collections.deque[object] = collections.deque(maxlen=1000)
    handler = _handler(streamed)
    plain = httpx.Client(transport=httpx.MockTransport(handler))

    def read_each(record: Any) -> None:
        sink.append(dict(record))

    inst = instrument(
        httpx.Client(transport=httpx.MockTransport(handler)),
        sink=read_each if reading else sink.append,
        lazy=lazy,
    )
    url = "http://127.0.0.1:8000/api/cards/42"
    with plain, inst:
        result = _paired(lambda: plain.get(url).close(), lambda: inst.get(url).close())
    assert len(sink) > 0
    return result


def _async_case(*, lazy: bool = False) -> tuple[float, ...]:
    sink: collections.deque[object] = collections.deque(maxlen=1000)
    handler = _handler(True)
    loop = asyncio.new_event_loop()
    plain = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    inst = instrument(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)), sink=sink.append, lazy=lazy
    )
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


def _instructions(streamed: bool, reading: bool, lazy: bool, n: int = 100) -> tuple[float, float]:
    """Bytecode instructions per request, plain and instrumented (``sys.settrace``)."""
    held: collections.deque[object] = collections.deque(maxlen=1000)
    handler = _handler(streamed)
    url = "http://127.0.0.1:8000/api/cards/42"

    def read_each(record: Any) -> None:
        held.append(dict(record))

    out = []
    for client in (
        httpx.Client(transport=httpx.MockTransport(handler)),
        instrument(
            httpx.Client(transport=httpx.MockTransport(handler)),
            sink=read_each if reading else held.append,
            lazy=lazy,
        ),
    ):
        with client:
            for _ in range(50):
                client.get(url).close()
            count = 0

            def local(frame: FrameType, event: str, arg: object) -> Any:
                nonlocal count
                if event == "opcode":
                    count += 1
                return local

            def start(frame: FrameType, event: str, arg: object) -> Any:
                frame.f_trace_opcodes = True
                return local

            sys.settrace(start)
            try:
                for _ in range(n):
                    client.get(url).close()
            finally:
                sys.settrace(None)
            out.append(count / n)
    return out[0], out[1]


def _per_call_us(fn: Callable[[], object], *, number: int = 20_000) -> float:
    samples = []
    for _ in range(9 if not QUICK else 5):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def main() -> None:
    print(
        f"{PAIRS} pairs of {BLOCK}-request blocks, alternating; thread CPU µs per request, "
        "medians over pairs (± half-width of the 95% interval of the added median)"
    )
    print(
        f"{'case':<26}{'plain µs':>10}{'instr. µs':>11}{'added µs':>10}{'± µs':>7}{'ratio':>8}"
        "  target"
    )
    cases: list[tuple[str, Callable[[], tuple[float, ...]]]] = [
        ("sync, body in memory", lambda: _sync_case(False)),
        ("sync, streamed body", lambda: _sync_case(True)),
        ("async, streamed body", _async_case),
        ("lazy: sync, in memory", lambda: _sync_case(False, lazy=True)),
        ("lazy: sync, streamed", lambda: _sync_case(True, lazy=True)),
        ("lazy: async, streamed", lambda: _async_case(lazy=True)),
    ]
    for label, run in cases:
        plain, inst, added, spread = run()
        verdict = f"≤ {TARGET_US:.0f} µs " + ("met" if added <= TARGET_US else "MISSED")
        print(
            f"{label:<26}{plain:>10.1f}{inst:>11.1f}{added:>10.2f}{spread:>7.2f}"
            f"{inst / plain:>8.3f}  {verdict}"
        )
    print()
    print("bytecode instructions per request (deterministic; C calls count as one):")
    for label, streamed, reading, lazy in (
        ("sync, body in memory", False, False, False),
        ("sync, streamed body", True, False, False),
        ("sync, in memory, read", False, True, False),
        ("lazy: sync, in memory", False, False, True),
        ("lazy: sync, streamed", True, False, True),
        ("lazy: in memory, read", False, True, True),
    ):
        plain_ops, inst_ops = _instructions(streamed, reading, lazy)
        print(f"  {label:<24} plain {plain_ops:.0f}, added {inst_ops - plain_ops:.0f}")
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
