"""Store benchmark: bytes per row, append throughput, and a 30-day route summary.

Everything runs side by side in one process on the same synthetic records:

* 1M rows written by the store, by ``DataFrame.to_parquet`` with its defaults and
  by ``pyarrow.parquet.write_table`` with its defaults: bytes per row on disk;
* append throughput through ``Store.writer()`` one record at a time, through
  ``StoreWriter.extend`` with DataFrame batches, and ``Store.append`` of a frame —
  by wall time, by this process's CPU time, and by the CPU time of the appending
  thread alone (the writer's converter thread does the Parquet work beside it);
* 10M rows over 30 days: the per-route summary through ``Store.route_summary``
  against the same query in raw DuckDB over the same files.

The machine is shared: every section prints the load average it ran under.
``PERFNB_BENCH_SCALE=0.1`` shrinks every size tenfold for a quick run.

    python -m benchmarks.bench_store
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from perfnb.store import Store

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY_US = 86_400_000_000

ROUTES = [
    "/",
    "/login",
    "/logout",
    "/search",
    "/api/cards",
    "/api/cards/{card_id}",
    "/api/cards/{card_id}/comments",
    "/api/cards/{card_id}/comments/{comment_id}",
    "/api/boards",
    "/api/boards/{board_id}",
    "/api/boards/{board_id}/cards",
    "/api/boards/{board_id}/members",
    "/api/users/me",
    "/api/users/{user_id}",
    "/api/users/{user_id}/avatar",
    "/api/notifications",
    "/api/notifications/{notification_id}/read",
    "/api/search",
    "/api/tags",
    "/api/tags/{tag_id}",
    "/api/attachments/{attachment_id}",
    "/api/export",
    "/api/import",
    "/api/health",
    "/api/metrics",
    "/static/{path}",
    "/assets/app.js",
    "/assets/app.css",
    "/ws/updates",
    "/__unmatched__",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
STATUSES = np.array([200, 201, 204, 304, 400, 401, 404, 500, 502, 503], dtype=np.int16)
STATUS_P = np.array([0.90, 0.02, 0.01, 0.03, 0.01, 0.005, 0.015, 0.006, 0.002, 0.002])


def scale() -> float:
    """The size factor from ``PERFNB_BENCH_SCALE`` (1.0 when unset)."""
    return float(os.environ.get("PERFNB_BENCH_SCALE", "1.0"))


def synthetic(n: int, *, days: int = 1, seed: int = 7, start: datetime = START) -> pd.DataFrame:
    """``n`` realistic HTTP records over ``days`` days from ``START``, sorted by time.

    Half are seen by the server, half by the client; routes follow a skewed mix of
    30 templates, durations are log-normal per route and rounded to the µs.
    """
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, days * DAY_US, n, dtype=np.int64))
    times += int(start.timestamp()) * 1_000_000
    weights = 1.0 / np.arange(1, len(ROUTES) + 1) ** 1.1
    route = rng.choice(len(ROUTES), n, p=weights / weights.sum()).astype(np.int8)
    route_method = rng.choice(len(METHODS), len(ROUTES), p=[0.6, 0.2, 0.1, 0.05, 0.05])
    method = np.where(rng.random(n) < 0.85, route_method[route], 0).astype(np.int8)
    status = rng.choice(STATUSES, n, p=STATUS_P / STATUS_P.sum())
    client_side = rng.random(n) < 0.5
    source = client_side.astype(np.int8)  # 0 server, 1 client

    median = np.exp(rng.uniform(np.log(2.0), np.log(150.0), len(ROUTES)))
    sigma = rng.uniform(0.4, 0.9, len(ROUTES))
    server_ms = np.round(median[route] * np.exp(sigma[route] * rng.standard_normal(n)), 3)
    app_ms = np.round(server_ms * rng.uniform(0.6, 0.97, n), 3)
    uses_db = rng.random(len(ROUTES)) < 0.7
    db_ms = np.where(uses_db[route], np.round(app_ms * rng.uniform(0.05, 0.7, n), 3), np.nan)
    network = np.round(np.exp(rng.normal(np.log(3.0), 0.5, n)), 3)
    duration = np.where(client_side, server_ms + network, server_ms)
    ttfb = np.where(client_side, np.round(server_ms + network * 0.6, 3), np.nan)

    base_size = np.exp(rng.uniform(np.log(200), np.log(60_000), len(ROUTES)))
    response_bytes = (base_size[route] * rng.lognormal(0.0, 0.3, n)).astype(np.int64)
    request_bytes = np.where(
        method == 0, 0, rng.lognormal(np.log(600), 0.6, n).astype(np.int64)
    ).astype(np.int64)

    failed = client_side & (rng.random(n) < 0.002)
    status = np.where(failed, 0, status).astype(np.int16)
    error = np.where(failed, 1, np.where(status >= 500, 2, 0))
    error_type = pd.Categorical.from_codes(
        np.where(error == 1, 0, np.where(error == 2, 1, -1)), ["timeout", "HTTPStatusError"]
    )
    messages = np.array([None, "timed out after 30.0 s", "server error"], dtype=object)
    sessions = [f"{h:012x}" for h in rng.integers(0, 2**48, 200)]
    client = pd.Categorical.from_codes(rng.integers(0, len(sessions), n), sessions)

    def cat(codes: np.ndarray, names: list[str]) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, names)

    return pd.DataFrame(
        {
            "time": pd.to_datetime(times, unit="us", utc=True),
            "source": cat(source, ["server", "client"]),
            "kind": cat(np.zeros(n, dtype=np.int8), ["http"]),
            "service": cat(np.zeros(n, dtype=np.int8), ["shop"]),
            "route": cat(route, ROUTES),
            "method": cat(method, METHODS),
            "status": status,
            "duration_ms": np.where(failed, 30_000.0, duration).astype(np.float32),
            "ttfb_ms": ttfb.astype(np.float32),
            "request_bytes": request_bytes,
            "response_bytes": np.where(failed, 0, response_bytes),
            "server_ms": np.where(failed, np.nan, server_ms).astype(np.float32),
            "app_ms": np.where(failed, np.nan, app_ms).astype(np.float32),
            "db_ms": np.where(failed, np.nan, db_ms).astype(np.float32),
            "error_type": error_type,
            "error_message": pd.array(messages[error], dtype="str"),
            "client": client,
        }
    )


def as_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """The frame as record dicts, nulls left out, ``time`` as aware datetimes."""
    columns = {name: frame[name].tolist() for name in frame.columns if name != "time"}
    columns["time"] = list(frame["time"].dt.to_pydatetime())
    names = list(columns)
    out = []
    for values in zip(*(columns[n] for n in names), strict=True):
        out.append({k: v for k, v in zip(names, values, strict=True) if v == v and v is not None})
    return out


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.parquet"))


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def load() -> str:
    """The 1-minute load average, to read the figures by (2 cores here)."""
    return f"load average {os.getloadavg()[0]:.1f}"


def column_sizes(root: Path, *, top: int = 6) -> str:
    """The biggest columns on disk under ``root``, in bytes per row."""
    sizes: dict[str, int] = {}
    rows = 0
    for path in root.rglob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for group in range(meta.num_row_groups):
            chunks = meta.row_group(group)
            for index in range(chunks.num_columns):
                chunk = chunks.column(index)
                name = chunk.path_in_schema.split(".")[0]
                sizes[name] = sizes.get(name, 0) + chunk.total_compressed_size
    biggest = sorted(sizes.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{name} {size / max(rows, 1):.2f}" for name, size in biggest)


def row(label: str, value: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("met" if met else "MISSED")
    print(f"  {label:<48} {value:>24}  {target:<14} {verdict}")


def bench_size(frame: pd.DataFrame, work: Path) -> None:
    n = len(frame)
    print(f"\nBytes per row on disk ({n:,} HTTP records, one day; {load()})")
    store_root = work / "size-perfnb"
    wall, _ = timed(lambda: Store(store_root).append(frame))
    ours = disk_bytes(store_root) / n
    row("perfnb Store.append", f"{ours:6.2f} B/row {wall:5.2f}s", "≤ 16 B/row", ours <= 16)
    print(f"    biggest columns (B/row): {column_sizes(store_root)}")
    pandas_path = work / "pandas.parquet"
    wall, _ = timed(lambda: frame.to_parquet(pandas_path))
    pandas_bytes = pandas_path.stat().st_size / n
    row("DataFrame.to_parquet defaults", f"{pandas_bytes:6.2f} B/row {wall:5.2f}s")
    arrow_path = work / "arrow.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    wall, _ = timed(lambda: pq.write_table(table, arrow_path))
    arrow_bytes = arrow_path.stat().st_size / n
    row("pyarrow write_table defaults", f"{arrow_bytes:6.2f} B/row {wall:5.2f}s")
    row("ratio to_parquet / perfnb", f"{pandas_bytes / ours:6.2f}x")
    row("ratio write_table / perfnb", f"{arrow_bytes / ours:6.2f}x")


def bench_append(frame: pd.DataFrame, work: Path, *, one_by_one: int) -> None:
    print(f"\nAppend throughput (median of 3; {load()})")
    print("    rates by wall time, by this process's CPU time, and by the appending thread's")
    records = as_records(frame.iloc[:one_by_one])
    # The benchmark's own records are not the writer's garbage: keep the cyclic
    # collector from walking them while the writer is timed.
    gc.freeze()
    files: dict[str, float] = {}

    def one_at_a_time(round_: int) -> None:
        root = work / f"single-{round_}"
        with Store(root).writer() as writer:
            append = writer.append
            for record in records:
                append(record)
        files["writer"] = disk_bytes(root) / len(records)

    def frames(round_: int) -> None:
        with Store(work / f"frames-{round_}").writer() as writer:
            for begin in range(0, len(frame), 10_000):
                writer.extend(frame.iloc[begin : begin + 10_000])

    def whole(round_: int) -> None:
        Store(work / f"whole-{round_}").append(frame)

    cases = [
        ("writer.append, one record at a time", one_at_a_time, len(records), 200_000),
        ("writer.extend, DataFrames of 10k rows", frames, len(frame), 500_000),
        ("Store.append, one DataFrame", whole, len(frame), 500_000),
    ]
    for label, action, count, target in cases:
        walls, cpus, threads = [], [], []
        for round_ in range(3):
            thread = time.thread_time()
            wall, cpu = timed(lambda a=action, r=round_: a(r))  # type: ignore[misc]
            walls.append(wall)
            cpus.append(cpu)
            threads.append(time.thread_time() - thread)
        wall_rate = count / statistics.median(walls)
        cpu_rate = count / statistics.median(cpus)
        thread_rate = count / statistics.median(threads)
        value = f"{wall_rate / 1e3:4.0f}k/s {cpu_rate / 1e3:5.0f}k/s {thread_rate / 1e3:5.0f}k/s"
        row(label, value, f"≥ {target // 1000}k/s", wall_rate >= target)
    row("  files of the writer (1 s or 50k-record flushes)", f"{files['writer']:6.2f} B/row")
    gc.unfreeze()
    print(f"    ({load()} at the end)")


def bench_query(n: int, work: Path, *, days: int = 30) -> None:
    print(f"\n{days}-day per-route summary over {n:,} rows (median of 5; {load()})")
    root = work / "month"
    store = Store(root)
    wall, _ = timed(
        lambda: [
            store.append(synthetic(n // days, seed=day, start=START + timedelta(days=day)))
            for day in range(days)
        ]
    )
    row("write (one file per day)", f"{wall:6.1f} s, {disk_bytes(root) / n:5.2f} B/row")
    first, last = START.date(), START.date() + timedelta(days=days)
    raw = (
        "SELECT route, count(*) AS count,"
        " count(*) FILTER (WHERE error_type IS NOT NULL OR status >= 500) AS errors,"
        " errors / count(*) AS error_rate,"
        " quantile_cont(duration_ms, [0.5, 0.9, 0.95, 0.99]) AS q, max(duration_ms) AS max_ms"
        f" FROM read_parquet('{root}/events/*/*.parquet', hive_partitioning = true)"
        " WHERE kind = 'http' AND run_id IS NULL AND date >= ? AND date < ?"
        " GROUP BY route ORDER BY count DESC"
    )

    def through_store() -> pd.DataFrame:
        return store.route_summary(first, last)

    def raw_duckdb() -> pd.DataFrame:
        with duckdb.connect() as con:
            return con.execute(raw, [first, last]).df()

    ours, theirs = [], []
    for _ in range(5):
        ours.append(timed(through_store)[0])
        theirs.append(timed(raw_duckdb)[0])
    a, b = statistics.median(ours), statistics.median(theirs)
    assert through_store()["count"].sum() == raw_duckdb()["count"].sum()
    row("Store.route_summary", f"{a * 1e3:7.0f} ms")
    row("raw DuckDB read_parquet(hive_partitioning)", f"{b * 1e3:7.0f} ms")
    row("ratio store / raw", f"{a / b:6.2f}x", "≤ 1.5x", a / b <= 1.5)


def main() -> None:
    """Run the store benchmark and print its table."""
    factor = scale()
    n_write = int(1_000_000 * factor)
    n_query = int(10_000_000 * factor)
    print(f"perfnb store benchmark (scale {factor}, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="perfnb-bench-") as temp:
        work = Path(temp)
        frame = synthetic(n_write)
        bench_size(frame, work)
        bench_append(frame, work, one_by_one=int(300_000 * factor))
        bench_query(n_query, work)


if __name__ == "__main__":
    main()
