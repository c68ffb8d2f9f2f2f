"""Retention over 200 synthetic days: exact windows, verified summaries, kills at any step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from perfnb.errors import ConfigError
from perfnb.store import Store
from perfnb.store.retention import main_retention

TODAY = date(2026, 6, 30)
DAYS = 200
DETAIL, SUMMARY = 30, 183
CHILD = Path(__file__).with_name("retention_child.py")


def day(age: int) -> date:
    return TODAY - timedelta(days=age)


def rows_on(age: int) -> int:
    """Records stored on the day ``age`` days before TODAY (varies, so counts tell days apart)."""
    return 2 + age % 3


def build(root: Path) -> dict[date, int]:
    """200 days of a few records each; every seventh day in two files. Returns rows per day."""
    store = Store(root)
    records: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    expected: dict[date, int] = {}
    for age in range(DAYS):
        noon = datetime.combine(day(age), datetime.min.time(), UTC) + timedelta(hours=12)
        for i in range(rows_on(age)):
            records.append(
                {
                    "time": noon + timedelta(seconds=i),
                    "source": "server",
                    "kind": "http",
                    "route": f"/r{i}",
                    "status": 200,
                    "duration_ms": 1.0 + age + i,
                }
            )
        expected[day(age)] = rows_on(age)
        if age % 7 == 3:
            extra.append({"time": noon, "source": "load", "kind": "http", "run_id": f"r{age}"})
            expected[day(age)] += 1
    store.append(records)
    store.append(extra)
    return expected


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[date, int]]:
    root = tmp_path_factory.mktemp("pristine") / "store"
    return root, build(root)


@pytest.fixture(scope="module")
def summarised(
    pristine: tuple[Path, dict[date, int]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The 200 days with every closed day summarised, as days closing leave a store."""
    root = tmp_path_factory.mktemp("summarised") / "store"
    shutil.copytree(pristine[0], root)
    Store(root).close_days(today=TODAY)
    return root


@pytest.fixture
def copy(
    tmp_path: Path, pristine: tuple[Path, dict[date, int]], summarised: Path
) -> Callable[..., Path]:
    """A copy of the 200 days to work on: without summaries, or with all but ``unsummarised``."""

    def make(name: str, *, summaries: bool = False, unsummarised: range = range(0)) -> Path:
        target = tmp_path / name
        shutil.copytree(summarised if summaries else pristine[0], target)
        for age in unsummarised:
            (target / "daily" / f"date={day(age)}" / "summary.parquet").unlink()
        return target

    return make


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def summary_days(root: Path) -> set[date]:
    return {date.fromisoformat(p.parent.name[5:]) for p in root.glob("daily/*/summary.parquet")}


def summary_count(root: Path, on: date) -> int:
    path = root / "daily" / f"date={on}" / "summary.parquet"
    return sum(pq.read_table(path).column("count").to_pylist())


def detail_counts(store: Store) -> dict[date, int]:
    """Rows per day of the whole detail, read in one go."""
    times = store.read(include_load=True, columns=["time"])["time"]
    return {d: int(n) for d, n in times.dt.date.value_counts().items()}


def assert_nothing_due_is_lost(root: Path, expected: dict[date, int]) -> None:
    """Days in the detail window have all their rows; older ones in the summary window
    have all their rows or a summary counting them."""
    store = Store(root)
    present = detail_counts(store)  # every file left reads
    summarised = summary_days(root)
    for on, rows in expected.items():
        age = (TODAY - on).days
        if age < DETAIL:
            assert present.get(on) == rows, on
        elif age < SUMMARY and present.get(on) != rows:
            assert on in summarised, f"{on} lost its detail without a summary"
            assert summary_count(root, on) == rows, on


def test_dry_run_changes_nothing_and_lists_what_would_go(
    copy: Callable[..., Path], pristine: tuple[Path, dict[date, int]]
) -> None:
    root = copy("dry")
    before = listing(root)
    plan = Store(root).retention(detail_days=DETAIL, summary_days=SUMMARY, today=TODAY)
    assert listing(root) == before
    assert plan.delete_detail == tuple(sorted(day(a) for a in range(DETAIL, DAYS)))
    assert set(plan.summarize) == {day(a) for a in range(DETAIL, SUMMARY)}
    assert set(plan.summarize.values()) == {"no summary"}
    assert plan.delete_summaries == ()  # none written yet
    assert plan.compact == tuple(sorted(day(a) for a in range(1, DETAIL) if a % 7 == 3))
    old = [p for p in root.glob("events/*/*.parquet") if (TODAY - _day_of(p)).days >= DETAIL]
    assert plan.detail_bytes == sum(p.stat().st_size for p in old) > 0
    assert plan.to_dict()["bytes_freed"] == plan.bytes_freed


