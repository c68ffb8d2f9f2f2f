"""History benchmark: 30-day per-route percentiles from daily sketches vs from the detail.

One store of 30 days × 50 routes (10M detail rows; ``PERFNB_BENCH_QUICK=1`` for 1M)
is generated once in a temporary folder, every day summarised, then side by side:

* ``Store.summary`` over the 30 days, merging the stored daily sketches — with one
  ``Store`` kept open (warm: unchanged summaries come from memory after a stat of
  each and a listing of each day's detail) and with a fresh ``Store`` each time
  (cold): rows from the month index (``daily/_index/YYYY-MM.arrow``, one file) and,
  interleaved with it in the same loop, from the 30 summary files as before the
  index (``Days.indexed = False``);
* ``Store.route_summary`` over the same days: DuckDB's exact ``quantile_cont``
  over the 10M detail rows;
* the time to summarise one day (``Store.summarize``) of ~333k rows.

It checks that both give the same counts and that the merged p50/p95/p99 are
within 1% of the exact ones, and prints medians, ratios and the targets.

    python -m benchmarks.bench_history
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from perfnb.store import Store

START = datetime(2026, 4, 1, tzinfo=UTC)
DAYS = 30
ROUTES = [f"/api/v1/resource{i:02d}/{{item_id}}" for i in range(45)]
ROUTES += ["/", "/login", "/search", "/static/{path}", "/__unmatched__"]
METHODS = ["GET", "POST", "PUT", "DELETE"]
DAY_US = 86_400_000_000
TARGET_MS = 50.0


def one_day(rows: int, day: int, rng: np.random.Generator) -> pd.DataFrame:
    """A day of HTTP records over 50 routes: skewed route mix, log-normal durations,
    a few errors, and 3% of the rows from a load run of that day."""
    times = np.sort(rng.integers(0, DAY_US, rows)) + int(START.timestamp() * 1e6) + day * DAY_US
    weights = 1.0 / np.arange(1, len(ROUTES) + 1) ** 0.8
    route = rng.choice(len(ROUTES), rows, p=weights / weights.sum())
    median = np.exp(np.linspace(np.log(1.5), np.log(400.0), len(ROUTES)))
    duration = np.round(median[route] * rng.lognormal(0.0, 0.7, rows), 3)
    status = np.where(rng.random(rows) < 0.01, 500, np.where(rng.random(rows) < 0.02, 404, 200))
    load = rng.random(rows) < 0.03
    run = pd.Categorical.from_codes(np.where(load, 0, -1), [f"run-{day:02d}"])
    timeout = pd.Categorical.from_codes(np.where(rng.random(rows) < 0.001, 0, -1), ["timeout"])
    return pd.DataFrame(
        {
            "time": pd.to_datetime(times, unit="us", utc=True),
            "source": pd.Categorical.from_codes(np.zeros(rows, np.int8), ["server"]),
            "kind": pd.Categorical.from_codes(np.zeros(rows, np.int8), ["http"]),
            "service": pd.Categorical.from_codes(np.zeros(rows, np.int8), ["shop"]),
            "route": pd.Categorical.from_codes(route, ROUTES),
            "method": pd.Categorical.from_codes(route % len(METHODS), METHODS),
            "status": status.astype(np.int16),
            "duration_ms": duration,
            "server_ms": np.round(duration * 0.8, 3),
            "response_bytes": rng.integers(200, 20_000, rows),
            "error_type": timeout,
            "run_id": run,
        }
    )


def median_ms(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``runs`` calls (CPU time suffers less from the
    other processes on a shared machine)."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def interleaved_ms(actions: list[Callable[[], object]], runs: int) -> list[tuple[float, float]]:
    """:func:`median_ms` of each action, their runs taken in turn so they share the noise."""
    walls: list[list[float]] = [[] for _ in actions]
    cpus: list[list[float]] = [[] for _ in actions]
    for _ in range(runs):
        for index, action in enumerate(actions):
            wall, cpu = time.perf_counter(), time.process_time()
            action()
            walls[index].append(time.perf_counter() - wall)
            cpus[index].append(time.process_time() - cpu)
    return [
        (statistics.median(w) * 1e3, statistics.median(c) * 1e3)
        for w, c in zip(walls, cpus, strict=True)
    ]


def cold_summary(root: Path, first: date, last: date, *, indexed: bool) -> pd.DataFrame:
    """The 30-day summary from a freshly opened store, with or without the month index."""
    store = Store(root)
    store._history.indexed = indexed
    return store.summary(first, last)


def row(label: str, value: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("met" if met else "MISSED")
    print(f"  {label:<50} {value:>20}  {target:<10} {verdict}")


def both(figures: tuple[float, float]) -> str:
    return f"{figures[0]:8.1f} / {figures[1]:6.1f} ms"


def main() -> None:
    """Generate the store, then time and print the table."""
    quick = os.environ.get("PERFNB_BENCH_QUICK") == "1"
    total = 1_000_000 if quick else 10_000_000
    per_day = total // DAYS
    print(
        f"perfnb history benchmark: {DAYS} days × {len(ROUTES)} routes, {per_day * DAYS:,} rows"
        f" ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    with tempfile.TemporaryDirectory(prefix="perfnb-history-") as temp:
        root = Path(temp) / "store"
        store = Store(root)
        rng = np.random.default_rng(30)
        started = time.perf_counter()
        for day in range(DAYS):
            store.append(one_day(per_day, day, rng))
        row("generate and store the detail", f"{time.perf_counter() - started:9.1f} s")
        started = time.perf_counter()
        written = store.close_days(today=(START + timedelta(days=DAYS)).date())
        row(f"summarise all {len(written)} days", f"{time.perf_counter() - started:9.1f} s")
        summary_bytes = sum(p.stat().st_size for p in root.glob("daily/*/*.parquet"))
        detail_bytes = sum(p.stat().st_size for p in root.glob("events/*/*.parquet"))
        row(
            "summaries on disk (share of the detail)",
            f"{summary_bytes / 1e6:6.1f} MB ({summary_bytes / detail_bytes:.1%})",
        )

        first, last = START.date(), (START + timedelta(days=DAYS)).date()
        day = START.date() + timedelta(days=DAYS // 2)
        print("  (times: wall / CPU, medians)")
        one = median_ms(lambda: store.summarize(day), 3)
        row(f"summarise one day ({per_day:,} rows), 3 runs", both(one))

        index_bytes = sum(p.stat().st_size for p in root.glob("daily/_index/*.arrow"))
        row("month index on disk", f"{index_bytes / 1e6:6.1f} MB")
        runs = 9
        warm_store = Store(root)
        warm_store.summary(first, last)
        warm, cold, cold_files = interleaved_ms(
            [
                lambda: warm_store.summary(first, last),
                lambda: cold_summary(root, first, last, indexed=True),
                lambda: cold_summary(root, first, last, indexed=False),
            ],
            runs,
        )
        indexed = cold_summary(root, first, last, indexed=True)
        same_rows = indexed.equals(cold_summary(root, first, last, indexed=False))
        exact = median_ms(lambda: store.route_summary(first, last), 5)
        groups = len(warm_store.summary(first, last))
        target = f"≤ {TARGET_MS:.0f} ms"
        row(
            f"30-day summary from sketches, warm, {runs} runs",
            both(warm),
            target,
            warm[0] <= TARGET_MS,
        )
        row(
            f"30-day summary from sketches, cold (index), {runs} runs",
            both(cold),
            target,
            cold[0] <= TARGET_MS,
        )
        row(f"30-day summary, cold from 30 day files, {runs} runs", both(cold_files))
        row(
            "day files / index, cold (wall, CPU)",
            f"{cold_files[0] / cold[0]:7.1f}x / {cold_files[1] / cold[1]:5.1f}x",
        )
        row(
            "index and day files give the same summary", "yes" if same_rows else "NO", "", same_rows
        )
        row("30-day route_summary (DuckDB, exact), 5 runs", both(exact))
        row(
            "exact / warm, exact / cold (wall)",
            f"{exact[0] / warm[0]:7.0f}x / {exact[0] / cold[0]:5.0f}x",
        )
        row(
            "exact / warm, exact / cold (CPU)",
            f"{exact[1] / warm[1]:7.0f}x / {exact[1] / cold[1]:5.0f}x",
        )

        merged = warm_store.summary(first, last).set_index("route")
        truth = store.route_summary(first, last).set_index("route")
        errors = [
            float(((merged[q] - truth[q]).abs() / truth[q]).max())
            for q in ("p50_ms", "p95_ms", "p99_ms")
        ]
        same = merged["count"].sort_index().equals(truth["count"].sort_index())
        row(f"{groups} routes; counts equal to the exact ones", "yes" if same else "NO", "", same)
        worst = max(errors)
        row("worst relative error of p50/p95/p99", f"{worst:9.3%}", "≤ 1%", worst <= 0.01)


if __name__ == "__main__":
    main()
