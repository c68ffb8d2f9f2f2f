"""Cost of perfnb's httpx instrumentation and of its Server-Timing parser and formatter.

Added cost per request: a plain and an instrumented client call the same
in-process ``httpx.MockTransport`` one request each in turn, the order flipping
every pair (ABBA), each request timed alone in CPU time of this thread (the
machine is shared: wall time would count other processes, and interleaving
single requests lets both halves of a pair see the same machine). The figure is
the median over pairs of (instrumented - plain), with the half-width of its
distribution-free 95% interval. A "plain vs plain" row runs the same method on
two plain clients: its figure is the method's own bias (it should be ~0).

A median leaves out rare, large costs: garbage collections. The "GC µs" column
is the collection time per request (timed with ``gc.callbacks``) of the
instrumented run minus that of the plain-vs-plain run; the verdict is on the
sum of both. Target: ≤ 5 µs.

The sink keeps records without reading them (a bounded deque), as a ring or a
sampler does. "default" rows use ``instrument()`` as it comes: the sink gets
plain dicts, built when the response ends. "lazy" rows use ``instrument(...,
lazy=True)``: the sink gets ``ClientRecord`` mappings whose fields are worked
out when first read (see ``perfnb.collect.clientrecord``), so the request pays
only for noting what it saw. The target applies to both: what the request pays
for being recorded. Two more kinds of rows show what a reader then pays: "read"
rows hand each lazy record to a sink that reads every field (``dict(record)``),
and "stream" rows hand records to a live ``Stream.push`` (which validates each
against the schema), as ClientRecords and (``stream dicts``) as dicts.

Shapes: a body already in memory (what MockTransport usually builds) and a
streamed body (what real transports give, where instrumentation wraps the
stream to time the last byte), each for ``httpx.Client`` and ``httpx.AsyncClient``.

Run: ``python -m benchmarks httpx`` (``PERFNB_BENCH_QUICK=1`` for a short run).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

import httpx

from perfnb.collect import format_server_timing, parse_server_timing
from perfnb.collect.httpx import instrument
from perfnb.stream import Stream

TARGET_US = 5.0
QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
PAIRS = 2_000 if QUICK else 8_000
WARMUP = 300
HEADER = 'db;dur=1.25, app;dur=4.5;desc="handler"'
URL = "http://127.0.0.1:8000/api/cards/42"
_clock = time.thread_time_ns


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body read from the 'network' in two chunks, as a real transport delivers it."""

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"id": 1, '
        yield b'"ok": true}'

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"id": 1, '
        yield b'"ok": true}'


def _handler(streamed: bool) -> Callable[[httpx.Request], httpx.Response]:
    headers = {"Server-Timing": HEADER, "Content-Type": "application/json"}
    if streamed:
        return lambda request: httpx.Response(200, headers=headers, stream=_Body())
    return lambda request: httpx.Response(200, headers=headers, content=b'{"id": 1, "ok": true}')


