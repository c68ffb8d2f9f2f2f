"""Baselines and regressions: the tests on bucket counts, the flags, and baselines in a store."""

from __future__ import annotations

import doctest
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfnb.analysis import compare as compare_module
from perfnb.analysis import profile as profile_module
from perfnb.analysis import ranktests as ranktests_module
from perfnb.analysis.compare import (
    Profile,
    RouteStats,
    Thresholds,
    compare,
    compare_profiles,
    delete_baseline,
    list_baselines,
    load_baseline,
    mann_whitney,
    measure,
    rate_test,
    save_baseline,
    two_proportion_test,
)
from perfnb.analysis.sketch import LatencySketch
from perfnb.errors import ConfigError, StoreError
from perfnb.store import Store

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def frame(
    start: datetime,
    seconds: float,
    durations: dict[str, np.ndarray],
    *,
    error_share: float = 0.0,
    run_id: str | None = None,
    source: str = "server",
    seed: int = 0,
) -> pd.DataFrame:
    """Server http records spread evenly over ``seconds`` from ``start``."""
    rng = np.random.default_rng(seed)
    parts = []
    for route, values in durations.items():
        n = len(values)
        offsets = np.sort(rng.uniform(0, seconds, n))
        failed = rng.random(n) < error_share
        parts.append(
            pd.DataFrame(
                {
                    "time": pd.Timestamp(start) + pd.to_timedelta(offsets, unit="s"),
                    "source": source,
                    "kind": "http",
                    "route": route,
                    "method": "GET",
                    "status": np.where(failed, 500, 200).astype("int16"),
                    "duration_ms": np.round(values, 3),
                    "run_id": run_id,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.mark.parametrize("module", [compare_module, profile_module, ranktests_module])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


# -- the tests on bucket counts ---------------------------------------------------------


def exact_u(a: np.ndarray, b: np.ndarray) -> float:
    """U for "b is larger", counted over every pair (ties ½)."""
    a = np.sort(a)
    below = np.searchsorted(a, b, side="left")
    ties = np.searchsorted(a, b, side="right") - below
    return float(np.sum(below + 0.5 * ties))


def test_rank_test_from_buckets_matches_the_test_on_raw_values() -> None:
    rng = np.random.default_rng(11)
    a = rng.lognormal(3.0, 0.5, 3000)
    b = rng.lognormal(3.05, 0.5, 2500)
    test = mann_whitney(LatencySketch.of(a), LatencySketch.of(b))
    pairs = a.size * b.size
    exact = exact_u(a, b)
    # bucketing turns near neighbours into ties: the statistic barely moves
    assert test.prob_greater == pytest.approx(exact / pairs, abs=0.003)
    sd = math.sqrt(pairs * (a.size + b.size + 1) / 12)
    assert test.z == pytest.approx((exact - pairs / 2 - 0.5) / sd, abs=0.15)
    assert test.cliffs_delta == pytest.approx(2 * test.prob_greater - 1)


def test_rank_test_counts_zero_durations_below_everything() -> None:
    before = LatencySketch.of([0.0] * 50 + [5.0] * 50)
    after = LatencySketch.of([5.0] * 100)
    test = mann_whitney(before, after)
    assert test.prob_greater == pytest.approx(0.75)  # ½·1 + ½·½
    assert test.p_greater < 1e-6


def test_rank_test_of_identical_buckets_finds_nothing() -> None:
    same = LatencySketch.of([7.0] * 40)
    test = mann_whitney(same, same.copy())
    assert test.p_greater == 1.0
    assert test.cliffs_delta == 0.0


def test_rank_test_with_an_empty_side_is_nan() -> None:
    assert math.isnan(mann_whitney(LatencySketch(), LatencySketch.of([1.0])).p_greater)


def test_known_latency_shift_is_flagged_with_p_below_alpha() -> None:
    rng = np.random.default_rng(5)
    before = Profile.of({"/api/cards": rng.lognormal(3.0, 0.4, 1500)}, seconds=300)
    after = Profile.of({"/api/cards": rng.lognormal(3.0, 0.4, 1500) * 1.3}, seconds=300)
    row = compare_profiles(before, after).iloc[0]
    assert row["status"] == "compared"
    assert row["regression"]
    assert row["latency_p"] < 0.01
    assert row["p95_ratio"] == pytest.approx(1.3, rel=0.08)
    assert row["cliffs_delta"] > 0.2
    assert "p95" in row["reason"]
    assert "error" not in row["reason"]


def test_same_distribution_false_positive_rate_is_near_alpha() -> None:
    """Over 400 seeds, p < alpha about alpha of the time, and no route is ever flagged."""
    alpha = 0.05
    significant = flagged = 0
    small_p = []
    for seed in range(400):
        rng = np.random.default_rng(1000 + seed)
        durations = rng.lognormal(2.5, 0.6, 600)
        before, after = LatencySketch.of(durations[:300]), LatencySketch.of(durations[300:])
        p = mann_whitney(before, after).p_greater
        significant += p < alpha
        small_p.append(p < 0.5)
        if seed < 100:  # the whole comparison, on a quarter of the seeds (it is slower)
            profiles = [
                Profile(routes={"/r": RouteStats(300, 0, s)}, seconds=60) for s in (before, after)
            ]
            row = compare_profiles(*profiles, thresholds=Thresholds(alpha=alpha)).iloc[0]
            assert row["latency_p"] == p
            flagged += bool(row["regression"])
    # binomial(400, 0.05): mean 20, sd 4.4 — the band is ±2.5 sd
    assert 9 <= significant <= 31, significant
    # the p-values are uniform: about half fall below 0.5
    assert 0.42 <= np.mean(small_p) <= 0.58
    # a flag also needs p95 ≥ 1.2× baseline, which two samples of one law rarely reach
    assert flagged <= 2


def test_error_rate_regression_is_flagged_by_the_proportion_test() -> None:
    rng = np.random.default_rng(2)
    values = rng.lognormal(2.0, 0.3, 4000)
    before = Profile.of({"/pay": values[:2000]}, errors={"/pay": 10}, seconds=60)
    after = Profile.of({"/pay": values[2000:]}, errors={"/pay": 80}, seconds=60)
    row = compare_profiles(before, after).iloc[0]
    assert row["regression"]
    assert row["error_rate_delta"] == pytest.approx(0.035)
    assert row["error_p"] < 1e-6
    assert row["reason"].startswith("error rate 4.0% vs 0.5%")


def test_small_error_bump_below_the_delta_is_not_flagged() -> None:
    values = np.random.default_rng(3).lognormal(2.0, 0.3, 20000)
    before = Profile.of({"/r": values[:10000]}, errors={"/r": 100}, seconds=60)
    after = Profile.of({"/r": values[10000:]}, errors={"/r": 150}, seconds=60)
    row = compare_profiles(before, after).iloc[0]
    assert row["error_p"] < 0.01  # significant, but only +0.5 points
    assert not row["regression"]


def test_throughput_drop_is_flagged_and_can_be_switched_off() -> None:
    values = np.random.default_rng(4).lognormal(2.0, 0.3, 3000)
    before = Profile.of({"/r": values[:2000]}, seconds=60)
    after = Profile.of({"/r": values[2000:]}, seconds=60)
    row = compare_profiles(before, after).iloc[0]
    assert row["throughput_ratio"] == pytest.approx(0.5)
    assert row["regression"]
    assert "throughput 0.50×" in row["reason"]
    off = compare_profiles(before, after, thresholds=Thresholds(throughput_ratio=None)).iloc[0]
    assert not off["regression"]


def test_routes_on_one_side_only_are_reported_not_flagged() -> None:
    rng = np.random.default_rng(6)
    before = Profile.of(
        {"/old": rng.lognormal(2, 0.3, 100), "/both": rng.lognormal(2, 0.3, 100)}, seconds=60
    )
    after = Profile.of(
        {"/new": rng.lognormal(4, 0.3, 100), "/both": rng.lognormal(2, 0.3, 100)}, seconds=60
    )
    out = compare_profiles(before, after).set_index("route")
    assert out.loc["/new", "status"] == "new"
    assert out.loc["/old", "status"] == "gone"
    assert out.loc["/both", "status"] == "compared"
    assert not out["regression"].any()
    assert math.isnan(out.loc["/new", "base_p95_ms"])
    assert out.loc["/old", "count"] == 0
    assert out.loc["/new", "reason"] == "not in the baseline"


def test_too_few_requests_are_not_judged() -> None:
    before = Profile.of({"/r": [10.0] * 10}, seconds=60)
    after = Profile.of({"/r": [100.0] * 10}, seconds=60)
    row = compare_profiles(before, after, thresholds=Thresholds(min_count=30)).iloc[0]
    assert row["status"] == "too_few"
    assert not row["regression"]
    assert "10 < min_count 30" in row["reason"]


def test_frame_is_sorted_regressions_first_and_typed() -> None:
    rng = np.random.default_rng(8)
    before = Profile.of({f"/r{i}": rng.lognormal(2, 0.3, 300) for i in range(4)}, seconds=60)
    after = Profile.of(
        {f"/r{i}": rng.lognormal(2, 0.3, 300) * (2.0 if i == 2 else 1.0) for i in range(4)},
        seconds=60,
    )
    out = compare_profiles(before, after)
    assert list(out.columns) == list(compare_module.COLUMNS)
    assert out.iloc[0]["route"] == "/r2"
    assert out["regression"].dtype == bool
    assert out["regression"].sum() == 1


def test_empty_profiles_give_an_empty_frame_with_the_columns() -> None:
    out = compare_profiles(Profile(routes={}, seconds=1), Profile(routes={}, seconds=1))
    assert out.empty
    assert list(out.columns) == list(compare_module.COLUMNS)


def test_proportion_and_rate_tests_on_edges() -> None:
    assert two_proportion_test(0, 100, 0, 100) == 1.0
    assert math.isnan(two_proportion_test(0, 0, 1, 10))
    assert two_proportion_test(50, 1000, 10, 1000) > 0.99  # fewer errors: not higher
    assert math.isnan(rate_test(0, 10, 0, 10))
    assert rate_test(100, 10, 100, 10) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p95_ratio", 0),
        ("error_rate_delta", 2.0),
        ("throughput_ratio", -1.0),
        ("alpha", 0.0),
        ("alpha", math.nan),
        ("min_count", 0),
        ("min_count", 2.5),
        ("min_count", True),
    ],
)
def test_bad_thresholds_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got"):
        Thresholds(**{field: value})  # type: ignore[arg-type]


# -- baselines in a store ----------------------------------------------------------------


def test_save_compare_round_trip_over_real_parquet(store: Store) -> None:
    rng = np.random.default_rng(9)
    calm = {
        "/api/cards/{card_id}": rng.lognormal(2.5, 0.4, 3000),
        "/api/search": rng.lognormal(4.0, 0.5, 800),
    }
    slow = {
        "/api/cards/{card_id}": rng.lognormal(2.5, 0.4, 3000) * 1.5,
        "/api/search": rng.lognormal(4.0, 0.5, 800),
    }
    store.append(frame(T0, 600, calm, seed=1))
    store.append(frame(T0 + timedelta(hours=1), 600, slow, seed=2))
    saved = save_baseline(store, "calm", start=T0, end=T0 + timedelta(minutes=10))
    assert saved.seconds == 600
    assert saved.routes["/api/cards/{card_id}"].count == 3000

    loaded = load_baseline(store, "calm")
    assert loaded.name == "calm"
    assert loaded.start == T0
    assert set(loaded.routes) == set(calm)
    for route, stats in loaded.routes.items():
        assert stats.sketch.quantiles([0.5, 0.95]) == saved.routes[route].sketch.quantiles(
            [0.5, 0.95]
        )

    later = T0 + timedelta(hours=1)
    out = compare(store, "calm", start=later, end=later + timedelta(minutes=10)).set_index("route")
    assert bool(out.loc["/api/cards/{card_id}", "regression"])
    assert out.loc["/api/cards/{card_id}", "latency_p"] < 0.01
    assert not out.loc["/api/search", "regression"]
    assert out.loc["/api/search", "throughput_ratio"] == pytest.approx(1.0)
    assert out.attrs["baseline"] == "calm"


def test_stored_sketches_are_within_one_percent_of_exact_quantiles(store: Store) -> None:
    rng = np.random.default_rng(12)
    values = {"/a": rng.lognormal(1.0, 1.2, 20000), "/b": rng.exponential(40.0, 5000)}
    store.append(frame(T0, 3600, values, seed=3))
    profile = measure(store, start=T0, end=T0 + timedelta(hours=1))
    exact = store.sql(
        "SELECT route, quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q FROM events "
        "GROUP BY route"
    ).set_index("route")
    for route in values:
        estimate = profile.routes[route].sketch.quantiles([0.5, 0.95, 0.99])
        assert estimate == pytest.approx(list(exact.loc[route, "q"]), rel=0.01)
        assert profile.routes[route].sketch.count == len(values[route])


def test_baseline_of_a_load_run_against_another_run(store: Store) -> None:
    rng = np.random.default_rng(13)
    store.append(frame(T0, 30, {"/api": rng.lognormal(2, 0.3, 3000)}, run_id="run-a", seed=4))
    store.append(
        frame(
            T0 + timedelta(minutes=5),
            30,
            {"/api": rng.lognormal(2, 0.3, 1500)},
            run_id="run-b",
            seed=5,
        )
    )
    store.append(frame(T0, 600, {"/api": rng.lognormal(5, 0.3, 500)}, seed=6))  # real traffic
    base = save_baseline(store, "run-a", run_id="run-a")
    assert base.routes["/api"].count == 3000  # the run only, not the real traffic
    assert base.seconds == pytest.approx(30, abs=0.5)  # first to last record of the run
    row = compare(store, "run-a", run_id="run-b").iloc[0]
    assert row["throughput_ratio"] == pytest.approx(0.5, rel=0.05)
    assert row["regression"]
    assert "throughput" in row["reason"]
    assert "p95" not in row["reason"]


def test_only_the_asked_sources_are_measured(store: Store) -> None:
    rng = np.random.default_rng(14)
    store.append(frame(T0, 60, {"/api": rng.lognormal(2, 0.3, 100)}, seed=7))
    store.append(frame(T0, 60, {"/api": rng.lognormal(2, 0.3, 40)}, source="client", seed=8))
    assert measure(store, start=T0, end=T0 + timedelta(minutes=1)).routes["/api"].count == 100
    both = measure(store, start=T0, end=T0 + timedelta(minutes=1), sources=None)
    assert both.routes["/api"].count == 140


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/b", ".hidden", "-dash", "x" * 101, "sp ace", "a\\b", "é", 7]
)
def test_bad_names_are_refused_before_anything_is_written(store: Store, name: object) -> None:
    with pytest.raises(ConfigError, match=r"^name: got"):
        save_baseline(store, name)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^name: got"):
        load_baseline(store, name)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^name: got"):
        delete_baseline(store, name)  # type: ignore[arg-type]
    assert not (Path(store.root) / "baselines").exists()
    assert not (Path(store.root).parent / "escape.json").exists()


