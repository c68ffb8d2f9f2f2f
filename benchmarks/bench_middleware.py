"""Middleware benchmark: CPU µs each monitoring middleware adds per request.

The same Starlette app (a trivial route and a route that burns ~1 ms of CPU) is
driven directly through ASGI — a synthetic scope, a ``receive`` that hands over
an empty body, a ``send`` that drops the messages — so no server and no network
enter the figures. Contenders, each on its own copy of the app:

* ``bare``        no middleware;
* ``perfnb``      :class:`perfnb.server.PerfnbMiddleware`, full recording (ring
  buffer, Server-Timing, process samples, overhead records, a sink);
* ``prometheus``  prometheus-fastapi-instrumentator, default metrics, own registry;
* ``otel``        opentelemetry-instrumentation-asgi with an SDK ``MeterProvider``
  and an ``InMemoryMetricReader`` (metrics; tracing left at the no-op default).

perfnb writes its records in batches, right after the event loop's current turn
(or every 256 requests): the CPU time of every batch is counted, because each
round is timed around ``run_until_complete``. Back-to-back requests batch up;
the ``trivial*`` row yields to the loop after every request, so each record is
written on its own — the cost at low load.

Rounds interleave the contenders in a shuffled order; each round runs a batch of
requests per contender and takes the CPU time of the batch (``thread_time``). The
added cost is the median over rounds of (contender - bare) per request, so drift
on a shared machine hits both sides of each difference.

    python -m benchmarks.bench_middleware           # or: python -m benchmarks middleware
    PERFNB_BENCH_SCALE=0.2 python -m benchmarks.bench_middleware   # quicker, noisier
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from perfnb.server import PerfnbMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

SCALE = float(os.environ.get("PERFNB_BENCH_SCALE", "1"))
TARGET_ADDED_US = 8.0
TARGET_BUSY_PCT = 1.0
TARGET_VS_PROMETHEUS = 10.0
TARGET_VS_OTEL = 25.0


def calibrate_busy(target_ns: int = 1_000_000) -> int:
    """Loop iterations that burn about ``target_ns`` of CPU (fixed work, not a timer)."""
    n = 10_000
    while True:
        start = time.thread_time_ns()
        _spin(n)
        spent = time.thread_time_ns() - start
        if spent > 20_000_000:
            return max(1, int(n * target_ns / spent))
        n *= 2


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def make_app(busy_iterations: int) -> Starlette:
    async def trivial(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def busy(request: Request) -> Response:
        _spin(busy_iterations)
        return PlainTextResponse("done")

    return Starlette(routes=[Route("/trivial", trivial), Route("/busy/{item_id}", busy)])


def contenders(busy_iterations: int) -> dict[str, ASGIApp]:
    """Each contender wraps its own copy of the app."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    sink: list[object] = []

    def keep_last(record: object) -> None:
        # A sink that does the least a real one does (hold the record).
        sink.append(record)
        if len(sink) > 10_000:
            sink.clear()

    apps: dict[str, ASGIApp] = {"bare": make_app(busy_iterations)}
    apps["perfnb"] = PerfnbMiddleware(make_app(busy_iterations), service="bench", sink=keep_last)
    prom_app = make_app(busy_iterations)
    Instrumentator(registry=CollectorRegistry()).instrument(prom_app)
    apps["prometheus"] = prom_app
    reader = InMemoryMetricReader()
    apps["otel"] = OpenTelemetryMiddleware(
        make_app(busy_iterations), meter_provider=MeterProvider(metric_readers=[reader])
    )
    return apps


HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]


