"""What the health engine adds to the live dashboard's per-record work.

The dashboard's stream callback aggregates each batch per second and, since the
lights come from the health engine, feeds the engine too. Both run on the stream's
thread, but in the kernel's process: their CPU time is the kernel's. This bench
times one callback's work per record, side by side in one run over the same
batches: the aggregation alone, and the aggregation plus the engine
(:class:`~perfnb.widgets.livehealth.LiveHealth`). Target: the engine adds at most
10 µs a record.

    python -m benchmarks.bench_dashboard_health
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.widgets.aggregate import Aggregator
from perfnb.widgets.lights import AlertLog
from perfnb.widgets.livehealth import LiveHealth

ROUTES = ["/api/cards", "/api/cards/{card_id}", "/api/search", "/", "/api/presence"]
BATCH = 2_000
BATCHES = 40
ROUNDS = 5
TARGET_US = 10.0


def _batches(start: float) -> list[list[dict[str, Any]]]:
    rng = random.Random(1)
    out = []
    t = start
    polls = 0
    for _ in range(BATCHES):
        batch: list[dict[str, Any]] = []
        for i in range(BATCH):
            t += 0.5 / BATCH  # 4,000 records a second of traffic (polls: 50 a second)
            when = datetime.fromtimestamp(t, UTC)
            if i % 200 == 0:
                batch.append(
                    {
                        "time": when,
                        "source": "server",
                        "kind": "process",
                        "name": "rss_bytes",
                        "value": 80e6 + rng.random() * 1e6,
                    }
                )
                continue
            # polls: 150 signed-in clients, each every 3 s as the app means them to
            poll = i % 80 == 1
            if poll:
                polls += 1
            route = "/api/poll" if poll else rng.choice(ROUTES)
            client = f"c{polls % 150}" if poll else f"c{rng.randrange(150)}"
            batch.append(
                {
                    "time": when,
                    "source": "server",
                    "kind": "http",
                    "route": route,
                    "status": 500 if rng.random() < 0.01 else 200,
                    "duration_ms": rng.lognormvariate(3.0, 0.5),
                    "client": client,
                }
            )
        out.append(batch)
    return out


def _run(with_engine: bool) -> float:
    """Seconds of CPU per record over every batch."""
    now = [time.time()]
    batches = _batches(now[0])
    aggregator = Aggregator(max_window=900, clock=lambda: now[0])
    live = LiveHealth(HealthConfig(), alerts=AlertLog(), clock=lambda: now[0], tick=None)
    began = time.process_time()
    for batch in batches:
        now[0] = batch[-1]["time"].timestamp()
        aggregator.add_records(batch)
        if with_engine:
            live.observe(batch)
    spent = time.process_time() - began
    live.close()
    return spent / (BATCH * BATCHES)


def main() -> None:
    plain: list[float] = []
    engine: list[float] = []
    for _ in range(ROUNDS):  # alternated, so drift on a shared machine hits both alike
        plain.append(_run(False))
        engine.append(_run(True))
    p, e = statistics.median(plain) * 1e6, statistics.median(engine) * 1e6
    added = e - p
    print(f"dashboard callback, {BATCH:,}-record batches × {BATCHES}, {ROUNDS} rounds (medians)")
    print(f"{'work per record':<34} {'µs':>8}")
    print(f"{'aggregation only':<34} {p:>8.2f}")
    print(f"{'aggregation + health engine':<34} {e:>8.2f}")
    print(f"{'added by the engine':<34} {added:>8.2f}   ratio {e / p:.2f}×")
    verdict = "met" if added <= TARGET_US else "NOT met"
    print(f"target: engine adds ≤ {TARGET_US:g} µs a record: {verdict}")


if __name__ == "__main__":
    main()
