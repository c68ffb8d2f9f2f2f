"""The store on object storage: a real S3 endpoint (moto's server) on 127.0.0.1.

The module starts ``moto.server`` on a free port, points the usual AWS environment
variables at it and creates one bucket; each test works under a prefix of its own.
The append log stays in ``tmp_path``; day files, summaries and intents go to the
bucket.
"""

from __future__ import annotations

import doctest
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.arrow import ArrowFSWrapper
from report_support import T0 as REPORT_T0
from report_support import fill
from s3_support import BUCKET, Endpoint, moto_s3
from store_helpers import http

from perfnb.analysis.compare import list_baselines, load_baseline, save_baseline
from perfnb.errors import StoreError
from perfnb.report import build_report
from perfnb.store import Store, objects
from perfnb.store.export import main_export, read_export
from perfnb.store.retention import main_retention

CHILD = Path(__file__).with_name("s3_child.py")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def open_store(name: str, tmp_path: Path, **options: Any) -> Store:
    return Store(f"s3://{BUCKET}/{name}", wal_dir=tmp_path / "wal", **options)


# -- writing and reading ---------------------------------------------------------------


def test_round_trip_through_a_bucket(s3: Endpoint, tmp_path: Path) -> None:
    records = [http(i) for i in range(300)]
    store = open_store("roundtrip", tmp_path)
    assert store.objects
    assert store.fs.type_name == "s3"
    assert store.append(records[:100]) == 100
    with store.writer(flush_every=70) as writer:
        writer.extend(records[100:])
    local = Store(tmp_path / "local")
    local.append(records)

    frame = store.read()
    assert frame.equals(local.read())
    assert store.days() == local.days() == [date(2026, 3, 1)]
    assert store.sql("SELECT count(*) AS n FROM events")["n"][0] == 300
    assert store.route_summary()["count"].sum() == 300
    # Only whole day files in the bucket: no temporary names, no directory markers.
    keys = s3.keys("roundtrip")
    assert keys, "nothing was written to the bucket"
    for key in keys:
        assert key.startswith("roundtrip/events/date=2026-03-01/"), key
        assert key.endswith(".parquet"), key
        assert "/." not in key, key
    # The append log stayed on the local disk, and is empty once the writer closed.
    assert sorted(p.name for p in (tmp_path / "wal").iterdir()) == ["STORE"]


