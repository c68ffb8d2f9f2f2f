"""What the fleet directory costs a worker process, and how fast its feed reads.

Two copies of one Starlette app under :class:`perfnb.server.PerfnbMiddleware`,
driven directly through ASGI (no server, no network), in alternating batches
(ABBA): one with a single process's monitor, one with a fleet directory. For each
batch two CPU figures per request:

* the request path: this thread's CPU (``thread_time``), what a request waits for;
* the whole process: all threads (``process_time``), including the journal
  thread's writing of the batch's records (each fleet batch ends with a flush, so
  its journaling is counted in it).

The single-process monitor is also measured with a feed consumer reading every
record (building and SSE-encoding it), the work a recorder makes an app do in
either mode. Then the fleet feed's own pace: records per CPU-second that one
answering process streams from four journals (the recorder keeping up with
4 workers × 2,000 requests/s needs 8,000).

Run: ``python -m benchmarks fleet``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks.bench_middleware import run_batch

BATCH = 4000
ROUNDS = 8


def _app(fleet: str | None) -> Any:
    from perfnb.server import Monitor, PerfnbMiddleware

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    monitor = Monitor(service="bench", fleet=fleet, buffer_size=200_000)
    return PerfnbMiddleware(
        Starlette(routes=[Route("/hello/{n}", hello)]), service="bench", monitor=monitor
    )


async def _batch(app: Any, n: int) -> None:
    for i in range(n):
        await run_batch(app, f"/hello/{i}", 1)


def _timed(app: Any, *, read: bool) -> tuple[float, float]:
    """(request-path µs, whole-process µs) per request for one batch."""
    from perfnb.server.sse import Cursor

    monitor = app.monitor
    cursor = Cursor(monitor, last_event_id=None, since="now") if read else None
    t0, p0 = time.thread_time(), time.process_time()
    asyncio.run(_batch(app, BATCH))
    t1 = time.thread_time()
    if monitor.fleet is not None:
        monitor.fleet.flush()
    if cursor is not None:
        while cursor.pull():
            pass
    p1 = time.process_time()
    return (t1 - t0) / BATCH * 1e6, (p1 - p0) / BATCH * 1e6


def _feed_pace(folder: str, per_journal: int = 25_000) -> float:
    """Records per CPU-second the fleet feed streams from four journals."""
    from perfnb.server import Monitor
    from perfnb.server.fleetfeed import FleetCursor

    now = time.time()
    monitors = []
    for _ in range(4):
        m = Monitor(service="bench", fleet=folder, buffer_size=per_journal + 10)
        from datetime import UTC, datetime

        for i in range(per_journal):
            m.record(
                {
                    "time": datetime.fromtimestamp(now, UTC),
                    "source": "server",
                    "kind": "http",
                    "service": "bench",
                    "route": "/hello/{n}",
                    "method": "GET",
                    "status": 200,
                    "duration_ms": 0.5 + i % 7,
                }
            )
        assert m.fleet is not None
        m.fleet.flush()
        m.fleet.housekeep_every = 1e9
        monitors.append(m)
    reader = monitors[0]
    cursor = FleetCursor(reader, last_event_id=None, since="oldest")
    c0 = time.process_time()
    cursor.opening()
    sent = 0
    while chunk := cursor.pull():
        sent += len(chunk) > 0
    cpu = time.process_time() - c0
    for m in monitors:
        m.close()
    return cursor.sent_records / cpu


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="perfnb-bench-fleet-") as folder:
        one, fleet = _app(None), _app(folder)
        runs: dict[str, list[tuple[float, float]]] = {"one process": [], "fleet": []}
        read: list[tuple[float, float]] = []
        _timed(one, read=False)  # warm both
        _timed(fleet, read=False)
        for r in range(ROUNDS):
            order = [("one process", one), ("fleet", fleet)]
            if r % 2:
                order.reverse()
            for name, app in order:
                runs[name].append(_timed(app, read=False))
            read.append(_timed(one, read=True))
        print(f"{BATCH} requests per batch, {ROUNDS} ABBA rounds; CPU µs per request (median)")
        print(f"{'monitor':<28} {'request path':>13} {'whole process':>14}")
        rows = {**runs, "one process + feed reader": read}
        med = {
            n: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
            for n, v in rows.items()
        }
        for name, (path, whole) in med.items():
            print(f"{name:<28} {path:>13.2f} {whole:>14.2f}")
        base, fl = med["one process"], med["fleet"]
        ratio = fl[0] / base[0]
        print(
            f"fleet vs one process, request path: {ratio:.3f}x "
            f"(target within 10%: {'met' if ratio <= 1.10 else 'NOT met'}); whole process "
            f"{fl[1] / base[1]:.2f}x, or {fl[1] / med['one process + feed reader'][1]:.2f}x "
            "a single process whose feed is read"
        )
    with tempfile.TemporaryDirectory(prefix="perfnb-bench-fleet-") as folder:
        pace = _feed_pace(folder)
        print(
            f"fleet feed: {pace:,.0f} records per CPU-second from 4 journals "
            f"(4 workers x 2,000 req/s need 8,000: {'met' if pace >= 8000 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
