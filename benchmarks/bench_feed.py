"""Feed benchmark: the cost of ``Monitor.record`` and of moving records through the feed.

In one process, side by side:

* ``record`` — CPU ns per :meth:`Monitor.record` call, against ``list.append`` of
  the same record (the floor), with monitoring on, with sampling at 0.5, and with
  monitoring off (target ≤ 1 µs each); and the call that wakes a waiting feed
  stream, which happens once per batch sent, not once per record.
* ``feed`` — records per CPU-second through the server side of the feed (ring
  read and SSE encoding, :class:`perfnb.server.sse.Cursor`) and through the
  client side (:class:`perfnb.feedclient.SSEParser` and schema validation).

Rounds interleave the contenders; figures are medians over rounds.

    python -m benchmarks.bench_feed           # or: python -m benchmarks feed
    PERFNB_BENCH_SCALE=0.2 python -m benchmarks.bench_feed   # quicker, noisier
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from perfnb.feedclient import SSEParser
from perfnb.schema import Record, record_from_json
from perfnb.server.monitor import FeedLimits, Monitor
from perfnb.server.sse import Cursor, ThreadWaiter

SCALE = float(os.environ.get("PERFNB_BENCH_SCALE", "1"))
TARGET_RECORD_NS = 1000.0


def _record() -> Record:
    return {
        "time": datetime.now(UTC),
        "source": "server",
        "kind": "http",
        "service": "bench",
        "route": "/api/cards/{card_id}",
        "method": "GET",
        "status": 200,
        "duration_ms": 1.25,
        "ttfb_ms": 1.0,
        "request_bytes": 0,
        "response_bytes": 512,
        "client": "0123456789abcdef",
    }


def _contenders() -> dict[str, Callable[[Record], None]]:
    floor: list[Record] = []
    on = Monitor(buffer_size=100_000)
    waiting = Monitor(buffer_size=100_000)
    waiter = ThreadWaiter()
    waiting._add_waiter(waiter)
    sampled = Monitor(buffer_size=100_000)
    sampled.configure(sample=0.5)
    off = Monitor(buffer_size=100_000)
    off.configure(enabled=False)

    def rearm(rec: Record) -> None:
        waiter.armed = True  # every call takes the wake-up path
        waiting.record(rec)

    return {
        "list.append": floor.append,
        "record (on)": on.record,
        "record + wake a stream": rearm,
        "record (sample 0.5)": sampled.record,
        "record (off)": off.record,
    }


def bench_record(rounds: int, batch: int) -> dict[str, float]:
    contenders = _contenders()
    rec = _record()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        order = list(contenders.items())
        random.shuffle(order)
        for name, call in order:
            start = time.thread_time_ns()
            for _ in range(batch):
                call(rec)
            samples[name].append((time.thread_time_ns() - start) / batch)
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_feed(rounds: int, count: int) -> tuple[float, float]:
    """Records per CPU-second: server side (ring → SSE bytes), client side (bytes → records)."""
    server: list[float] = []
    client: list[float] = []
    for _ in range(rounds):
        monitor = Monitor(buffer_size=count, limits=FeedLimits(batch_records=1000))
        rec = _record()
        for _ in range(count):
            monitor.record(rec)
        cursor = Cursor(monitor, last_event_id=None, since="oldest")
        start = time.thread_time_ns()
        chunks = []
        while chunk := cursor.pull():
            chunks.append(chunk)
        server.append(count / ((time.thread_time_ns() - start) / 1e9))
        start = time.thread_time_ns()
        parser = SSEParser()
        got = 0
        for chunk in chunks:
            for event in parser.feed(chunk):
                for item in json.loads(event.data)["records"]:
                    record_from_json(item)
                    got += 1
        client.append(got / ((time.thread_time_ns() - start) / 1e9))
    return statistics.median(server), statistics.median(client)


def main() -> None:
    rounds = max(3, int(15 * SCALE))
    results = bench_record(rounds, batch=max(2000, int(50_000 * SCALE)))
    floor = results["list.append"]
    print(f"Monitor.record, CPU ns per call (median of {rounds} rounds)")
    print(f"  {'contender':<26}{'ns/call':>10}{'minus floor':>14}")
    for name, ns in results.items():
        print(f"  {name:<26}{ns:>10.0f}{ns - floor:>14.0f}")
    worst = max(v for k, v in results.items() if k.startswith("record ("))
    met = "met" if worst <= TARGET_RECORD_NS else "NOT met"
    print(f"  target ≤ {TARGET_RECORD_NS:.0f} ns per record(): {met} (worst {worst:.0f} ns)")
    print("  (the wake-up happens once per batch a stream sends, not per record)")
    server, client = bench_feed(max(3, int(5 * SCALE)), count=max(5_000, int(50_000 * SCALE)))
    print("Feed throughput, records per CPU-second (median)")
    print(f"  server: ring read + SSE encoding   {server:>12,.0f}")
    print(f"  client: SSE parse + schema check    {client:>12,.0f}")


if __name__ == "__main__":
    main()
