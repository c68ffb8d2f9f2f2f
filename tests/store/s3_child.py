"""A child process for the object-storage tests; the bucket's endpoint comes from the environment.

    python s3_child.py write ROOT WAL_DIR SERVICE FIRST
    python s3_child.py upload-kill ROOT WAL_DIR SERVICE FIRST
    python s3_child.py read ROOT WAL_DIR EXPECTED_JSON TODAY DETAIL_DAYS SUMMARY_DAYS

``write`` appends numbered records (``request_bytes`` from FIRST on) through a
writer that flushes every few hundred records, printing each number once
``append`` returned, until killed. ``upload-kill`` does the same for a while, then
hands the writer one batch large enough to go straight to a multi-part upload and
SIGKILLs itself half-way through that upload. ``read`` reads the store in a loop —
daily counts from ``Store.summary`` and from ``Store.read`` — printing any count
that breaks what retention promises and ``pass`` after each round, then ``reads N``
when its stdin closes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from perfnb.store import Store
from perfnb.store import parquet as parquet_module

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
BIG_ROWS = 1_000_000


def write(root: str, wal_dir: str, service: str, first: int, *, kill_in_upload: bool) -> None:
    store = Store(root, wal_dir=wal_dir)
    print(f"recovered {store.recovered}", flush=True)
    writer = store.writer(flush_every=300, flush_seconds=0.02)
    number = first
    while True:
        writer.append(
            {
                "time": T0 + timedelta(microseconds=number),
                "source": "server",
                "kind": "http",
                "service": service,
                "route": "/api/x",
                "duration_ms": (number % 997) / 8,
                "request_bytes": number,
            }
        )
        sys.stdout.write(f"{number}\n")
        sys.stdout.flush()
        number += 1
        if kill_in_upload and number - first == 2_000:
            _die_in_the_next_big_upload()
            writer.extend(_big_frame())  # past flush_every: straight to Parquet


def _die_in_the_next_big_upload() -> None:
    real = parquet_module.put_whole

    def half_then_die(fs: Any, path: str, data: Any, *, fresh: bool) -> None:
        if len(data) < 12 * 1024 * 1024:
            real(fs, path, data, fresh=fresh)
            return
        stream = fs.open_output_stream(path)
        stream.write(memoryview(data)[: len(data) // 2])  # the first part goes out
        time.sleep(0.5)
        sys.stdout.write(f"killing in the upload of {path}\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    parquet_module.put_whole = half_then_die  # type: ignore[assignment]


def _big_frame() -> pd.DataFrame:
    """A batch whose Parquet file spans several upload parts (random values compress badly)."""
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "time": pd.Timestamp(T0) + pd.to_timedelta(np.arange(BIG_ROWS), unit="us"),
            "source": "server",
            "kind": "http",
            "service": "big",
            "duration_ms": rng.integers(0, 10**9, BIG_ROWS) / 1000,
            "request_bytes": rng.integers(0, 2**40, BIG_ROWS),
            "response_bytes": rng.integers(0, 2**40, BIG_ROWS),
        }
    )


def read(
    root: str, wal_dir: str, expected_json: str, today: date, detail: int, summary: int
) -> None:
    """Reads until stdin closes; prints every count retention must never produce."""
    expected = {date.fromisoformat(k): int(v) for k, v in json.loads(expected_json).items()}
    store = Store(root, wal_dir=wal_dir)
    print("ready", flush=True)
    reads = 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        summed = store.summary(by=("date",), kinds=None, include_load=True)
        counts = {
            pd.Timestamp(d).date(): int(n)
            for d, n in zip(summed["date"], summed["count"], strict=True)
        }
        for day, rows in expected.items():
            age = (today - day).days
            got = counts.get(day, 0)
            if (age < summary and got != rows) or got > rows:
                print(f"summary {day}: {got} records, expected {rows}", flush=True)
        times = store.read(include_load=True, columns=["time"])["time"]
        per_day = {d: int(n) for d, n in times.dt.date.value_counts().items()}
        for day, rows in expected.items():
            got = per_day.get(day, 0)
            if ((today - day).days < detail and got != rows) or got > rows:
                print(f"read {day}: {got} records, expected {rows}", flush=True)
        reads += 1
        print("pass", flush=True)
    print(f"reads {reads}", flush=True)


def main() -> None:
    mode, root, wal_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode in ("write", "upload-kill"):
        write(root, wal_dir, sys.argv[4], int(sys.argv[5]), kill_in_upload=mode == "upload-kill")
    elif mode == "read":
        today = date.fromisoformat(sys.argv[5])
        read(root, wal_dir, sys.argv[4], today, int(sys.argv[6]), int(sys.argv[7]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
