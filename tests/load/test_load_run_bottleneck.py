"""Every load run judges its bottleneck, and the per-second records carry the Server-Timing
split, so the judgement holds at rates where the engine keeps no per-request records."""

from __future__ import annotations

import pytest
from load_target import TargetApp

from perfnb.load import ConstantRate, Endpoint, Endpoints, LoadRun, Stages
from perfnb.load.bottleneck import find_bottleneck
from perfnb.load.levels import LevelRecorder
from perfnb.load.records import detail_record, second_records
from perfnb.load.runner import _judged
from perfnb.load.stats import Stats
from perfnb.schema import Record, validate_record

_SECOND = 1_700_000_000


def _stats(n: int, *, app: float, db: float, duration_us: int = 4_000) -> Stats:
    stats = Stats()
    for i in range(n):
        stats.add(
            _SECOND * 1_000_000 + i * 1_000,
            "/a",
            "GET",
            200,
            duration_us,
            duration_us // 2,
            10,
            "",
            "",
            duration_us + 1_000,  # open model: sent 1 ms after its intended time
            f"app;dur={app}, db;dur={db}",
        )
    return stats


def test_per_second_records_carry_the_server_timing_means_and_the_queue() -> None:
    stats = _stats(50, app=3.0, db=2.0)
    cell = stats.cells[(_SECOND, "/a", "GET")]
    records = list(second_records(_SECOND, "/a", "GET", cell, run_id="r", open_model=True))
    for r in records:
        validate_record(r)
    by_name = {r["name"]: r for r in records}
    timing = by_name["server_timing"]
    assert timing["value"] == 50
    assert "duration_ms" not in timing  # an aggregate must not count as a request
    assert {k: float(v) for k, v in timing["tags"].items()} == {
        "client_ms": 4.0,
        "server_ms": 3.0,
        "app_ms": 3.0,
        "db_ms": 2.0,
    }
    queue = by_name["queue_ms"]
    assert queue["value"] == pytest.approx(1.0, rel=0.01)
    assert queue["tags"] == {"requests": "50"}
    closed = {r["name"] for r in second_records(_SECOND, "/a", "GET", cell, run_id="r")}
    assert "queue_ms" not in closed


def test_the_recorder_splits_time_from_the_aggregates_and_prefers_them_to_details() -> None:
    everything = _stats(40, app=3.0, db=2.0)
    cell = everything.cells[(_SECOND, "/a", "GET")]
    aggregates = list(second_records(_SECOND, "/a", "GET", cell, run_id="r", open_model=True))
    # per-request records of the same second that say otherwise: the aggregate covers
    # every request of the second, the details only those kept, so the aggregate wins
    few = _stats(5, app=9.0, db=8.0).details
    details: list[Record] = [detail_record(d, run_id="r") for d in few]
    alone = LevelRecorder(run_id="r")
    alone.extend(aggregates)
    both = LevelRecorder(run_id="r")
    both.extend([*details, *aggregates])
    for rec in (alone, both):
        (level,), _unit = rec.levels()
        parts = level.routes["GET /a"].parts
        assert parts["db"] == pytest.approx(2.0)
        assert parts["app"] == pytest.approx(1.0)
        assert parts["network"] == pytest.approx(1.0)
        assert parts["queueing"] == pytest.approx(1.0, rel=0.01)


def test_a_run_with_too_little_data_reports_no_bottleneck() -> None:
    assert _judged(find_bottleneck([], unit="req/s")) is None


@pytest.mark.slow
def test_a_growing_run_carries_its_bottleneck_and_its_time_split_without_details(
    target: TargetApp,
) -> None:
    records: list[Record] = []
    # gentle enough that no second holds a step of the load (those are left out of levels)
    shape = Stages([(6, 300)], model="open", start=60)
    run = LoadRun(
        target.url,
        Endpoints([Endpoint("GET", "/a", route="/a")]),
        shape,
        workers=1,
        sink=records.append,
        detail_rate=1.0,  # past 1 request/s no request is kept: the aggregates must do
    )
    result = run.start().wait(timeout=60)
    assert result.stop.reason == "completed"
    details = [r for r in records if r["kind"] == "http"]
    assert len(details) < 0.1 * result.total.count
    timing = [r for r in records if r.get("name") == "server_timing"]
    assert sum(r["value"] for r in timing) == result.total.count
    b = result.bottleneck
    assert b is not None
    assert b.unit == "req/s"
    rows = [row for row in b.levels if row["requests"] >= 10]
    assert len({row["level"] for row in rows}) >= 3
    # the target answers "app;dur=1.5, db;dur=0.5" on every response
    for row in rows:
        assert row["db_ms"] == pytest.approx(0.5)
        assert row["app_ms"] == pytest.approx(1.0)
        assert row["network_ms"] >= 0.0
    assert run.levels.run_id == result.run_id
    assert result.to_json()["bottleneck"]["unit"] == "req/s"


@pytest.mark.slow
def test_a_level_recorder_given_as_the_sink_is_the_one_the_run_judges_from(
    target: TargetApp,
) -> None:
    levels = LevelRecorder(run_id="given-recorder")
    run = LoadRun(
        target.url,
        Endpoints([Endpoint("GET", "/a", route="/a")]),
        ConstantRate(50, duration=3),
        run_id="given-recorder",
        workers=1,
        sink=levels,
    )
    assert run.levels is levels
    result = run.start().wait(timeout=60)
    assert result.bottleneck is not None
    assert not result.bottleneck.found
    assert result.bottleneck.why.startswith("the run held one level of load")
    assert levels.bottleneck().levels  # the run's records reached the caller's recorder