class _GCTimer:
    """Garbage collections while installed: how many of each generation, their CPU time."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.ns = [0, 0, 0]
        self._started = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = _clock()
        else:
            self.count[info["generation"]] += 1
            self.ns[info["generation"]] += _clock() - self._started

    def __enter__(self) -> _GCTimer:
        # Everything alive now (modules, the clients) is frozen out of the
        # collector's sight: the full collections that remain traverse only
        # what the requests keep alive, instead of the whole interpreter at
        # random moments, which would make this column mostly noise.
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self)
        return self

    def __exit__(self, *args: object) -> None:
        gc.callbacks.remove(self)
        gc.unfreeze()


class Result:
    """One row: medians per request (µs), the added median, its interval, GC per request."""

    def __init__(self, plain: list[int], inst: list[int], gc: _GCTimer) -> None:
        added = sorted(i - p for p, i in zip(plain, inst, strict=True))
        n = len(added)
        # Distribution-free 95% interval of the median: order statistics n/2 ± 0.98 sqrt(n).
        reach = max(1, round(0.98 * n**0.5))
        low, high = added[max(n // 2 - reach, 0)], added[min(n // 2 + reach, n - 1)]
        self.plain_us = statistics.median(plain) / 1e3
        self.inst_us = statistics.median(inst) / 1e3
        self.added_us = statistics.median(added) / 1e3
        self.half_width_us = (high - low) / 2e3
        #: Collections of each generation per pair (one request of each client) and
        #: the mean CPU µs of one collection of each generation in this run.
        self.gc_per_pair = [count / n for count in gc.count]
        self.gc_mean_us = [
            ns / count / 1e3 if count else 0.0 for ns, count in zip(gc.ns, gc.count, strict=True)
        ]

    def gc_added_us(self, null: Result) -> float:
        """Collection time per instrumented request beyond the plain-vs-plain run.

        How many more collections of each generation the run had per request is
        what instrumentation changes (and it is the same on a busy or an idle
        machine); it is priced at this run's mean cost of a collection. The time
        of each run's collections alone would be mostly the machine's speed at
        the time: the two runs are not paired.
        """
        return sum(
            (mine - theirs) * mean
            for mine, theirs, mean in zip(
                self.gc_per_pair, null.gc_per_pair, self.gc_mean_us, strict=True
            )
        )


def _pairs_sync(plain: Callable[[], object], inst: Callable[[], object]) -> Result:
    for _ in range(WARMUP):
        plain()
        inst()
    p_ns: list[int] = []
    i_ns: list[int] = []
    with _GCTimer() as gc_time:
        for pair in range(PAIRS):
            first, second = (plain, inst) if pair & 1 == 0 else (inst, plain)
            a = _clock()
            first()
            b = _clock()
            second()
            _keep(pair, b - a, _clock() - b, p_ns, i_ns)
    return Result(p_ns, i_ns, gc_time)


def _keep(pair: int, first_ns: int, second_ns: int, p_ns: list[int], i_ns: list[int]) -> None:
    """File a pair's two timings: even pairs ran plain first, odd ones instrumented first."""
    if pair & 1 == 0:
        p_ns.append(first_ns)
        i_ns.append(second_ns)
    else:
        i_ns.append(first_ns)
        p_ns.append(second_ns)


async def _pairs_async(
    plain: Callable[[], Awaitable[object]], inst: Callable[[], Awaitable[object]]
) -> Result:
    # One coroutine runs every pair: MockTransport never suspends, so each await
    # runs straight through and thread CPU time is the request's own.
    for _ in range(WARMUP):
        await plain()
        await inst()
    p_ns: list[int] = []
    i_ns: list[int] = []
    with _GCTimer() as gc_time:
        for pair in range(PAIRS):
            first, second = (plain, inst) if pair & 1 == 0 else (inst, plain)
            a = _clock()
            await first()
            b = _clock()
            await second()
            _keep(pair, b - a, _clock() - b, p_ns, i_ns)
    return Result(p_ns, i_ns, gc_time)


def _sink(mode: str) -> Callable[[Any], None]:
    kept: collections.deque[object] = collections.deque(maxlen=1000)
    if mode == "read":
        return lambda record: kept.append(dict(record))
    if mode.startswith("stream"):
        return Stream(max_records=1000).push
    return kept.append


def _lazy(mode: str) -> bool:
    return not mode.endswith("dicts")


def _sync_case(streamed: bool, mode: str) -> Result:
    """``mode``: null (two plain clients), keep, read or dicts (see the module's notes)."""
    handler = _handler(streamed)
    plain = httpx.Client(transport=httpx.MockTransport(handler))
    other = httpx.Client(transport=httpx.MockTransport(handler))
    if mode != "null":
        instrument(other, sink=_sink(mode), lazy=_lazy(mode))
    with plain, other:
        return _pairs_sync(lambda: plain.get(URL).close(), lambda: other.get(URL).close())