def test_the_append_log_lives_in_the_local_cache_by_default(
    s3: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    one = Store(f"s3://{BUCKET}/cache-one")
    two = Store(f"s3://{BUCKET}/cache-two")
    assert one.wal_dir.parent == two.wal_dir.parent == tmp_path / "cache" / "perfnb" / "wal"
    assert one.wal_dir != two.wal_dir
    assert Store(f"s3://{BUCKET}/cache-one/").wal_dir == one.wal_dir
    # A writer killed before its flush is replayed into its own store by the next open.
    writer = one.writer(flush_every=1000, flush_seconds=3600)
    writer.extend(http(i) for i in range(20))
    assert writer._segment is not None
    writer._segment.close(delete=False)  # abandoned as a killed process leaves it
    writer._segment = None
    assert Store(f"s3://{BUCKET}/cache-one").recovered == 20
    assert len(Store(f"s3://{BUCKET}/cache-one").read()) == 20
    with pytest.raises(StoreError, match="append log of another store"):
        Store(f"s3://{BUCKET}/cache-two", wal_dir=one.wal_dir)


def test_endpoint_and_options_can_be_given_to_the_store(
    s3: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = open_store("options", tmp_path, storage_options={"endpoint_url": s3.url})
    store.append([http(1)])
    host = s3.url.removeprefix("http://")
    again = Store(
        f"s3://{BUCKET}/options?endpoint_override={host}&scheme=http",
        wal_dir=tmp_path / "wal",
    )
    assert len(again.read()) == 1


def test_bad_roots_and_options_are_named(s3: Endpoint, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        Store("s3://no-such-bucket/x", wal_dir=tmp_path / "w1")
    with pytest.raises(StoreError, match="storage_options"):
        open_store("x", tmp_path, storage_options={"no_such_option": 1})
    with pytest.raises(StoreError, match="unknown option 'colour'"):
        Store(f"s3://{BUCKET}/x?colour=red", wal_dir=tmp_path / "w2")
    with pytest.raises(StoreError, match="storage_options: only URI roots"):
        Store(tmp_path / "local", storage_options={"region": "x"})


# -- history: summaries, retention, export ---------------------------------------------

TODAY = date(2026, 6, 30)


def _day_records(age: int, count: int) -> list[dict[str, Any]]:
    noon = datetime.combine(TODAY - timedelta(days=age), datetime.min.time(), UTC)
    return [
        http(i, at=noon + timedelta(hours=12, seconds=i), duration_ms=1.0 + age + i % 5)
        for i in range(count)
    ]


def build_days(store: Store, days: int) -> dict[date, int]:
    """``days`` days before TODAY with a few records each, in two files a day."""
    expected: dict[date, int] = {}
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for age in range(days):
        records = _day_records(age, 5 + age % 4)
        first.extend(records[:3])
        second.extend(records[3:])
        expected[TODAY - timedelta(days=age)] = len(records)
    store.append(first)
    store.append(second)
    return expected


def test_summary_retention_and_export_against_the_bucket(s3: Endpoint, tmp_path: Path) -> None:
    store = open_store("history", tmp_path)
    expected = build_days(store, 9)
    assert len(store.close_days(today=TODAY)) == 8  # every closed day, summarised
    summed = store.summary(by=("date",))
    assert dict(zip(summed["date"], summed["count"], strict=True)) == expected

    plan = store.retention(detail_days=3, summary_days=6, today=TODAY)
    assert plan.compact == tuple(TODAY - timedelta(days=a) for a in (2, 1))
    result = plan.apply()
    assert result.blocked == {}
    assert result.problems == {}
    assert len(result.deleted_detail) == 6
    assert len(result.deleted_summaries) == 3

    again = open_store("history", tmp_path)
    assert again.days() == [TODAY - timedelta(days=a) for a in (2, 1, 0)]
    kept = {d: n for d, n in expected.items() if (TODAY - d).days < 6}
    summed = again.summary(by=("date",))
    assert dict(zip(summed["date"], summed["count"], strict=True)) == kept
    assert again.partitions()["detail_files"].tolist() == [0, 0, 0, 1, 1, 2]
    keys = s3.keys("history")
    assert not [k for k in keys if "retention" in k or "compact" in k]
    summaries = sorted(k for k in keys if k.endswith("/summary.parquet"))
    # Every day kept (all of them past days for the clock: reads summarised TODAY too).
    assert len(summaries) == 6

    out = tmp_path / "out.jsonl"
    exported = again.export(out, progress=False)
    assert exported.rows == sum(n for d, n in expected.items() if (TODAY - d).days < 3)
    assert read_export(out).equals(again.read())


def test_the_commands_take_a_bucket(
    s3: Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store("commands", tmp_path)
    expected = build_days(store, 5)
    root = f"s3://{BUCKET}/commands"
    args = ["--store", root, "--detail-days", "2", "--summary-days", "4"]
    assert main_retention([*args, "--today", TODAY.isoformat(), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["root"] == f"{BUCKET}/commands"
    assert len(plan["delete_detail"]) == 3
    out = tmp_path / "all.csv"
    assert main_export(["--store", root, "--out", str(out), "--no-progress"]) == 0
    assert len(read_export(out)) == sum(expected.values())


def test_baselines_are_kept_in_the_bucket(s3: Endpoint, tmp_path: Path) -> None:
    store = open_store("baselines", tmp_path)
    build_days(store, 3)
    saved = save_baseline(store, "before", start=TODAY - timedelta(days=2), end=TODAY)
    assert list_baselines(store) == ["before"]
    loaded = load_baseline(store, "before").routes
    assert {r: s.count for r, s in loaded.items()} == {r: s.count for r, s in saved.routes.items()}
    assert "baselines/before.json" in {k.split("/", 1)[1] for k in s3.keys("baselines")}


class _BrokenUpload:
    """A filesystem whose upload fails after publishing part of the object, as pyarrow can."""

    def __init__(self, objects: dict[str, int]) -> None:
        self.objects = objects

    def open_output_stream(self, path: str) -> _BrokenUpload:
        self.path = path
        return self

    def write(self, data: bytes) -> None:
        self.objects[self.path] = len(data) // 2  # the part sent before the failure
        raise OSError("connection reset")

    def get_file_info(self, path: str) -> pafs.FileInfo:
        if path in self.objects:
            return pafs.FileInfo(path, pafs.FileType.File, size=self.objects[path])
        return pafs.FileInfo(path, pafs.FileType.NotFound)

    def delete_file(self, path: str) -> None:
        del self.objects[path]


def test_a_failed_upload_leaves_no_torn_object_under_a_new_name() -> None:
    fs = _BrokenUpload({"b/old.parquet": 10})
    with pytest.raises(OSError, match="connection reset"):
        objects.put_whole(fs, "b/new.parquet", b"x" * 100, fresh=True)  # type: ignore[arg-type]
    assert fs.objects == {"b/old.parquet": 10}
    # An object that replaces another (a summary) is never deleted on a failure.
    with pytest.raises(OSError, match="connection reset"):
        objects.put_whole(fs, "b/old.parquet", b"x" * 100, fresh=False)  # type: ignore[arg-type]
    assert "b/old.parquet" in fs.objects


@pytest.mark.slow
def test_the_post_mortem_report_reads_a_bucket(
    s3: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the default wal_dir
    root = f"s3://{BUCKET}/report"
    fill(root, minutes=3, per_minute=200)
    end = REPORT_T0 + timedelta(minutes=3)
    report = build_report(root, REPORT_T0, end, out=tmp_path / "r.html")
    assert report.charts[:2] == ["timeline", "slowest"]
    html = report.html.read_text(encoding="utf-8")
    assert html.count("Plotly.newPlot") == len(report.charts)


# -- raw readers -----------------------------------------------------------------------


def test_duckdb_over_the_bucket_agrees_with_read(s3: Endpoint, tmp_path: Path) -> None:
    store = open_store("duckdb", tmp_path)
    build_days(store, 6)
    with store.writer(flush_every=40) as writer:
        writer.extend(http(i, status=500 if i % 9 == 0 else 200) for i in range(500))
    store.compact(TODAY - timedelta(days=2))
    con = duckdb.connect()
    con.register_filesystem(ArrowFSWrapper(store.fs))
    glob = f"s3://{BUCKET}/duckdb/events/*/*.parquet"
    raw = con.sql(
        f"""SELECT date, time, route, status, request_bytes,
                   CAST(duration_ms * 1000 AS BIGINT) AS duration_us
            FROM read_parquet('{glob}', hive_partitioning = true)
            ORDER BY time, request_bytes"""
    ).df()
    frame = store.read().sort_values(["time", "request_bytes"], kind="stable")
    assert len(raw) == len(frame) == 500 + sum(5 + age % 4 for age in range(6))
    assert raw["time"].tolist() == frame["time"].tolist()
    assert raw["request_bytes"].tolist() == frame["request_bytes"].tolist()
    assert raw["status"].tolist() == frame["status"].tolist()
    assert raw["route"].tolist() == frame["route"].astype(str).tolist()
    assert raw["duration_us"].tolist() == (frame["duration_ms"] * 1000).round().astype(int).tolist()
    assert [d.date() for d in raw["date"]] == frame["time"].dt.date.tolist()


# -- kills and concurrency ---------------------------------------------------------------


def _spawn(mode: str, root: str, wal: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, root, str(wal), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _acknowledged(child: subprocess.Popen[str], *, until: int) -> tuple[set[int], str]:
    """Numbers the child printed (read until ``until`` of them, or it died), and its last line."""
    assert child.stdout is not None
    numbers: set[int] = set()
    last = ""
    deadline = time.monotonic() + 60
    while len(numbers) < until and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        last = line.strip()
        if last.isdigit():
            numbers.add(int(last))
    return numbers, last


def _kill(child: subprocess.Popen[str]) -> set[int]:
    """SIGKILL the child; the numbers it printed before dying."""
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.stdout is not None
    return {int(x) for x in child.stdout.read().split() if x.isdigit()}


@pytest.mark.slow
def test_kills_during_uploads_show_no_partial_file_and_lose_nothing_acknowledged(
    s3: Endpoint, tmp_path: Path
) -> None:
    root, wal = f"s3://{BUCKET}/kills", tmp_path / "wal"
    acknowledged: set[int] = set()
    rng = random.Random(5)
    for round_ in range(3):
        # A busy writer killed at a random moment: its converter is mid-upload more often than not.
        child = _spawn("write", root, wal, "killed", str(round_ * 1_000_000))
        numbers, _ = _acknowledged(child, until=rng.randrange(1_000, 3_000))
        acknowledged |= numbers | _kill(child)
    # One killed for sure in the middle of a multi-part upload of a batch.
    child = _spawn("upload-kill", root, wal, "killed", "9000000")
    numbers, last = _acknowledged(child, until=10**9)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert last.startswith("killing in the upload of"), last
    torn = last.rsplit(" ", 1)[1]
    acknowledged |= numbers

    # Every object in the bucket is a whole Parquet file, and none of the torn batch.
    keys = s3.keys("kills")
    assert torn.removeprefix(f"{BUCKET}/") not in keys
    for key in keys:
        assert key.endswith(".parquet"), key
        pq.read_metadata(f"{BUCKET}/{key}", filesystem=s3.fs)
    store = Store(root, wal_dir=wal)
    numbers_read = store.read(columns=["service", "request_bytes"])
    assert set(numbers_read["service"]) == {"killed"}, "rows of a batch never acknowledged"
    stored = numbers_read["request_bytes"].tolist()
    assert len(stored) == len(set(stored)), "duplicated rows"
    assert acknowledged <= set(stored)
    assert list(wal.glob("*.log")) == []
    con = duckdb.connect()
    con.register_filesystem(ArrowFSWrapper(store.fs))
    glob = f"s3://{BUCKET}/kills/events/*/*.parquet"
    raw = con.execute(f"SELECT count(*), count(DISTINCT request_bytes) FROM '{glob}'").fetchone()
    assert raw == (len(stored), len(stored))


@pytest.mark.slow
def test_retention_with_a_concurrent_reader_never_loses_a_count(
    s3: Endpoint, tmp_path: Path
) -> None:
    store = open_store("concurrent", tmp_path)
    expected = build_days(store, 9)
    # Half the closed days are summarised already; retention writes the others it keeps.
    for age in range(1, 9, 2):
        store.summarize(TODAY - timedelta(days=age))
    detail, summary = 2, 5
    lines: queue.Queue[str] = queue.Queue()
    broken: list[str] = []
    readers: list[subprocess.Popen[str]] = []

    def rounds(count: int) -> None:
        """Wait until the reader has finished ``count`` more rounds of reads."""
        while count:
            line = lines.get(timeout=60)
            count -= line == "pass"
            if line not in ("pass", "ready"):
                broken.append(line)

    def start_reader() -> None:
        reader = _spawn(
            "read",
            f"s3://{BUCKET}/concurrent",
            tmp_path / "reader-wal",
            json.dumps({d.isoformat(): n for d, n in expected.items()}),
            TODAY.isoformat(),
            str(detail),
            str(summary),
        )
        output = reader.stdout
        assert output is not None
        threading.Thread(target=lambda: [lines.put(x.strip()) for x in output]).start()
        readers.append(reader)

    deleted: dict[str, int] = {}

    def step(event: str, target: str) -> None:
        # The reader starts once the deletions are decided and reads the whole store
        # once before the first, and again after the first deletion of each day's
        # files, which leaves the day half deleted (a round under way, then a whole one).
        if event == "intent":
            start_reader()
            rounds(1)
        elif event == "delete" and "/events/" in target:
            folder = target.rsplit("/", 1)[0]
            deleted[folder] = deleted.get(folder, 0) + 1
            if deleted[folder] == 1:
                rounds(2)

    result = store.retention(detail_days=detail, summary_days=summary, today=TODAY).apply(
        progress=step
    )
    rounds(1)
    (reader,) = readers
    assert reader.stdin is not None
    reader.stdin.close()
    reader.wait(timeout=60)
    while not lines.empty():
        if (line := lines.get()) != "pass":
            broken.append(line)
    assert result.blocked == {}
    assert sorted(deleted.values()) == [2] * 7, "every deleted day went in two steps"
    assert broken[-1].startswith("reads "), broken
    assert broken[:-1] == [], "counts broke while retention ran"

    after = open_store("concurrent", tmp_path)
    summed = after.summary(by=("date",))
    kept = {d: n for d, n in expected.items() if (TODAY - d).days < summary}
    assert dict(zip(summed["date"], summed["count"], strict=True)) == kept
    assert [(TODAY - d).days for d in after._history.summary_days()] == list(range(4, -1, -1))


def test_the_examples_in_the_objects_module_run() -> None:
    assert doctest.testmod(objects).failed == 0