def _day_of(path: Path) -> date:
    return date.fromisoformat(path.parent.name[5:])


def test_exactly_the_configured_windows_remain(
    copy: Callable[..., Path], pristine: tuple[Path, dict[date, int]]
) -> None:
    root = copy("apply", summaries=True)
    expected = pristine[1]
    store = Store(root)
    plan = store.retention(detail_days=DETAIL, summary_days=SUMMARY, today=TODAY)
    assert plan.delete_summaries == tuple(sorted(day(a) for a in range(SUMMARY, DAYS)))
    assert plan.summarize == {}
    result = plan.apply()
    assert result.blocked == {}
    assert result.problems == {}
    assert set(result.compacted) == set(plan.compact)
    assert result.bytes_freed == plan.bytes_freed
    assert store.days() == sorted(day(a) for a in range(DETAIL))
    assert summary_days(root) == {day(a) for a in range(1, SUMMARY)}  # today is still open
    for age in range(DETAIL, SUMMARY):
        assert summary_count(root, day(age)) == expected[day(age)]
    assert_nothing_due_is_lost(root, expected)
    # Compacted days keep their summary fresh; totals over the window stay exact.
    assert len(list((root / "events" / f"date={day(3)}").glob("*.parquet"))) == 1
    total = store.summary(by=(), kinds=None, include_load=True)["count"][0]
    assert total == sum(rows for on, rows in expected.items() if (TODAY - on).days < SUMMARY)
    again = store.retention(detail_days=DETAIL, summary_days=SUMMARY, today=TODAY)
    assert (again.delete_detail, again.delete_summaries, again.compact) == ((), (), ())


def test_retention_writes_and_verifies_summaries_before_deleting(
    copy: Callable[..., Path], pristine: tuple[Path, dict[date, int]]
) -> None:
    root = copy("verify", summaries=True, unsummarised=range(DETAIL, 60))
    broken = day(40)
    # A file where the day's summary directory should be: its summary cannot be written.
    shutil.rmtree(root / "daily" / f"date={broken}")
    (root / "daily" / f"date={broken}").write_text("in the way")
    store = Store(root)
    plan = store.retention(detail_days=DETAIL, summary_days=SUMMARY, today=TODAY)
    assert broken in plan.summarize
    result = plan.apply()
    assert list(result.blocked) == [broken]
    assert "could not be written" in result.blocked[broken]
    assert broken in store.days()
    assert detail_counts(store)[broken] == pristine[1][broken]
    assert set(result.summarized) == {day(a) for a in range(DETAIL, 60)} - {broken}
    assert store.days() == sorted([broken, *(day(a) for a in range(DETAIL))])
    assert_nothing_due_is_lost(root, pristine[1])
    # Once the obstacle is gone, the next run finishes the job.
    (root / "daily" / f"date={broken}").unlink()
    assert store.retention(today=TODAY).apply().blocked == {}
    assert broken not in store.days()
    assert summary_count(root, broken) == pristine[1][broken]


def test_windows_are_checked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(ConfigError, match="detail_days: got 0"):
        store.retention(detail_days=0)
    with pytest.raises(ConfigError, match="summary_days: got 10; expected at least detail_days"):
        store.retention(detail_days=30, summary_days=10)
    with pytest.raises(ConfigError, match="summary_days: got True"):
        store.retention(summary_days=True)


