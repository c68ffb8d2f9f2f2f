"""``replay_range`` reads a stored range day by day and slice by slice, in bounded memory.

Real Parquet stores in ``tmp_path``: the piecewise replay gives exactly the
transitions and alerts of one replay over the whole range read at once (faults
that cross midnight UTC included), and its peak memory stays far below it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import perfnb.healthcmd
from benchmarks.bench_health_replay import replay_in_child
from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError
from perfnb.healthcmd import replay_range
from perfnb.schema import Record
from perfnb.store import Store

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
#: Short windows, so minutes of traffic around each midnight make many transitions.
QUICK = HealthConfig(
    window_s=5.0,
    min_requests=3,
    enter_windows=2,
    leave_windows=2,
    baseline_min_windows=3,
    runaway_window_s=5.0,
)
ROUTES = np.array(["/api/cards", "/api/search", "/api/poll", "/"])
COLUMNS = list(perfnb.healthcmd._COLUMNS)


def _requests(
    rng: np.random.Generator, start: datetime, seconds: float, n: int, *, source: str = "server"
) -> pd.DataFrame:
    times = pd.Timestamp(start) + pd.to_timedelta(
        np.sort(rng.uniform(0, seconds, n)).round(3), unit="s"
    )
    pick = rng.integers(0, len(ROUTES), n)
    return pd.DataFrame(
        {
            "time": times,
            "source": source,
            "kind": "http",
            "route": ROUTES[pick],
            "method": "GET",
            "status": np.full(n, 200, "int16"),
            "duration_ms": (rng.lognormal(2.5, 0.4, n)).round(3),
            "client": np.array([f"c{i}" for i in range(8)])[rng.integers(0, 8, n)],
        }
    )


def build(root: Path, *, days: int = 3, per_day: int = 4000, busy_s: int = 900) -> Store:
    """``days`` of quiet traffic, busy ``busy_s`` seconds either side of each midnight.

    Faults that straddle midnight: an error burst on /api/cards (day 1 → 2), a slow
    /api/search (day 2 → 3), a runaway poller (day 1 → 2). Client views share the
    server's times (ties), and load-run and perfnb records are stored but not replayed.
    """
    rng = np.random.default_rng(7)
    store = Store(root)
    parts = [_requests(rng, DAY0 + timedelta(days=d), 86_400, per_day) for d in range(days)]
    for d in range(1, days):
        midnight = DAY0 + timedelta(days=d)
        busy = _requests(rng, midnight - timedelta(seconds=busy_s), 2 * busy_s, 10 * busy_s)
        at = busy["time"]
        near = (at >= midnight - timedelta(seconds=120)) & (at < midnight + timedelta(seconds=150))
        if d == 1:
            fail = near & (busy["route"] == "/api/cards") & (rng.random(len(busy)) < 0.6)
            busy.loc[fail, "status"] = 500
        else:
            slow = near & (busy["route"] == "/api/search")
            busy.loc[slow, "duration_ms"] = busy.loc[slow, "duration_ms"] * 60
        parts.append(busy)
        # the client's view of a third of the busy requests: same times, one more hop
        seen = busy.sample(frac=0.3, random_state=d).sort_values("time", kind="stable")
        parts.append(seen.assign(source="client", duration_ms=seen["duration_ms"] + 1.5))
    # a poller that runs away for four minutes across the first midnight
    poll = pd.Timestamp(DAY0 + timedelta(days=1, seconds=-120)) + pd.to_timedelta(
        np.arange(0, 240, 0.25), unit="s"
    )
    parts.append(
        pd.DataFrame(
            {
                "time": poll,
                "source": "server",
                "kind": "http",
                "route": "/api/poll",
                "method": "GET",
                "status": np.full(len(poll), 200, "int16"),
                "duration_ms": 3.0,
                "client": "runaway",
            }
        )
    )
    load = _requests(rng, DAY0 + timedelta(days=1, seconds=-60), 120, 3000)
    parts.append(load.assign(run_id="stress-1", status=np.int16(500)))
    for part in parts:
        store.append(part)
    store.append(
        [
            {
                "time": DAY0 + timedelta(days=1, seconds=5),
                "source": "perfnb",
                "kind": "health",
                "name": "serverResponse",
                "value": 2.0,
                "unit": "state",
                "tags": {"state": "timeout", "previous": "good", "reason": "stored"},
            }
        ]
    )
    return store


def whole(store: Store, config: HealthConfig, start: Any = None, end: Any = None) -> list[Record]:
    """The reference: the whole range read into one frame and replayed at once."""
    frame = store.read(start, end, include_load=config.include_load, columns=COLUMNS)
    frame = frame[frame["source"] != "perfnb"]
    return HealthEngine(config).replay(frame)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build(tmp_path_factory.mktemp("pieces") / "store")


def test_faults_across_midnight_replay_the_same_in_pieces(store: Store) -> None:
    expected = whole(store, QUICK)
    alerts = {(r["name"], r["tags"]["state"]) for r in expected if r["kind"] == "alert"}
    # the story is there: each fault raised before midnight and cleared after it
    assert {("error_rate", "raised"), ("error_rate", "cleared")} <= alerts
    assert {("degradation", "raised"), ("runaway", "raised")} <= alerts
    burst = [r for r in expected if r["name"] == "error_rate"]
    assert burst[0]["time"].date() != burst[-1]["time"].date()
    # small pieces: many slices a day, a piece boundary inside every fault
    for rows in (400, 4999, 100_000):
        assert replay_range(store, config=QUICK, piece_rows=rows) == expected


def test_bounds_cut_inside_days(store: Store) -> None:
    start, end = "2026-03-01T23:57:30Z", "2026-03-03T00:01:10.5Z"
    expected = whole(store, QUICK, start, end)
    assert expected
    assert replay_range(store, start=start, end=end, config=QUICK, piece_rows=300) == expected


@pytest.mark.parametrize(
    ("start", "end"),
    [(None, "2026-03-02T00:02:00Z"), ("2026-03-02T23:58:00Z", None), (None, None)],
)
def test_open_bounds(store: Store, start: str | None, end: str | None) -> None:
    expected = whole(store, QUICK, start, end)
    assert expected
    assert replay_range(store, start=start, end=end, config=QUICK, piece_rows=400) == expected


def test_load_traffic_when_the_config_asks_for_it(store: Store) -> None:
    config = HealthConfig(**{**QUICK.to_dict(), "include_load": True})
    expected = whole(store, config)
    assert expected != whole(store, QUICK)  # the load run's 500s count now
    assert replay_range(store, config=config, piece_rows=500) == expected


def test_empty_ranges(store: Store, tmp_path: Path) -> None:
    assert replay_range(store, start="2026-02-01", end="2026-02-02", config=QUICK) == []
    # a range between stored records, inside a day
    assert replay_range(
        store, start="2026-03-02T12:00:00Z", end="2026-03-02T12:00:00.001Z", config=QUICK
    ) == whole(store, QUICK, "2026-03-02T12:00:00Z", "2026-03-02T12:00:00.001Z")
    assert replay_range(Store(tmp_path / "empty"), config=QUICK) == []


def test_bad_piece_rows_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="piece_rows: got 0"):
        replay_range(store, piece_rows=0)


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc"
)
def test_peak_memory_stays_bounded(tmp_path: Path) -> None:
    # ~300,000 rows over three days: read whole, the replay holds a frame and a
    # record dict per row at once; in pieces, a slice's frame and a few thousand dicts.
    root = tmp_path / "big"
    store = build(root, days=3, per_day=90_000, busy_s=1200)
    assert len(store.read(columns=["time"])) > 290_000
    # Each in a fresh process, with the system allocator and one malloc arena, so
    # the peak RSS growth is what the replay holds (see benchmarks/bench_health_replay.py).
    at_once = replay_in_child("whole", root, piece_rows=20_000)
    pieces = replay_in_child("pieces", root, piece_rows=20_000)
    assert pieces["records"] == at_once["records"] > 0
    assert pieces["digest"] == at_once["digest"]
    assert at_once["peak_kb"] > 6 * pieces["peak_kb"], (at_once, pieces)
