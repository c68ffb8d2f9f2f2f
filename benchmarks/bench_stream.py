"""Cost of the live stream: push (with and without validation) and frame().

frame() converts records to columns once, on the first frame that sees them;
a live view calling it twice a second pays only for what arrived in between.
The table shows the first frame over N records, a repeated frame with nothing
new, and a frame after 1% new records.

Run: ``python -m benchmarks stream`` (``PERFNB_BENCH_QUICK=1`` for a short run).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from perfnb.schema import Record
from perfnb.stream import Stream

QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
SIZES = (10_000, 100_000) if QUICK else (10_000, 100_000, 200_000)


def _records(n: int) -> list[Record]:
    rng = random.Random(1)
    now = datetime.now(UTC)
    routes = [f"/api/r{i}/{{id}}" for i in range(30)]
    out: list[Record] = []
    for i in range(n):
        record: Record = {
            "time": now - timedelta(microseconds=(n - i) * 100),
            "source": "client",
            "kind": "http",
            "service": "demo",
            "route": rng.choice(routes),
            "method": "GET",
            "status": 200 if i % 50 else 500,
            "duration_ms": rng.random() * 20,
            "ttfb_ms": rng.random() * 5,
            "request_bytes": 0,
            "response_bytes": 512,
            "server_ms": rng.random() * 10,
            "app_ms": rng.random() * 8,
        }
        if i % 10 == 0:
            record["tags"] = {"region": "eu"}
        out.append(record)
    return out


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    records = _records(max(SIZES))
    print(f"{'push, µs per record':<36}{'median':>10}")
    for validate in (True, False):
        samples = []
        for _ in range(5):
            stream = Stream(validate=validate)
            chunk = records[:20_000]
            samples.append(_seconds(lambda s=stream, c=chunk: [s.push(r) for r in c]) / len(chunk))
        label = f"push(validate={validate})"
        print(f"{label:<36}{statistics.median(samples) * 1e6:>10.2f}")
    samples = []
    for _ in range(5):
        stream = Stream()
        samples.append(_seconds(lambda s=stream: s.extend(records[:20_000])) / 20_000)
    print(f"{'extend(20k), per record':<36}{statistics.median(samples) * 1e6:>10.2f}")
    print()
    # CPU time of the process (pyarrow converts on several threads) beside wall time:
    # on a shared machine the wall time also counts the other processes.
    print(
        f"{'frame(), ms':<12}{'first':>10}{'first CPU':>11}{'again':>10}{'+1% new':>10}"
        f"{'rows/s first':>14}"
    )
    for size in SIZES:
        stream = Stream(max_records=size, validate=False)
        stream.extend(records[:size])
        cpu = time.process_time()
        first = _seconds(stream.frame)
        cpu = time.process_time() - cpu
        again = statistics.median(_seconds(stream.frame) for _ in range(5))
        incremental = []
        extra = records[: size // 100]
        for _ in range(5):
            stream.extend(extra)
            incremental.append(_seconds(stream.frame))
        assert len(stream.frame()) == size
        print(
            f"{size:<12,}{first * 1e3:>10.1f}{cpu * 1e3:>11.1f}{again * 1e3:>10.1f}"
            f"{statistics.median(incremental) * 1e3:>10.1f}{size / first:>14,.0f}"
        )


if __name__ == "__main__":
    main()
