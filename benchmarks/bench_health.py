"""Cost of the health engine per record, and that it stays flat as the data grows.

The engine is meant to be O(1)-ish per record: the table shows CPU µs per
record (median of 5 runs) through ``HealthEngine.replay`` for a realistic mix (requests
on 30 routes, 2 % of them polls from many clients, a process sample a second),
at growing record counts, route counts and polling-client counts. The ratio
column compares each row with the first: near 1 means the cost does not grow
with the data. The target is ≥ 100,000 records/s on one core (what a busy app's
feed delivers), i.e. ≤ 10 µs per record.

Run: ``python -m benchmarks health`` (``PERFNB_BENCH_QUICK=1`` for a short run).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from perfnb.analysis.health import HealthEngine
from perfnb.schema import Record

QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
RUNS = 3 if QUICK else 5
TARGET_US = 10.0


def _records(n: int, *, routes: int, clients: int, per_second: int = 2000) -> list[Record]:
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    names = [f"/api/r{i}/{{id}}" for i in range(routes)]
    out: list[Record] = []
    for i in range(n):
        t = start + timedelta(seconds=i / per_second)
        if i % per_second == 0:
            out.append(
                {
                    "time": t,
                    "source": "server",
                    "kind": "process",
                    "service": "app",
                    "name": "rss_bytes",
                    "value": 1e8 + rng.random() * 1e6,
                    "unit": "bytes",
                }
            )
            continue
        poll = i % 50 == 0
        record: Record = {
            "time": t,
            "source": "server",
            "kind": "http",
            "route": "/api/poll" if poll else rng.choice(names),
            "method": "GET",
            "status": 200 if i % 97 else 500,
            "duration_ms": rng.lognormvariate(2.0, 0.5),
        }
        if poll:
            record["client"] = f"c{rng.randrange(clients)}"
        out.append(record)
    return out


def _us_per_record(records: list[Record]) -> float:
    times = []
    for _ in range(RUNS):
        engine = HealthEngine()
        started = time.process_time()  # CPU time: the machine is shared and noisy
        engine.replay(records)
        times.append(time.process_time() - started)
    return statistics.median(times) / len(records) * 1e6


def main() -> None:
    small = 50_000 if QUICK else 100_000
    cases = [
        ("records", small, 30, 20),
        ("records ×4", small * 4, 30, 20),
        ("routes ×10", small, 300, 20),
        ("clients ×50", small, 30, 1000),
    ]
    print(f"{'case':<14}{'records':>10}{'routes':>8}{'clients':>9}{'cpu µs/rec':>12}{'ratio':>8}")
    first = None
    worst = 0.0
    for label, n, routes, clients in cases:
        cost = _us_per_record(_records(n, routes=routes, clients=clients))
        first = first or cost
        worst = max(worst, cost)
        print(f"{label:<14}{n:>10,}{routes:>8}{clients:>9}{cost:>12.2f}{cost / first:>8.2f}")
    met = "met" if worst <= TARGET_US else "NOT met"
    print(f"target ≤ {TARGET_US:g} µs/record ({1e6 / TARGET_US:,.0f} records/s): {met}")


if __name__ == "__main__":
    main()
