"""Daily summaries: stored sketches, merged over days, against DuckDB's exact figures."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perfnb.analysis.sketch import LatencySketch
from perfnb.errors import StoreError
from perfnb.store import Store
from perfnb.store.grouping import sketch_quantiles

DAY0 = datetime(2026, 2, 1, tzinfo=UTC)
ROUTES = ("/api/cards/{id}", "/api/search", "/", "/api/slow")


def day_of_traffic(day: int, rng: np.random.Generator, rows: int = 1500) -> list[dict[str, Any]]:
    """Real traffic and two load runs on one day, with distinct durations per route."""
    out: list[dict[str, Any]] = []
    start = DAY0 + timedelta(days=day)
    for i in range(rows):
        route = ROUTES[i % len(ROUTES)]
        scale = 1.0 + 3.0 * ROUTES.index(route)
        record: dict[str, Any] = {
            "time": start + timedelta(seconds=i * 50),
            "source": "server",
            "kind": "http",
            "service": "shop",
            "route": route,
            "method": "GET",
            "status": 200,
            "duration_ms": round(float(rng.lognormal(np.log(scale * 8), 0.8)), 3),
            "server_ms": 1.25,
            "response_bytes": 100 + i % 10,
        }
        if i % 5 == 0:
            record["run_id"] = f"run-{day % 2}"
        if i % 13 == 0:
            record["status"] = 503
        elif i % 17 == 0:
            record["status"] = 404
        if i % 19 == 0:
            record["error_type"] = "timeout"
        elif i % 23 == 0:
            record["error_type"] = "ValueError"
        out.append(record)
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Store:
    rng = np.random.default_rng(6)
    store = Store(tmp_path_factory.mktemp("history"))
    for day in range(6):
        store.append(day_of_traffic(day, rng))
    return store


def within(found: float, exact: float, tolerance: float = 0.01) -> bool:
    return abs(found - exact) <= tolerance * abs(exact)


EXACT = """
SELECT {keys}, count(*) AS n,
       count(*) FILTER (WHERE error_type IS NOT NULL OR status >= 500) AS errors,
       quantile_cont(duration_ms, 0.5) AS p50, quantile_cont(duration_ms, 0.95) AS p95,
       quantile_cont(duration_ms, 0.99) AS p99, max(duration_ms) AS mx
