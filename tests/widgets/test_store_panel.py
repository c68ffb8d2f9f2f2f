"""The retention and export panel over a real store in tmp_path, driven through its buttons."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from perfnb.store import Store
from perfnb.widgets.storepanel import StorePanel, human_bytes

pytest.importorskip("ipywidgets")

TODAY = datetime.now(UTC).date()


def _day_records(day: date, n: int = 20) -> list[dict[str, object]]:
    start = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
    return [
        {
            "time": start + timedelta(seconds=i),
            "source": "server",
            "kind": "http",
            "route": "/api/cards/{card_id}" if i % 2 else "=HYPERLINK(1)",
            "method": "GET",
            "status": 200,
            "duration_ms": 1.0 + i,
        }
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    for age in (0, 1, 2, 35, 40):
        store.append(_day_records(TODAY - timedelta(days=age)))
    return store


def test_the_table_lists_every_day_with_its_size(store: Store) -> None:
    panel = StorePanel(store)
    for age in (0, 1, 2, 35, 40):
        assert (TODAY - timedelta(days=age)).isoformat() in panel.table.value
    assert "5 day(s)" in panel.table.value


def test_dry_run_touches_nothing_and_names_what_would_go(store: Store) -> None:
    panel = StorePanel(store)
    panel.dry_button.click()
    plan = panel.plan
    assert plan is not None
    old = (TODAY - timedelta(days=40), TODAY - timedelta(days=35))
    assert plan.delete_detail == old
    assert "frees" in panel.plan_view.value
    assert len(store.days()) == 5


def test_apply_needs_the_confirmation_then_keeps_exactly_the_window(store: Store) -> None:
    panel = StorePanel(store)
    panel.apply_button.click()
    panel.wait(60)
    assert "I mean it" in panel.plan_view.value
    assert len(store.days()) == 5  # nothing happened without the tick

    panel.confirm.value = True
    panel.apply_button.click()
    panel.wait(60)
    result = panel.last_result
    assert result is not None, panel.plan_view.value
    assert result.deleted_detail == (TODAY - timedelta(days=40), TODAY - timedelta(days=35))
    assert store.days() == [TODAY - timedelta(days=age) for age in (2, 1, 0)]
    # the old days live on as verified summaries
    summaries = store.summaries(
        datetime.combine(TODAY - timedelta(days=41), datetime.min.time(), UTC), None
    )
    assert int(summaries["count"].sum()) == 5 * 20
    assert panel.confirm.value is False
    assert "Applied" in panel.plan_view.value


def test_export_writes_the_range_with_safe_csv_cells(store: Store, tmp_path: Path) -> None:
    panel = StorePanel(store, exports=tmp_path / "exports")
    panel.start.value = TODAY - timedelta(days=2)
    panel.end.value = TODAY - timedelta(days=1)
    panel.path.value = str(tmp_path / "exports" / "two-days.csv")
    panel.export_button.click()
    panel.wait(60)
    result = panel.last_export
    assert result is not None, panel.export_view.value
    assert result.rows == 40
    assert panel.progress.value == panel.progress.max == 40
    with open(result.path, newline="", encoding="utf-8") as handle:
        routes = {row["route"] for row in csv.DictReader(handle)}
    assert routes == {"/api/cards/{card_id}", "'=HYPERLINK(1)"}


def test_choosing_a_format_changes_the_file_suffix(store: Store) -> None:
    panel = StorePanel(store)
    panel.format.value = "jsonl"
    assert panel.path.value.endswith(".jsonl")


def test_human_bytes() -> None:
    assert human_bytes(10) == "10 B"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
