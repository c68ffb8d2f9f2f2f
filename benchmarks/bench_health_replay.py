"""Peak memory and CPU of replaying a stored range: the whole range at once, or in pieces.

``perfnb health`` and the post-mortem report replay a store's detail through the
health engine. Read whole, the range becomes one frame and then a record dict per
row, all held at once; :func:`perfnb.healthcmd.replay_range` reads it a day at a
time, and a day in time slices of ``piece_rows`` rows, turning a few thousand rows
into dicts at a time. Both run here on the same synthetic Parquet store (four days,
~1M rows: steady traffic, polls, process samples, an error burst across a
midnight), each in a fresh Python process so that peak RSS (``ru_maxrss``, which
also sees Arrow's buffers) belongs to that replay alone: the table shows the peak
RSS *increase* over the process once warmed up, and CPU seconds, medians over the
runs, with ratios to the whole-range replay. Targets: the piecewise replay's peak
≤ 1/5 of the whole one's, at ≤ 1.25× its CPU; both give the same records.

The children run with the system allocator and one malloc arena
(``ARROW_DEFAULT_MEMORY_POOL=system MALLOC_ARENA_MAX=1``), so the peak is the
memory a replay holds; with Arrow's default mimalloc, per-thread caches add some
tens of MB that vary from run to run (``PERFNB_BENCH_ALLOCATOR=default`` shows it).

Run: ``python -m benchmarks health_replay`` (``PERFNB_BENCH_QUICK=1``: ~200k rows over two days).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfnb.store import Store

QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
ROWS = 200_000 if QUICK else 1_000_000
DAYS = 2 if QUICK else 4
RUNS = 3 if QUICK else 1
PIECE_ROWS = 100_000
ALLOCATOR = os.environ.get("PERFNB_BENCH_ALLOCATOR", "system")
DAY0 = datetime(2026, 5, 1, tzinfo=UTC)
ROUTES = np.array([f"/api/r{i}/{{id}}" for i in range(30)] + ["/api/poll"])

# What each child process runs: one replay, then its CPU time and peak RSS growth.
_CHILD = """
import gc, hashlib, json, re, sys, time, time
from perfnb.analysis.health import HealthEngine
from perfnb.healthcmd import _COLUMNS, replay_range
from perfnb.schema import record_to_json
from perfnb.store import Store

mode, root, piece_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(root)
# Warm up alike for both: modules loaded, Arrow's thread pools and their allocator
# caches started by a replay of the first ten minutes (not the replay measured).
day = store.days()[0].isoformat()
store.read(day, day + "T00:10Z", columns=list(_COLUMNS))
replay_range(store, start=day, end=day + "T00:10Z")


def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))


gc.collect()
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")  # the peak RSS (VmHWM) starts again from now
before = status("VmRSS")
started = time.process_time()
if mode == "whole":
    frame = store.read(columns=list(_COLUMNS))
    frame = frame[frame["source"] != "perfnb"]
    out = HealthEngine().replay(frame)
else:
    out = replay_range(store, piece_rows=piece_rows)
cpu = time.process_time() - started
peak = status("VmHWM")
text = json.dumps([record_to_json(r) for r in out], sort_keys=True, default=str)
print(json.dumps({"cpu": cpu, "peak_kb": peak - before, "records": len(out),
                  "digest": hashlib.sha256(text.encode()).hexdigest()}))
