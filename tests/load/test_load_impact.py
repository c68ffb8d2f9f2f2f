"""The cost of watching: monitoring off/on through the control endpoint, against the real
demo app, with the statistics checked on their own."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from perfnb.demo.process import DemoAppProcess
from perfnb.errors import ConfigError
from perfnb.feedclient import connect
from perfnb.load import Endpoint, Endpoints
from perfnb.load.impact import _abba, main_impact, measure_impact
from perfnb.load.paired import paired_difference, t_quantile
from perfnb.schema import Record

CONTROL = "/api/performance-metrics/control"


def test_t_quantiles_match_the_tables() -> None:
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=2e-3)
    assert t_quantile(0.975, 5) == pytest.approx(2.571, abs=1e-3)
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=1e-3)
    with pytest.raises(ConfigError, match="df=0"):
        t_quantile(0.975, 0)


def test_phases_alternate_in_abba_order() -> None:
    assert _abba(3) == [(0, False), (0, True), (1, True), (1, False), (2, False), (2, True)]


def test_the_interval_is_a_paired_t_interval_around_the_mean_difference() -> None:
    pairs = [(100.0, 110.0), (200.0, 212.0), (150.0, 158.0)]  # diffs 10, 12, 8
    d = paired_difference("p50", "µs", pairs, 0.95)
    assert d.diff == pytest.approx(10.0)
    half = t_quantile(0.975, 2) * 2.0 / 3**0.5  # sd of (10, 12, 8) is 2
    assert (d.low, d.high) == pytest.approx((10 - half, 10 + half))
    assert d.pct == pytest.approx((10 + 6 + 16 / 3) / 3)
    assert d.off == pytest.approx(150.0)
    assert d.on == pytest.approx(160.0)


def test_wrong_options_name_the_field() -> None:
    scenario = Endpoints([Endpoint("GET", "/")])
    with pytest.raises(ConfigError, match="rounds=1"):
        measure_impact("http://127.0.0.1:9", preset_or_scenario=scenario, rounds=1)
    with pytest.raises(ConfigError, match="'no_such_preset'"):
        measure_impact("http://127.0.0.1:9", preset_or_scenario="no_such_preset")
    with pytest.raises(ConfigError, match="users=2 and rate=5"):
        measure_impact("http://127.0.0.1:9", preset_or_scenario=scenario, users=2, rate=5)


def test_a_non_loopback_target_is_refused_before_any_load() -> None:
    from perfnb.errors import TargetError

    with pytest.raises(TargetError):
        measure_impact("http://192.0.2.1:80", preset_or_scenario=Endpoints([Endpoint("GET", "/")]))


# -- against the real demo app --------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoAppProcess]:
    home: Path = tmp_path_factory.mktemp("impact-demo")
    app = DemoAppProcess(db=home / "demo.sqlite3", log=home / "demo.log")
    app.start()
    try:
        yield app
    finally:
        app.stop()


def _control(url: str, changes: dict[str, object] | None = None) -> dict[str, object]:
    with httpx.Client(base_url=url, trust_env=False) as c:
        r = c.get(CONTROL) if changes is None else c.post(CONTROL, json=changes)
        assert r.status_code == 200, r.text
        doc: dict[str, object] = r.json()
        return doc


@pytest.mark.slow
def test_impact_on_the_demo_toggles_monitoring_and_restores_the_state(
    demo: DemoAppProcess,
) -> None:
    # a control state of our own, to see it put back exactly
    kinds = ["http", "overhead", "process"]
    _control(demo.url, {"enabled": True, "kinds": kinds, "sample": 1.0})
    records: list[Record] = []
    feed = connect(demo.url, sink=records.append, since="oldest")
    try:
        result = measure_impact(
            demo.url,
            preset_or_scenario=Endpoints([Endpoint("GET", "/api/health")]),
            rounds=3,
            seconds=1.0,
            warmup=0.5,
            rate=150,
            run_id="impact-test",
        )
        state = _control(demo.url)
        assert (state["enabled"], state["kinds"], state["sample"]) == (True, kinds, 1.0)
        assert result.restored == {"enabled": True, "kinds": kinds, "sample": 1.0}
        for d in (result.p50, result.p95, result.throughput):
            assert d.low <= d.diff <= d.high
            assert d.pct_low <= d.pct <= d.pct_high
        assert result.method == "paired t-interval over rounds (2 df)"
        assert result.toggled
        on_ids = {p.run_id for p in result.phases if p.monitoring}
        off_ids = {p.run_id for p in result.phases if not p.monitoring}
        assert len(on_ids) == len(off_ids) == 3
        assert all(p.records >= p.requests for p in result.phases if p.monitoring)
        assert all(p.records == 0 for p in result.phases if not p.monitoring)
        # the app's own records: every "on" phase is there, no "off" phase is
        last_on = max(p.run_id for p in result.phases if p.monitoring)
        assert feed.wait_for(
            lambda _c: any(r.get("run_id") == last_on for r in records), timeout=30.0
        )
        # (the clean-up at the end asks the app to drop each phase's data, with its run id
        # on the request: only the load's own route counts here)
        seen = {
            r.get("run_id")
            for r in records
            if r.get("source") == "server" and r.get("route") == "/api/health"
        }
        assert on_ids <= seen
        assert not off_ids & seen
        assert "toggled as asked" in result.table()
    finally:
        feed.close()
        _control(demo.url, {"enabled": True, "kinds": None, "sample": 1.0})


@pytest.mark.slow
def test_a_failure_mid_measurement_still_restores_the_state(demo: DemoAppProcess) -> None:
    _control(demo.url, {"enabled": True, "kinds": None, "sample": 0.5})
    try:
        # workers=-1 is refused when the first phase's run is built, after monitoring was
        # switched for it
        with pytest.raises(ConfigError, match="workers=-1"):
            measure_impact(
                demo.url,
                preset_or_scenario=Endpoints([Endpoint("GET", "/api/health")]),
                rounds=2,
                seconds=1.0,
                warmup=0,
                workers=-1,
            )
        state = _control(demo.url)
        assert (state["enabled"], state["sample"]) == (True, 0.5)
    finally:
        _control(demo.url, {"sample": 1.0})


@pytest.mark.slow
def test_perfnb_impact_command(demo: DemoAppProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code = main_impact(
        [
            "--target",
            demo.url,
            "--path",
            "/api/health",
            "--rounds",
            "2",
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--rate",
            "100",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "paired t-interval" in out
    assert "p95" in out
    assert main_impact(["--target", demo.url]) == 2
    assert "give --preset" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["perfnb.load.impact", "perfnb.load.paired"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