def _async_case(streamed: bool, mode: str) -> Result:
    handler = _handler(streamed)

    async def main() -> Result:
        plain = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        other = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        if mode != "null":
            instrument(other, sink=_sink(mode), lazy=_lazy(mode))

        def one(client: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                response = await client.get(URL)
                await response.aclose()

            return call

        async with plain, other:
            return await _pairs_async(one(plain), one(other))

    return asyncio.run(main())


def _instructions(streamed: bool, mode: str, n: int = 100) -> tuple[float, float]:
    """Bytecode instructions per request, plain and instrumented (``sys.settrace``)."""
    handler = _handler(streamed)
    out = []
    for client in (
        httpx.Client(transport=httpx.MockTransport(handler)),
        instrument(
            httpx.Client(transport=httpx.MockTransport(handler)),
            sink=_sink(mode),
            lazy=_lazy(mode),
        ),
    ):
        with client:
            for _ in range(50):
                client.get(URL).close()
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
                    client.get(URL).close()
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
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"load average {load} on {os.cpu_count()} CPUs: every figure scales with the "
        "machine's speed of the moment (see plain µs)"
    )
    print(
        f"{PAIRS} ABBA pairs of single requests per row; thread CPU µs per request; "
        "medians over pairs (± half-width of the 95% interval of the added median); "
        "GC µs: collection time per request beyond the plain-vs-plain run"
    )
    print(
        f"{'case':<30}{'plain µs':>9}{'instr. µs':>10}{'added µs':>10}{'± µs':>7}"
        f"{'GC µs':>7}{'total':>7}  target"
    )
    shapes = [
        ("sync, in memory", False, False),
        ("sync, streamed", False, True),
        ("async, in memory", True, False),
        ("async, streamed", True, True),
    ]
    nulls: dict[bool, Result] = {}
    for is_async in (False, True):
        null = _async_case(False, "null") if is_async else _sync_case(False, "null")
        nulls[is_async] = null
        label = f"plain vs plain ({'async' if is_async else 'sync'})"
        print(
            f"{label:<30}{null.plain_us:>9.1f}{null.inst_us:>10.1f}{null.added_us:>10.2f}"
            f"{null.half_width_us:>7.2f}{0.0:>7.2f}{null.added_us:>7.2f}  (method's bias)"
        )
    gc_rows: list[str] = []
    modes = (
        ("dicts", "default: "),
        ("keep", "lazy: "),
        ("read", "read: "),
        ("stream", "stream: "),
        ("stream-dicts", "stream dicts: "),
    )
    for mode, prefix in modes:
        for name, is_async, streamed in shapes:
            if mode not in ("keep", "dicts") and streamed:
                continue  # the reading costs the same for either shape
            if mode.startswith("stream") and is_async:
                continue
            run = _async_case if is_async else _sync_case
            result = run(streamed, mode)
            gc_added = result.gc_added_us(nulls[is_async])
            total = result.added_us + gc_added
            verdict = f"≤ {TARGET_US:.0f} µs " + ("met" if total <= TARGET_US else "MISSED")
            if mode not in ("keep", "dicts"):
                verdict = "(and the reading)"
            label = prefix + name
            print(
                f"{label:<30}{result.plain_us:>9.1f}{result.inst_us:>10.1f}"
                f"{result.added_us:>10.2f}{result.half_width_us:>7.2f}{gc_added:>7.2f}"
                f"{total:>7.2f}  {verdict}",
                flush=True,
            )
            extra = [
                (mine - theirs) * 1000
                for mine, theirs in zip(
                    result.gc_per_pair, nulls[is_async].gc_per_pair, strict=True
                )
            ]
            gc_rows.append(
                f"  {label:<28}"
                + "".join(f"{x:>+8.1f}" for x in extra)
                + "".join(f"{m:>9.0f}" for m in result.gc_mean_us)
            )
    print()
    print(
        "collections per 1000 requests beyond plain vs plain (gen 0, 1, 2), "
        "and their mean µs in the run:"
    )
    print("\n".join(gc_rows))
    print()
    print("bytecode instructions per request, sync (deterministic; C calls count as one):")
    for label, streamed, mode in (
        ("default: in memory", False, "dicts"),
        ("default: streamed", True, "dicts"),
        ("lazy: in memory", False, "keep"),
        ("lazy: streamed", True, "keep"),
        ("read: in memory", False, "read"),
    ):
        plain_ops, inst_ops = _instructions(streamed, mode)
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