def scope_for(path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(HEADERS),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


async def run_batch(app: ASGIApp, path: str, n: int, *, turn: bool = False) -> None:
    """``n`` sequential requests to ``path``; with ``turn``, yield to the loop after each."""
    template = scope_for(path)
    for _ in range(n):
        scope = dict(template)
        scope["headers"] = list(HEADERS)
        await app(scope, _receive, _send)
        if turn:
            await asyncio.sleep(0)


def timed_batch(
    loop: asyncio.AbstractEventLoop, app: ASGIApp, path: str, n: int, *, turn: bool = False
) -> float:
    """CPU ns per request, including work the middleware left to the loop (record batches)."""
    start = time.thread_time_ns()
    loop.run_until_complete(run_batch(app, path, n, turn=turn))
    return (time.thread_time_ns() - start) / n


def measure(
    apps: dict[str, ASGIApp], path: str, *, rounds: int, batch: int, turn: bool = False
) -> dict[str, list[float]]:
    """Per contender, the ns-per-request of each round (rounds interleaved, shuffled)."""
    loop = asyncio.new_event_loop()
    try:
        names = list(apps)
        for name in names:  # warm up caches, routes, first samples
            timed_batch(loop, apps[name], path, max(20, batch // 5), turn=turn)
        out: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            random.shuffle(names)
            for name in names:
                out[name].append(timed_batch(loop, apps[name], path, batch, turn=turn))
        return out
    finally:
        loop.close()


def added_us(per_round: dict[str, list[float]], name: str) -> float:
    """Median over rounds of (contender - bare), in µs per request."""
    pairs = zip(per_round[name], per_round["bare"], strict=True)
    return statistics.median(a - b for a, b in pairs) / 1000.0


def _mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> None:
    busy_iterations = calibrate_busy()
    apps = contenders(busy_iterations)
    rounds = max(5, int(15 * SCALE))
    results: dict[str, dict[str, float]] = {}
    bare_us: dict[str, float] = {}
    for label, path, batch, turn in (
        ("trivial", "/trivial", max(200, int(2000 * SCALE)), False),
        ("1 ms", "/busy/42", max(50, int(200 * SCALE)), False),
        ("trivial*", "/trivial", max(200, int(800 * SCALE)), True),
    ):
        per_round = measure(apps, path, rounds=rounds, batch=batch, turn=turn)
        bare_us[label] = statistics.median(per_round["bare"]) / 1000.0
        results[label] = {name: added_us(per_round, name) for name in apps if name != "bare"}

    print(f"CPU µs per request, median of {rounds} interleaved rounds (in-process ASGI)")
    print("trivial*: the loop turns after every request, so perfnb writes each record alone")
    print(f"{'route':<9}{'bare':>9}{'+perfnb':>10}{'+prometheus':>13}{'+otel':>9}")
    for label, added in results.items():
        print(
            f"{label:<9}{bare_us[label]:>9.1f}{added['perfnb']:>10.2f}"
            f"{added['prometheus']:>13.1f}{added['otel']:>9.1f}"
        )
    trivial = results["trivial"]
    perfnb_us = max(trivial["perfnb"], 0.01)
    busy_pct = 100.0 * results["1 ms"]["perfnb"] / bare_us["1 ms"]
    vs_prom = trivial["prometheus"] / perfnb_us
    vs_otel = trivial["otel"] / perfnb_us
    print()
    print(f"{'target':<44}{'measured':>12}  met")
    rows = [
        (
            f"perfnb added, trivial route ≤ {TARGET_ADDED_US:g} µs",
            f"{trivial['perfnb']:.2f} µs",
            trivial["perfnb"] <= TARGET_ADDED_US,
        ),
        (
            f"perfnb added, 1 ms route ≤ {TARGET_BUSY_PCT:g} %",
            f"{busy_pct:.2f} %",
            busy_pct <= TARGET_BUSY_PCT,
        ),
        (
            f"cheaper than Prometheus ≥ {TARGET_VS_PROMETHEUS:g}×",
            f"{vs_prom:.1f}×",
            vs_prom >= TARGET_VS_PROMETHEUS,
        ),
        (
            f"cheaper than OpenTelemetry ≥ {TARGET_VS_OTEL:g}×",
            f"{vs_otel:.1f}×",
            vs_otel >= TARGET_VS_OTEL,
        ),
    ]
    for text, value, ok in rows:
        print(f"{text:<44}{value:>12}  {_mark(ok)}")


if __name__ == "__main__":
    main()
