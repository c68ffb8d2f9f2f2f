"""Resume points: a feed's batch and its mark are kept together, through kills and replays."""

from __future__ import annotations

import mmap
import os
import shutil
from pathlib import Path

import pytest
from store_helpers import http

from perfnb.errors import StoreError
from perfnb.store import Store, StoreWriter
from perfnb.store.resume import ResumePoints
from perfnb.store.wal import HEADER, _frames

FEED = "http://127.0.0.1:8000/api/performance-metrics/stream"


def _batch(start: int, count: int) -> list[dict[str, object]]:
    return [http(i) for i in range(start, start + count)]


def _abandon(writer: StoreWriter) -> None:
    """Leave the writer's segment as a killed process would: unlocked, not deleted."""
    assert writer._segment is not None
    writer._segment.close(delete=False)
    writer._segment = None


def _numbers(store: Store) -> list[int]:
    return sorted(int(n) for n in store.read()["request_bytes"])


def test_a_batch_and_its_mark_are_stored_together(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.writer(flush_every=10_000, flush_seconds=3600) as writer:
        for n in range(3):
            assert writer.commit(_batch(n * 10, 10), key=FEED, mark={"token": f"t{n}"}) == 10
        assert writer.resume_points.get(FEED) == {"key": FEED, "n": 2, "token": "t2"}
    assert _numbers(Store(tmp_path)) == list(range(30))
    (saved,) = (tmp_path / "_wal" / "feeds").glob("*.json")
    assert ResumePoints(tmp_path / "_wal").get(FEED) == {"key": FEED, "n": 2, "token": "t2"}
    assert not saved.name.startswith(".")


def test_a_killed_writer_is_replayed_with_the_mark_of_its_last_batch(tmp_path: Path) -> None:
    writer = Store(tmp_path).writer(flush_every=10_000, flush_seconds=3600)
    for n in range(3):
        writer.commit(_batch(n * 10, 10), key=FEED, mark={"token": f"t{n}"})
    _abandon(writer)
    assert ResumePoints(tmp_path / "_wal").get(FEED) is None, "nothing converted yet"
    again = Store(tmp_path)
    assert again.recovered == 30
    assert ResumePoints(again.wal_dir).get(FEED) == {"key": FEED, "n": 2, "token": "t2"}
    # a new writer continues the count, so its marks replace the recovered one
    with again.writer() as writer:
        writer.commit(_batch(30, 1), key=FEED, mark={"token": "t3"})
    assert ResumePoints(again.wal_dir).get(FEED) == {"key": FEED, "n": 3, "token": "t3"}
    assert _numbers(Store(tmp_path)) == list(range(31))


def test_a_frame_torn_by_a_kill_loses_its_batch_and_its_mark_together(tmp_path: Path) -> None:
    writer = Store(tmp_path).writer(flush_every=10_000, flush_seconds=3600)
    writer.commit(_batch(0, 10), key=FEED, mark={"token": "t0"})
    writer.commit(_batch(10, 10), key=FEED, mark={"token": "t1"})
    _abandon(writer)
    (segment,) = (tmp_path / "_wal").glob("*.log")
    # A kill in the middle of the second frame leaves its type unwritten (it goes last).
    with segment.open("r+b") as f, mmap.mmap(f.fileno(), 0) as data:
        frames, back = _frames(data)
        newest_payload = frames[-1][2]
        data[back + len(newest_payload) + HEADER.size - 2 : back + len(newest_payload) + 8] = (
            b"\0\0"
        )
        del frames, newest_payload
    again = Store(tmp_path)
    assert _numbers(again) == list(range(10))
    assert ResumePoints(again.wal_dir).get(FEED) == {"key": FEED, "n": 0, "token": "t0"}


def test_a_mark_without_records_is_kept_too(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.writer(flush_every=10_000, flush_seconds=3600)
    assert writer.commit([], key=FEED, mark={"token": "dropped-to-9"}) == 0
    _abandon(writer)
    assert ResumePoints(Store(tmp_path).wal_dir).get(FEED) == {
        "key": FEED,
        "n": 0,
        "token": "dropped-to-9",
    }
    with Store(tmp_path).writer() as writer:
        writer.commit([], key=FEED, mark={"token": "dropped-to-12"})
    assert ResumePoints(tmp_path / "_wal").get(FEED)["token"] == "dropped-to-12"  # type: ignore[index]
    assert not list((tmp_path / "_wal").glob("*.log"))


def test_replay_after_a_crash_between_parquet_and_mark_saves_the_mark_once(
    tmp_path: Path,
) -> None:
    writer = Store(tmp_path).writer(flush_every=10_000, flush_seconds=3600)
    writer.commit(_batch(0, 20), key=FEED, mark={"token": "t0"})
    (segment,) = (tmp_path / "_wal").glob("*.log")
    saved = tmp_path / "saved.log"
    shutil.copyfile(segment, saved)
    writer.close()
    # as if the process died after the Parquet files and before the mark and the delete
    ResumePoints(tmp_path / "_wal").path(FEED).unlink()
    shutil.copyfile(saved, segment)
    again = Store(tmp_path)
    assert _numbers(again) == list(range(20))
    assert ResumePoints(again.wal_dir).get(FEED) == {"key": FEED, "n": 0, "token": "t0"}


def test_records_that_fail_the_schema_are_left_out_of_a_batch(tmp_path: Path) -> None:
    with Store(tmp_path).writer() as writer:
        kept = writer.commit(
            [http(0), {"time": "not a time", "source": "server", "kind": "http"}, http(1)],
            key=FEED,
            mark={"token": "t"},
        )
    assert kept == 2
    assert _numbers(Store(tmp_path)) == [0, 1]


def test_several_feeds_keep_their_own_points_in_one_store(tmp_path: Path) -> None:
    other = "http://127.0.0.1:8001/api/performance-metrics/stream"
    with Store(tmp_path).writer() as writer:
        writer.commit(_batch(0, 5), key=FEED, mark={"token": "a5"})
        writer.commit(_batch(5, 5), key=other, mark={"token": "b5"})
        writer.commit(_batch(10, 5), key=FEED, mark={"token": "a10"})
    points = ResumePoints(tmp_path / "_wal")
    assert points.get(FEED)["token"] == "a10"  # type: ignore[index]
    assert points.get(other)["token"] == "b5"  # type: ignore[index]
    assert len(list(points.directory.glob("*.json"))) == 2


def test_one_follower_per_feed_and_store(tmp_path: Path) -> None:
    points = ResumePoints(tmp_path / "_wal")
    held = points.claim(FEED)
    with pytest.raises(StoreError, match="another follower"):
        ResumePoints(tmp_path / "_wal").claim(FEED)
    held.release()
    ResumePoints(tmp_path / "_wal").claim(FEED).release()


def test_the_points_folder_is_invisible_to_readers_of_the_store(tmp_path: Path) -> None:
    with Store(tmp_path).writer() as writer:
        writer.commit(_batch(0, 3), key=FEED, mark={"token": "t"})
    relative = ResumePoints(tmp_path / "_wal").path(FEED).relative_to(tmp_path)
    assert relative.parts[0].startswith("_")
    assert Store(tmp_path).sql("SELECT count(*) AS n FROM events")["n"][0] == 3
    assert os.path.exists(tmp_path / relative)