def test_list_load_delete_and_overwrite(store: Store) -> None:
    assert list_baselines(store) == []
    save_baseline(store, "b-2", start=T0, end=T0 + timedelta(hours=1))
    save_baseline(store, "a.1", start=T0, end=T0 + timedelta(hours=1), meta={"release": "1.4"})
    folder = Path(store.root) / "baselines"
    (folder / "notes.txt").write_text("not a baseline")
    assert list_baselines(store) == ["a.1", "b-2"]
    assert load_baseline(store, "a.1").meta["release"] == "1.4"
    assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"

    with pytest.raises(StoreError, match="baseline 'b-2' exists; pass overwrite=True"):
        save_baseline(store, "b-2")
    save_baseline(store, "b-2", start=T0, end=T0 + timedelta(hours=2), overwrite=True)
    assert load_baseline(store, "b-2").seconds == 7200

    delete_baseline(store, "b-2")
    assert list_baselines(store) == ["a.1"]
    with pytest.raises(StoreError, match=r"baseline 'b-2': not found; saved baselines: a\.1"):
        load_baseline(store, "b-2")
    with pytest.raises(StoreError, match="baseline 'nope': not found"):
        delete_baseline(store, "nope")
    with pytest.raises(StoreError, match="not found"):
        compare(store, "nope", start=T0, end=T0 + timedelta(hours=1))


