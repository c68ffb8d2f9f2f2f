"""Bottlenecks in load runs: the rules on made-up levels, the recorder on records, and the
real demo app with its slow-DB fault under a growing open-model load."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from perfnb.demo.process import DemoAppProcess
from perfnb.errors import ConfigError
from perfnb.feedclient import connect
from perfnb.load import Endpoint, Endpoints, LoadRun, Stages
from perfnb.load.bottleneck import Level, RouteFigures, Thresholds, find_bottleneck
from perfnb.load.capacity import CapacityResult
from perfnb.load.command import main_load
from perfnb.load.levels import LevelRecorder
from perfnb.schema import Record


def _fig(n: int, p95: float, *, errors: int = 0, db: float = 0.0, app: float = 1.0) -> RouteFigures:
    return RouteFigures(n, errors, p95, {"db": db, "app": app, "network": 0.5})


def test_the_route_that_degrades_at_the_lowest_level_is_named_with_its_cause() -> None:
    levels = [
        Level(10, {"GET /a": _fig(50, 10.0, db=2.0), "GET /b": _fig(50, 5.0)}),
        Level(20, {"GET /a": _fig(100, 11.0, db=2.5), "GET /b": _fig(100, 30.0, app=25.0)}),
        Level(40, {"GET /a": _fig(200, 90.0, db=80.0), "GET /b": _fig(200, 60.0, app=50.0)}),
    ]
    b = find_bottleneck(levels, unit="users")
    assert (b.route, b.level, b.cause) == ("GET /b", 20, "app")
    assert b.degraded_at == {"GET /a": 40, "GET /b": 20}
    assert b.baseline_level == 10
    assert b.baseline_p95_ms == 5.0
    assert "GET /b degraded first, at 20 users" in b.describe()
    assert len(b.levels) == 6  # one row per (level, route)


def test_a_blip_that_recovers_at_higher_load_is_not_a_degradation() -> None:
    levels = [
        Level(1, {"GET /a": _fig(50, 10.0)}),
        Level(2, {"GET /a": _fig(50, 40.0)}),  # one noisy level
        Level(3, {"GET /a": _fig(50, 11.0)}),
    ]
    b = find_bottleneck(levels, unit="req/s")
    assert not b.found
    assert b.why == "no route degraded up to 3 req/s"


def test_error_rate_growth_counts_and_small_p95_changes_do_not() -> None:
    levels = [
        Level(1, {"GET /a": _fig(100, 1.0), "GET /e": _fig(100, 1.0)}),
        # /a: 1 → 3 ms is 3×, but under the 10 ms minimum increase
        Level(2, {"GET /a": _fig(100, 3.0), "GET /e": _fig(100, 1.0, errors=20)}),
    ]
    b = find_bottleneck(levels, unit="req/s")
    assert b.route == "GET /e"
    assert b.why.startswith("error rate 20.0%")
    assert b.degraded_at["GET /a"] is None


def test_at_the_same_level_the_route_whose_p95_grew_most_in_ms_is_named() -> None:
    # on a busy machine a 2 ms route can triple while the real bottleneck doubles
    levels = [
        Level(1, {"GET /fast": _fig(100, 2.0), "GET /slow": _fig(100, 800.0, db=790.0)}),
        Level(2, {"GET /fast": _fig(100, 14.0), "GET /slow": _fig(100, 2000.0, db=1900.0)}),
    ]
    b = find_bottleneck(levels, unit="req/s")
    assert b.degraded_at == {"GET /fast": 2, "GET /slow": 2}
    assert b.route == "GET /slow"
    assert b.cause == "db"
    assert b.causes == {"GET /fast": "app", "GET /slow": "db"}


def test_levels_without_enough_requests_are_not_judged() -> None:
    levels = [Level(1, {"GET /a": _fig(3, 1.0)}), Level(2, {"GET /a": _fig(3, 100.0)})]
    assert find_bottleneck(levels, unit="req/s").why == "no level had enough requests to judge"


def test_thresholds_name_the_bad_field() -> None:
    with pytest.raises(ConfigError, match=r"p95_factor=0\.5"):
        Thresholds(p95_factor=0.5)
    with pytest.raises(ConfigError, match="min_requests=0"):
        Thresholds(min_requests=0)


def _records(run_id: str, t0: int, seconds: int, *, slow_from: int) -> Iterator[Record]:
    """A made-up open-model run: 10 req/s per second of the run on /a and /b; /b's db
    time and p95 grow from ``slow_from`` on; one detail record per route and second."""
    for i in range(seconds):
        sec = t0 + i
        when = datetime.fromtimestamp(sec, tz=UTC)
        for route in ("/a", "/b"):
            slow = route == "/b" and i >= slow_from
            p95 = 200.0 if slow else 10.0
            for name, value in (("requests", 20.0), ("errors", 0.0), ("p95_ms", p95)):
                yield {
                    "time": when,
                    "source": "load",
                    "kind": "load",
                    "route": route,
                    "method": "GET",
                    "name": name,
                    "value": value,
                    "run_id": run_id,
                }
            yield {
                "time": datetime.fromtimestamp(sec + 0.25, tz=UTC),
                "source": "load",
                "kind": "http",
                "route": route,
                "method": "GET",
                "status": 200,
                "duration_ms": p95 - 1.0,
                "app_ms": p95 - 2.0,
                "db_ms": p95 - 5.0 if route == "/b" else 1.0,
                "server_ms": p95 - 2.0,
                "run_id": run_id,
            }


def test_the_recorder_cuts_a_stages_run_into_levels_by_its_shape() -> None:
    shape = Stages([(5, 10), (5, 40), (5, 80)], model="open", start=10)
    rec = LevelRecorder()
    seen: list[Record] = []
    rec.sink = seen.append
    other = list(_records("someone-else", 1_000, 3, slow_from=0))
    for r in [*other, *_records("run-1", 1_000, 15, slow_from=8)]:
        rec(r)
    assert rec.run_id == "someone-else"  # the first run seen, when none was given
    rec = LevelRecorder(run_id="run-1")
    rec.extend([*other, *_records("run-1", 1_000, 15, slow_from=8)])
    levels, unit = rec.levels(shape=shape)
    assert unit == "req/s"
    assert next(lv.value for lv in levels) == 10
    b = rec.bottleneck(shape=shape)
    assert b.route == "GET /b"
    assert b.level is not None
    assert 25 <= b.level <= 40
    assert b.cause == "db"
    assert b.breakdown["db"] == pytest.approx(195.0)


def test_the_recorder_never_raises_on_bad_records() -> None:
    rec = LevelRecorder(run_id="r")
    rec({"time": "not a time", "source": "load", "kind": "load", "run_id": "r"})  # type: ignore[typeddict-item]
    rec({"source": "load", "kind": "http", "run_id": "r"})  # type: ignore[typeddict-item]
    assert rec.ignored == 2
    assert not rec.bottleneck().found


# -- against the real demo app --------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoAppProcess]:
    home: Path = tmp_path_factory.mktemp("bottleneck-demo")
    app = DemoAppProcess(db=home / "demo.sqlite3", log=home / "demo.log")
    app.start()
    try:
        yield app
    finally:
        app.stop()


def _slow_db(url: str, ms: float) -> None:
    with httpx.Client(base_url=url, trust_env=False) as c:
        assert c.post("/api/admin/faults", json={"slow_db_ms": ms}).status_code == 200


def _control(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, trust_env=False) as c:
        doc: dict[str, Any] = c.get("/api/performance-metrics/control").json()
        return doc


def _seq(last_event_id: str | None) -> int:
    return int(last_event_id.rsplit(":", 1)[1]) if last_event_id else 0


def _signed_in(url: str, run_id: str) -> str:
    with httpx.Client(base_url=url, headers={"X-Perfnb-Run": run_id}, trust_env=False) as c:
        assert c.post("/api/guests", json={"name": "bottleneck"}).status_code == 201
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


@pytest.mark.slow
def test_a_stages_run_on_the_demo_names_the_slow_db_route_and_blames_the_db(
    demo: DemoAppProcess,
) -> None:
    # The slow-DB fault delays every database call by 100 ms on the app's worker threads
    # (40 of them, so 400 calls/s at most): /api/cards makes two calls, so past ~20 users
    # in it at once its requests queue for a thread; /api/health touches no database.
    run_id = "bottleneck-demo-1"
    cookie = _signed_in(demo.url, run_id)
    _slow_db(demo.url, 100)
    try:
        scenario = Endpoints(
            [
                Endpoint("GET", "/api/health", route="/api/health"),
                Endpoint("GET", "/api/cards", route="/api/cards"),
            ],
            headers=(("Cookie", cookie),),
        )
        # closed model: 10, 40, then 160 users, each going round health and cards
        shape = Stages([(4, 10), (1, 40), (4, 40), (1, 160), (4, 160)], model="closed", start=10)
        levels = LevelRecorder(run_id=run_id)
        # the app's own records of the run: past 200 requests/s the engine keeps no
        # per-request records, and the time split comes from these
        feed = connect(demo.url, sink=levels, since="now")
        try:
            assert feed.wait_for(lambda c: c.connected, timeout=30.0)
            result = LoadRun(demo.url, scenario, shape, run_id=run_id, workers=1, sink=levels)
            result = result.start().wait()
            last = _control(demo.url)["seq"]
            assert feed.wait_for(lambda c: _seq(c.last_event_id) >= last, timeout=30.0)
        finally:
            feed.close()
    finally:
        _slow_db(demo.url, 0)
    result.bottleneck = levels.bottleneck(shape=shape)
    b = result.bottleneck
    table = "\n".join(map(str, b.levels))
    assert b.route == "GET /api/cards", f"{b.describe()}\n{table}"
    assert b.level in (40, 160), table
    assert b.unit == "users"
    assert b.cause == "db"
    assert b.breakdown["db"] > b.baseline_breakdown["db"] > 190  # two 100 ms calls at least
    held = b.degraded_at["GET /api/health"]
    assert held is None or held >= b.level
    assert "GET /api/cards degraded first" in result.table()
    assert result.to_json()["bottleneck"]["cause"] == "db"


@pytest.mark.slow
def test_perfnb_load_prints_the_bottleneck(
    demo: DemoAppProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main_load(
        [
            "--target",
            demo.url,
            "--preset",
            "api_stress",
            "--rate",
            "40",
            "--duration",
            "3s",
            "--workers",
            "1",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    import json

    doc = json.loads(out)
    # a constant rate is one level: nothing to compare, and the summary says so
    assert doc["bottleneck"]["found"] is False
    assert doc["bottleneck"]["why"].startswith("the run held one level of load (40 req/s)")


def test_capacity_result_carries_a_bottleneck_in_its_json() -> None:
    b = find_bottleneck([], unit="req/s")
    cap = CapacityResult(0.0, "", "", {}, [], bottleneck=b)
    assert cap.to_json()["bottleneck"]["found"] is False


def test_a_run_read_back_from_the_store_gives_the_same_bottleneck(tmp_path: Path) -> None:
    from perfnb.store import Store

    records = list(_records("run-s", 1_700_000_000, 15, slow_from=8))
    shape = Stages([(5, 10), (5, 40), (5, 80)], model="open", start=10)
    direct = LevelRecorder(run_id="run-s")
    direct.extend(records)
    store = Store(tmp_path / "store")
    store.append(records)
    frame = store.read(run_ids=["run-s"], include_load=True)
    assert len(frame) == len(records)
    again = LevelRecorder(run_id="run-s")
    again.extend(frame.to_dict("records"))
    assert again.ignored == 0
    a, b = direct.bottleneck(shape=shape), again.bottleneck(shape=shape)
    assert (b.route, b.level, b.cause) == (a.route, a.level, a.cause)
    assert b.breakdown == pytest.approx(a.breakdown, rel=1e-3)


@pytest.mark.parametrize(
    "module",
    ["perfnb.load.bottleneck", "perfnb.load.levels", "perfnb.load.result", "perfnb.load.command"],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