FROM events WHERE kind = 'http' AND {where} GROUP BY ALL
"""


def test_merged_percentiles_of_real_traffic_are_within_1pct_of_duckdb(history: Store) -> None:
    merged = history.summary().set_index("route")
    exact = history.sql(EXACT.format(keys="route", where="run_id IS NULL")).set_index("route")
    assert sorted(merged.index) == sorted(exact.index)
    for route, row in exact.iterrows():
        got = merged.loc[route]
        assert got["count"] == row["n"]
        assert got["errors"] == row["errors"]
        assert got["max_ms"] == pytest.approx(row["mx"])
        for mine, theirs in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            assert within(got[mine], row[theirs]), (route, mine, got[mine], row[theirs])


def test_merged_percentiles_per_load_run_are_within_1pct_of_duckdb(history: Store) -> None:
    merged = history.summary(by=("run_id", "route"), include_load=True, vitals=False, memory=False)
    runs = merged[merged["run_id"].notna()].set_index(["run_id", "route"])
    exact = history.sql(EXACT.format(keys="run_id, route", where="run_id IS NOT NULL"))
    exact = exact.set_index(["run_id", "route"])
    assert sorted(runs.index) == sorted(exact.index)
    for key, row in exact.iterrows():
        got = runs.loc[key]
        assert got["count"] == row["n"]
        for mine, theirs in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            assert within(got[mine], row[theirs]), (key, mine, got[mine], row[theirs])
    # A load run alone, by its id:
    only = history.summary(run_ids=["run-1"], by=())
    assert only["count"][0] == exact.loc["run-1"]["n"].sum()


def test_a_range_of_days_counts_exactly_what_route_summary_counts(history: Store) -> None:
    merged = history.summary("2026-02-02", "2026-02-05").set_index("route")
    exact = history.route_summary("2026-02-02", "2026-02-05").set_index("route")
    assert merged["count"].to_dict() == exact["count"].to_dict()
    assert merged["errors"].to_dict() == exact["errors"].to_dict()


def test_errors_by_class_and_means(tmp_path: Path) -> None:
    store = Store(tmp_path)
    at = DAY0
    base = {"source": "client", "kind": "http", "route": "/x", "service": "s"}
    store.append(
        [
            {**base, "time": at, "status": 200, "duration_ms": 10.0, "server_ms": 4.0},
            {**base, "time": at, "status": 500, "duration_ms": 20.0, "server_ms": 6.0},
            {**base, "time": at, "status": 404, "duration_ms": 30.0},
            {**base, "time": at, "status": 504, "duration_ms": 40.0},
            {**base, "time": at, "error_type": "timeout", "status": 0},
            {**base, "time": at, "error_type": "ConnectError", "status": 0},
            {**base, "time": at, "error_type": "ConnectError", "status": 0},
        ]
    )
    made = store.summarize("2026-02-01")
    assert (made.records, made.groups) == (7, 1)
    row = store.summaries().iloc[0]
    assert row["count"] == 7
    assert row["errors"] == 5  # 500, 504, and three with an error_type
    assert (row["status_5xx"], row["status_4xx"]) == (2, 1)
    assert row["timeouts"] == 2  # error_type timeout, and status 504
    assert row["exceptions"] == 2
    assert dict(row["error_types"]) == {"ConnectError": 2, "timeout": 1}
    assert row["server_ms_sum"] == 10.0
    assert row["server_ms_count"] == 2
    figures = store.summary(by=()).iloc[0]
    assert figures["server_ms_mean"] == 5.0
    assert figures["mean_ms"] == 25.0  # the durations present: 10, 20, 30, 40
    assert figures["error_rate"] == pytest.approx(5 / 7)


def test_summary_file_names_its_sources_and_counts_every_row(history: Store) -> None:
    made = history.summarize(date(2026, 2, 3))
    path = Path(history.root) / "daily" / "date=2026-02-03" / "summary.parquet"
    assert made.path == str(path)
    metadata = pq.read_schema(path).metadata
    sources = json.loads(metadata[b"perfnb.sources"])
    detail = sorted((Path(history.root) / "events" / "date=2026-02-03").glob("*.parquet"))
    assert [name for name, _, _ in sources] == [p.name for p in detail]
    assert int(metadata[b"perfnb.rows"]) == 1500
    assert pq.read_table(path).column("count").to_pylist()
    assert sum(pq.read_table(path).column("count").to_pylist()) == 1500
    # DuckDB reads the summaries unchanged (list columns included).
    frame = history.summaries("2026-02-03", "2026-02-04", include_load=True, sketches=True)
    assert frame["count"].sum() == 1500
    assert set(frame["date"].astype(str)) == {"2026-02-03"}


def test_a_changed_day_is_summarised_again_and_compaction_keeps_it_fresh(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rng = np.random.default_rng(1)
    store.append(day_of_traffic(0, rng, rows=200))
    store.close_days()
    summary = tmp_path / "daily" / "date=2026-02-01" / "summary.parquet"
    first = summary.stat().st_mtime_ns
    assert store.close_days() == []  # fresh: nothing to do
    late = {"time": DAY0 + timedelta(hours=23), "source": "server", "kind": "http", "route": "/"}
    store.append([late])
    assert store.summary(by=(), kinds=None)["count"][0] == 161  # 160 real + the late one
    assert summary.stat().st_mtime_ns != first  # the read rewrote the closed day's summary
    stored = sum(pq.read_table(summary).column("count").to_pylist())
    assert stored == 201
    rewritten = summary.stat().st_mtime_ns
    result = store.compact("2026-02-01")
    assert result.files_after == 1
    assert store.close_days() == []  # same rows in one file: still fresh
    assert summary.stat().st_mtime_ns == rewritten


def test_vitals_p75_including_tiny_cls_and_memory_max_and_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = Store(tmp_path)
    cls = rng.uniform(0.0, 0.002, 500)  # small layout shifts, in the unitless CLS scale
    lcp = rng.lognormal(np.log(1800), 0.4, 500)
    rss = rng.uniform(80e6, 120e6, 300)
    records: list[dict[str, Any]] = []
    for day in range(3):
        at = DAY0 + timedelta(days=day)
        part = slice(day * 100, day * 100 + 200) if day < 2 else slice(400, 500)
        for value in cls[part]:
            records.append(
                {
                    "time": at,
                    "source": "browser",
                    "kind": "vital",
                    "route": "/",
                    "name": "CLS",
                    "value": float(value),
                    "unit": "score",
                }
            )
        for value in lcp[part]:
            records.append(
                {
                    "time": at,
                    "source": "browser",
                    "kind": "vital",
                    "route": "/",
                    "name": "LCP",
                    "value": float(value),
                    "unit": "ms",
                }
            )
        for value in rss[day * 100 : day * 100 + 100]:
            records.append(
                {
                    "time": at,
                    "source": "server",
                    "kind": "process",
                    "name": "rss_bytes",
                    "value": float(value),
                    "unit": "bytes",
                }
            )
    store.append(records)
    frame = store.summary(by=("route",))
    page = frame[frame["route"] == "/"].iloc[0]
    exact_cls = np.quantile(np.concatenate([cls[0:200], cls[100:300], cls[400:500]]), 0.75)
    exact_lcp = np.quantile(np.concatenate([lcp[0:200], lcp[100:300], lcp[400:500]]), 0.75)
    assert within(page["cls_p75"], exact_cls)
    assert within(page["lcp_p75"], exact_lcp)
    server = frame[frame["route"].isna()].iloc[0]
    assert server["rss_bytes_max"] == rss.max()
    assert server["rss_bytes_mean"] == pytest.approx(rss.mean())


def test_bad_values_are_counted_not_fatal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base = {"time": DAY0, "source": "server", "kind": "http", "route": "/"}
    store.append([{**base, "duration_ms": -5.0}, {**base, "duration_ms": 0.0}, base])
    figures = store.summary(by=()).iloc[0]
    assert figures["count"] == 3
    assert figures["p50_ms"] == 0.0  # only the zero is a usable duration
    with pytest.raises(StoreError, match="by: unknown column 'path'"):
        store.summary(by=("path",))
    with pytest.raises(StoreError, match="day: got 'yesterday'"):
        store.summarize("yesterday")
    with pytest.raises(StoreError, match="has no detail"):
        store.summarize("2020-01-01")


def test_writing_todays_records_summarises_yesterday(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    store = Store(tmp_path)
    record = {"source": "server", "kind": "http", "route": "/", "duration_ms": 2.0}
    store.append([{**record, "time": yesterday}])
    summary = tmp_path / "daily" / f"date={yesterday.date()}" / "summary.parquet"
    assert not summary.exists()  # nothing says the day is over yet
    with store.writer(flush_every=1) as writer:
        writer.append({**record, "time": now})
    assert summary.exists()
    assert sum(pq.read_table(summary).column("count").to_pylist()) == 1
    assert not (tmp_path / "daily" / f"date={now.date()}").exists()  # today is still open


def test_vectorised_quantiles_answer_as_the_sketch_does() -> None:
    """Merged figures read all groups' quantiles at once; they must be LatencySketch's."""
    rng = np.random.default_rng(0)
    sketches = []
    for _ in range(200):
        values = rng.lognormal(rng.uniform(-2, 5), rng.uniform(0.1, 2), int(rng.integers(0, 40)))
        sketches.append(LatencySketch.of(np.concatenate([values, np.zeros(rng.integers(0, 3))])))
    arrays = [s.to_arrays() for s in sketches]
    keys = pa.array([a[0] for a in arrays], pa.list_(pa.int64()))
    counts = pa.array([a[1] for a in arrays], pa.list_(pa.int64()))
    zeros = np.array([s.zeros for s in sketches])
    lows = np.array([s.min if s.count else np.nan for s in sketches])
    highs = np.array([s.max if s.count else np.nan for s in sketches])
    qs = [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
    found = sketch_quantiles(keys, counts, zeros, lows, highs, qs)
    expected = np.array([s.quantiles(qs) for s in sketches])
    assert np.isnan(found).sum() == np.isnan(expected).sum() > 0  # empty sketches included
    np.testing.assert_allclose(found, expected, rtol=1e-12)
