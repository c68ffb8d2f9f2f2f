"""Report benchmark: a post-mortem of a day with ~1M records, and baselines read two ways.

On one synthetic day (1M server requests over 20 routes, an error burst, a load
run seen by the server and by the load engine, health and alert records):

* ``build_report`` over the whole day with a baseline: kernel start, the notebook's
  DuckDB queries, nbconvert — median of 3 (target: under 30 s for 1M rows);
* the baseline of that day measured from the detail (one DuckDB query that computes
  the sketch buckets in SQL) against from the daily summary (sketches merged), side
  by side, median of 5.

``PERFNB_BENCH_SCALE=0.1`` shrinks the day tenfold for a quick run.

    python -m benchmarks.bench_report
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from perfnb.analysis.compare import measure, save_baseline
from perfnb.report import build_report
from perfnb.store import Store

DAY = datetime(2026, 3, 2, tzinfo=UTC)
ROUTES = np.array(
    ["/", "/login", "/search", "/api/search", "/api/poll", "/api/users/me"]
    + [f"/api/cards/{{card_id}}/part{i}" for i in range(14)]
)
REPORT_TARGET_S = 30.0


def _scale() -> float:
    return float(os.environ.get("PERFNB_BENCH_SCALE", "1"))


def build_store(root: Path, rows: int, *, seed: int = 0) -> Store:
    """``rows`` server requests over the day, appended hour by hour, plus a load run."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    base = rng.uniform(2.0, 80.0, ROUTES.size)
    per_hour = rows // 24
    for hour in range(24):
        start = pd.Timestamp(DAY) + pd.Timedelta(hours=hour)
        offsets = np.sort(rng.uniform(0, 3600, per_hour))
        pick = rng.integers(0, ROUTES.size, per_hour)
        durations = base[pick] * rng.lognormal(0.0, 0.5, per_hour) * (1.4 if hour >= 18 else 1.0)
        failing = 0.3 if hour == 14 else 0.002
        status = np.where(rng.random(per_hour) < failing, 500, 200).astype("int16")
        store.append(
            pd.DataFrame(
                {
                    "time": start + pd.to_timedelta(offsets, unit="s"),
                    "source": "server",
                    "kind": "http",
                    "route": ROUTES[pick],
                    "method": "GET",
                    "status": status,
                    "duration_ms": durations.round(3),
                    "server_ms": durations.round(3),
                    "db_ms": (durations * 0.4).round(3),
                }
            )
        )
    runs = max(rows // 50, 100)
    times = (
        pd.Timestamp(DAY)
        + pd.Timedelta(hours=10)
        + pd.to_timedelta(np.sort(rng.uniform(0, 300, runs)), unit="s")
    )
    pick = rng.integers(0, 4, runs)
    server = base[pick] * rng.lognormal(0.0, 0.3, runs)
    for source, network in (("server", 0.0), ("load", 2.0)):
        store.append(
            pd.DataFrame(
                {
                    "time": times,
                    "source": source,
                    "kind": "http",
                    "route": ROUTES[pick],
                    "status": np.full(runs, 200, "int16"),
                    "duration_ms": (server + network * rng.random(runs)).round(3),
                    "server_ms": server.round(3),
                    "run_id": "stress-bench",
                }
            )
        )
    marks = []
    for minute, state, previous in (
        (14 * 60 + 2, "failing", "healthy"),
        (15 * 60, "healthy", "failing"),
    ):
        marks.append(
            {
                "time": DAY + timedelta(minutes=minute),
                "source": "perfnb",
                "kind": "health",
                "name": "apiPolling",
                "tags": {"state": state, "previous": previous, "reason": "polls"},
            }
        )
    store.append(marks)
    return store


def _median(func: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        func()
        times.append(time.perf_counter() - began)
    return statistics.median(times), times


def main() -> None:
    rows = int(1_000_000 * _scale())
    print(f"load average: {os.getloadavg()[0]:.2f} (2 shared cores)")
    with tempfile.TemporaryDirectory(prefix="perfnb-bench-report-") as tmp:
        root = Path(tmp) / "store"
        began = time.perf_counter()
        store = build_store(root, rows)
        built = time.perf_counter() - began
        total = int(store.sql("SELECT count(*) AS n FROM events")["n"][0])
        print(f"store: {total:,} records over one day, written in {built:.1f} s")

        save_baseline(
            store, "morning", start=DAY + timedelta(hours=6), end=DAY + timedelta(hours=12)
        )
        out = Path(tmp) / "report.html"
        report_s, runs = _median(
            lambda: build_report(root, DAY, DAY + timedelta(days=1), out=out, baseline="morning"),
            3,
        )
        size = out.stat().st_size / 1e6

        store.summarize(DAY.date())
        whole_day = {"start": DAY, "end": DAY + timedelta(days=1)}
        detail_s, _ = _median(lambda: measure(store, **whole_day, use_summaries=False), 5)
        summary_s, _ = _median(lambda: measure(store, **whole_day, use_summaries=True), 5)

    print()
    print(f"{'what':<46} {'median':>9} {'runs':>24}  target")
    met = "met" if report_s <= REPORT_TARGET_S else "NOT met"
    shown = ", ".join(f"{t:.1f}" for t in runs)
    print(
        f"{'report of the day (' + f'{total:,}' + ' rows, baseline)':<46} {report_s:>8.1f}s "
        f"{shown:>24}  ≤ {REPORT_TARGET_S:.0f} s: {met}"
    )
    print(f"{'  HTML size':<46} {size:>7.2f}MB")
    print(f"{'baseline of the day from the detail':<46} {detail_s * 1000:>7.0f}ms")
    print(f"{'baseline of the day from the daily summary':<46} {summary_s * 1000:>7.0f}ms")
    print(f"{'  detail / summary':<46} {detail_s / summary_s:>8.1f}×")


if __name__ == "__main__":
    main()