"""


def make_store(root: Path, *, rows: int = ROWS, days: int = DAYS, seed: int = 3) -> Store:
    """``rows`` records over ``days`` days, appended in hourly batches as a feed would."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    per_hour = rows // (days * 24)
    burst_at = pd.Timestamp(DAY0 + timedelta(days=1))
    for hour in range(days * 24):
        start = pd.Timestamp(DAY0 + timedelta(hours=hour))
        times = start + pd.to_timedelta(np.sort(rng.uniform(0, 3600, per_hour)).round(3), "s")
        pick = rng.integers(0, len(ROUTES), per_hour)
        fault = (times >= burst_at - pd.Timedelta(minutes=3)) & (
            times < burst_at + pd.Timedelta(minutes=3)
        )
        status = np.where(fault & (rng.random(per_hour) < 0.4), 500, 200).astype("int16")
        polls = ROUTES[pick] == "/api/poll"
        clients = np.where(polls, np.char.add("c", rng.integers(0, 200, per_hour).astype(str)), "")
        frame = pd.DataFrame(
            {
                "time": times,
                "source": "server",
                "kind": "http",
                "route": ROUTES[pick],
                "method": "GET",
                "status": status,
                "duration_ms": rng.lognormal(2.5, 0.5, per_hour).round(3),
                "client": pd.Series(clients).replace("", None),
            }
        )
        samples = start + pd.to_timedelta(np.arange(0, 3600, 10), "s")
        process = pd.DataFrame(
            {
                "time": samples,
                "source": "server",
                "kind": "process",
                "service": "app",
                "name": "rss_bytes",
                "value": 2e8 + rng.normal(0, 1e6, len(samples)),
                "unit": "bytes",
            }
        )
        store.append(pd.concat([frame, process], ignore_index=True))
    return store


def replay_in_child(
    mode: str, root: Path, *, piece_rows: int, system_allocator: bool = True
) -> dict[str, Any]:
    """One replay (``mode`` "whole" or "pieces") of the store at ``root`` in a fresh
    process: its CPU seconds, peak RSS growth in kB, record count and a digest of
    the records. The test of bounded memory runs the same measurement."""
    env = dict(os.environ)
    if system_allocator:
        env.update(ARROW_DEFAULT_MEMORY_POOL="system", MALLOC_ARENA_MAX="1")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(root), str(piece_rows)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"replay_in_child({mode!r}) failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "store"
        started = time.perf_counter()
        store = make_store(root)
        rows = len(store.read(columns=["time"]))
        print(
            f"store: {rows:,} rows over {len(store.days())} days "
            f"(written in {time.perf_counter() - started:.1f} s); piece_rows={PIECE_ROWS:,}; "
            f"{RUNS} run(s) each, medians; allocator: {ALLOCATOR}"
        )
        runs: dict[str, list[dict[str, Any]]] = {"whole": [], "pieces": []}
        for _ in range(RUNS):  # alternated: the machine is shared and noisy
            for mode in runs:
                runs[mode].append(
                    replay_in_child(
                        mode, root, piece_rows=PIECE_ROWS, system_allocator=ALLOCATOR == "system"
                    )
                )
    cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in runs.items()}
    peak = {m: statistics.median(r["peak_kb"] for r in rs) / 1024 for m, rs in runs.items()}
    print(f"{'replay':<10}{'outputs':>9}{'cpu s':>9}{'µs/row':>9}{'peak MB':>10}{'peak ×':>9}")
    for mode, results in runs.items():
        print(
            f"{mode:<10}{results[0]['records']:>9}{cpu[mode]:>9.2f}"
            f"{cpu[mode] / rows * 1e6:>9.2f}{peak[mode]:>10.1f}"
            f"{peak[mode] / peak['whole']:>9.3f}"
        )
    same = len({r["digest"] for rs in runs.values() for r in rs}) == 1
    memory = peak["pieces"] <= peak["whole"] / 5
    speed = cpu["pieces"] <= 1.25 * cpu["whole"]
    print(
        f"pieces/whole: peak {peak['pieces'] / peak['whole']:.3f}, cpu "
        f"{cpu['pieces'] / cpu['whole']:.2f}; same records: {'yes' if same else 'NO'}"
    )
    print(f"target peak ≤ 1/5 of whole: {'met' if memory else 'NOT met'}")
    print(f"target cpu ≤ 1.25× whole: {'met' if speed else 'NOT met'}")


if __name__ == "__main__":
    main()