def test_cli_dry_run_json_then_apply_with_a_table(
    copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy("cli", summaries=True)
    before = listing(root)
    common = ["--store", str(root), "--today", TODAY.isoformat(), "--detail-days", "10"]
    assert main_retention([*common, "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True
    assert len(out["plan"]["delete_detail"]) == DAYS - 10
    assert "result" not in out
    assert listing(root) == before
    assert main_retention(common) == 0
    text = capsys.readouterr().out
    assert "delete detail" in text
    assert f"{DAYS - 10:>6}" in text
    assert "deleted the detail of 190 days" in text
    assert len(Store(root).days()) == 10
    assert main_retention(["--store", str(root), "--detail-days", "0"]) == 2
    assert "detail_days: got 0" in capsys.readouterr().err


# -- killed in the middle ----------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(summarised: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The summarised 200 days but for three whose summaries retention must write first."""
    root = tmp_path_factory.mktemp("prepared") / "store"
    shutil.copytree(summarised, root)
    for age in range(DETAIL, DETAIL + 3):
        (root / "daily" / f"date={day(age)}" / "summary.parquet").unlink()
    return root


def _events(prepared: Path, scratch: Path) -> list[str]:
    """The steps an uninterrupted run takes, in order."""
    root = scratch / "events-run"
    shutil.copytree(prepared, root)
    steps: list[str] = []
    Store(root).retention(today=TODAY).apply(progress=lambda e, t: steps.append(f"{e} {t}"))
    return steps


def _kill_at(root: Path, index: int) -> str:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), TODAY.isoformat(), str(DETAIL), str(SUMMARY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        for _ in range(index):
            assert child.stdout.readline()
            child.stdin.write("go\n")
            child.stdin.flush()
        step = child.stdout.readline().strip()  # taken; the next one never starts
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    return step


@pytest.mark.slow
def test_a_kill_at_any_step_loses_nothing_due_and_a_rerun_finishes(
    prepared: Path, pristine: tuple[Path, dict[date, int]], tmp_path: Path
) -> None:
    steps = _events(prepared, tmp_path)
    kinds = [s.split(" ", 1)[0] for s in steps]
    deletes = [i for i, k in enumerate(kinds) if k == "delete"]
    summary_deletes = [i for i in deletes if "/daily/" in steps[i]]
    assert summary_deletes, "the scenario deletes old summaries too"
    points = {
        "first summary written": kinds.index("summarize"),
        "a compaction": kinds.index("compact"),
        "intent written": kinds.index("intent"),
        "half the files deleted": deletes[len(deletes) // 2],
        "a summary deleted": summary_deletes[0],
    }
    for label, index in points.items():
        root = tmp_path / label.replace(" ", "-")
        shutil.copytree(prepared, root)
        step = _kill_at(root, index)
        assert step == steps[index].replace(str(tmp_path / "events-run"), str(root)), label
        assert_nothing_due_is_lost(root, pristine[1])  # opening finishes a left intent
        assert not (root / "_retention.json").exists(), label
        result = Store(root).retention(today=TODAY).apply()
        assert result.blocked == {}, label
        store = Store(root)
        assert store.days() == sorted(day(a) for a in range(DETAIL)), label
        assert summary_days(root) == {day(a) for a in range(1, SUMMARY)}, label
        for age in range(DETAIL, SUMMARY):
            assert summary_count(root, day(age)) == pristine[1][day(age)], (label, age)


def test_a_day_half_deleted_by_retention_keeps_its_summary_for_readers(
    copy: Callable[..., Path], pristine: tuple[Path, dict[date, int]]
) -> None:
    # Retention deletes a day's files one by one; a reader in between sees only some
    # of them. The verified summary must stand for the whole day, not be rebuilt.
    root = copy("half-deleted", summaries=True)
    on = day(DETAIL + 1)  # a day of two files (every seventh day)
    files = sorted((root / "events" / f"date={on}").glob("*.parquet"))
    assert len(files) == 2
    summary = root / "daily" / f"date={on}" / "summary.parquet"
    written = summary.read_bytes()
    files[0].unlink()
    store = Store(root)
    counts = store.summary(by=("date",), kinds=None, include_load=True)
    assert dict(zip(counts["date"], counts["count"], strict=True))[on] == pristine[1][on]
    assert store.close_days(today=TODAY) == []
    assert summary.read_bytes() == written
    assert store._history.verify(on) is None  # the rest may still go


def test_reads_store_no_summary_of_a_day_retention_is_deleting(
    copy: Callable[..., Path], pristine: tuple[Path, dict[date, int]]
) -> None:
    # A day past both windows goes without a summary. A read in the middle must not
    # write one from the files left: it would undercount, and outlive the detail.
    root = copy("retiring")
    on = day(SUMMARY + 2)  # a day of two files, past both windows
    files = sorted((root / "events" / f"date={on}").glob("*.parquet"))
    assert len(files) == 2
    store = Store(root)  # a reader that opened the store before retention began
    intent = {"detail": {on.isoformat(): [p.name for p in files]}, "summaries": []}
    (root / "_retention.json").write_text(json.dumps({**intent, "pid": 1, "host": "elsewhere"}))
    files[0].unlink()
    counts = store.summary(by=("date",), kinds=None, include_load=True)
    assert dict(zip(counts["date"], counts["count"], strict=True))[on] < pristine[1][on]
    assert store.close_days(today=TODAY) == []
    assert not (root / "daily" / f"date={on}").exists()