def test_a_damaged_baseline_file_is_a_clear_error(store: Store) -> None:
    folder = Path(store.root) / "baselines"
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    (folder / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreError, match=r"baseline 'broken': .* is not JSON"):
        load_baseline(store, "broken")
    with pytest.raises(StoreError, match="baseline 'other': format: got 'something-else'"):
        load_baseline(store, "other")


def test_saving_a_baseline_leaves_the_detail_untouched(store: Store) -> None:
    store.append(frame(T0, 60, {"/api": np.full(50, 3.0)}, seed=9))
    before = sorted(p.name for p in Path(store.root, "events").rglob("*.parquet"))
    save_baseline(store, "x", start=T0, end=T0 + timedelta(minutes=1))
    after = sorted(p.name for p in Path(store.root, "events").rglob("*.parquet"))
    assert before == after
    assert len(store.read()) == 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": "yesterday"}, "^start: got 'yesterday'"),
        ({"start": datetime(2026, 1, 1)}, "^start: got naive"),
        ({"start": T0, "end": T0}, "^end: got"),
        ({"run_id": ""}, "^run_id: got ''"),
    ],
)
def test_bad_windows_name_the_argument(store: Store, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        measure(store, **kwargs)  # type: ignore[arg-type]


def test_empty_period_measures_nothing(store: Store) -> None:
    profile = measure(store, start=T0, end=T0 + timedelta(minutes=1))
    assert profile.routes == {}
    assert profile.seconds == 60


def test_sketch_buckets_from_sql_agree_with_numpy(store: Store) -> None:
    values = np.round(np.random.default_rng(15).lognormal(0.0, 2.0, 5000), 3)
    values[:20] = 0.0
    store.append(frame(T0, 60, {"/x": values}, seed=10))
    from_sql = measure(store, start=T0, end=T0 + timedelta(minutes=1)).routes["/x"].sketch
    direct = LatencySketch.of(values)
    assert from_sql.count == direct.count
    assert from_sql.zeros == direct.zeros == 20
    keys_sql, counts_sql = from_sql.to_arrays()
    keys_np, counts_np = direct.to_arrays()
    # DuckDB's ln and NumPy's log may differ in the last bit right on a bucket bound
    moved = np.abs(np.repeat(keys_sql, counts_sql) - np.repeat(keys_np, counts_np))
    assert moved.max() <= 1
    assert np.count_nonzero(moved) <= 5


def test_whole_days_are_read_from_daily_summaries_and_agree_with_detail(store: Store) -> None:
    rng = np.random.default_rng(16)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    values = {"/a": rng.lognormal(2.0, 0.8, 4000), "/b": rng.lognormal(3.0, 0.5, 1000)}
    store.append(frame(day, 86_000, values, error_share=0.02, seed=11))
    store.append(frame(day, 600, {"/a": rng.lognormal(2, 0.3, 300)}, run_id="r1", seed=12))
    window = {"start": day, "end": day + timedelta(days=1)}
    from_summaries = measure(store, **window)
    from_detail = measure(store, **window, use_summaries=False)
    assert from_summaries.meta["read_from"] == "summaries"
    assert from_detail.meta["read_from"] == "detail"
    assert set(from_summaries.routes) == set(from_detail.routes) == {"/a", "/b"}
    for route, stats in from_summaries.routes.items():
        other = from_detail.routes[route]
        assert (stats.count, stats.errors) == (other.count, other.errors)
        assert stats.sketch.quantiles([0.5, 0.95, 0.99]) == pytest.approx(
            other.sketch.quantiles([0.5, 0.95, 0.99]), rel=0.016
        )
    run = measure(store, **window, run_id="r1")
    assert run.routes["/a"].count == 300
    with pytest.raises(ConfigError, match=r"^use_summaries: True needs"):
        measure(store, start=day, end=day + timedelta(hours=1), use_summaries=True)
