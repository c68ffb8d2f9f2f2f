from __future__ import annotations

import asyncio
import doctest
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

import perfnb.stream
from perfnb.errors import ConfigError, RecordError
from perfnb.schema import COLUMN_NAMES, Record
from perfnb.stream import Stream, Subscription

T0 = 1_780_000_000.0  # seconds since the epoch; a fixed "now" for injected clocks


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def rec(i: int = 0, *, t: float = T0, **extra: object) -> Record:
    record: dict[str, object] = {
        "time": at(t),
        "source": "client",
        "kind": "http",
        "route": f"/r/{i}",
        "status": 200,
        "duration_ms": 1.5,
    }
    record.update(extra)
    return record  # type: ignore[return-value]


def routes(frame: pd.DataFrame) -> list[str]:
    return [str(r) for r in frame["route"]]


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return bool(predicate())  # type: ignore[operator]


# -- frames --------------------------------------------------------------------


EXPECTED_DTYPES = {
    "time": "datetime64[us, UTC]",
    "source": "category",
    "kind": "category",
    "route": "category",
    "status": "Int16",
    "duration_ms": "float64",
    "request_bytes": "Int64",
    "messages_in": "Int32",
    "value": "float64",
    "tags": "object",
}


@pytest.mark.parametrize("empty", [True, False])
def test_frame_has_the_schema_columns_and_dtypes(empty: bool) -> None:
    stream = Stream(clock=FakeClock())
    if not empty:
        stream.push(rec())
    frame = stream.frame()
    assert tuple(frame.columns) == COLUMN_NAMES
    for column, dtype in EXPECTED_DTYPES.items():
        assert str(frame[column].dtype) == dtype, column
    assert pd.api.types.is_string_dtype(frame["error_message"])


def test_every_column_round_trips() -> None:
    clock = FakeClock()
    full: Record = {
        "time": at(T0 - 1.25),
        "source": "server",
        "kind": "http",
        "service": "demo",
        "route": "/api/cards/{card_id}",
        "method": "POST",
        "status": 201,
        "duration_ms": 12.5,
        "ttfb_ms": 3.25,
        "request_bytes": 120,
        "response_bytes": 2_000_000_000_000,
        "server_ms": 10.0,
        "app_ms": 8.0,
        "db_ms": 2.0,
        "messages_in": 3,
        "messages_out": 4,
        "error_type": "timeout",
        "error_message": "read timed out",
        "run_id": "run-1",
        "client": "abc123",
        "name": "LCP",
        "value": 2.5,
        "unit": "ms",
        "tags": {"region": "eu"},
    }
    stream = Stream(clock=clock)
    stream.push(full)
    stream.push(rec(1, t=T0))  # most columns null
    frame = stream.frame()
    row = frame.iloc[0].to_dict()
    assert row["time"] == pd.Timestamp(full["time"])
    for key, value in full.items():
        if key != "time":
            assert row[key] == value, key
    empty = frame.iloc[1]
    assert pd.isna(empty["status"]) is False
    assert pd.isna(empty["ttfb_ms"])
    assert pd.isna(empty["request_bytes"])
    assert pd.isna(empty["service"])
    assert empty["tags"] is None


def test_bound_by_count() -> None:
    stream = Stream(max_records=5, clock=FakeClock())
    for i in range(8):
        stream.push(rec(i))
    assert len(stream) == 5
    assert routes(stream.frame()) == [f"/r/{i}" for i in range(3, 8)]
    assert stream.stats == {
        "pushed": 8,
        "evicted": 3,
        "rejected": 0,
        "retained": 5,
        "subscribers": 0,
    }


def test_bound_by_age() -> None:
    clock = FakeClock()
    stream = Stream(max_age=60, clock=clock)
    stream.extend(rec(i, t=T0) for i in range(3))
    clock.now = T0 + 30
    stream.push(rec(3, t=clock.now))
    assert routes(stream.frame()) == ["/r/0", "/r/1", "/r/2", "/r/3"]
    clock.now = T0 + 61
    # frame() applies the age bound without a push
    assert routes(stream.frame()) == ["/r/3"]
    assert stream.stats["evicted"] == 3
    clock.now = T0 + 100
    stream.push(rec(4, t=clock.now))
    assert len(stream) == 1
    assert routes(stream.frame()) == ["/r/4"]


def test_an_old_record_behind_a_young_one_never_shows() -> None:
    clock = FakeClock()
    stream = Stream(max_age=60, clock=clock)
    stream.push(rec(0, t=T0))
    stream.push(rec(1, t=T0 - 3600))  # arrives late, already too old
    assert routes(stream.frame()) == ["/r/0"]


def test_frame_window() -> None:
    clock = FakeClock()
    stream = Stream(clock=clock)
    stream.extend(rec(i, t=T0 - 10 * i) for i in range(6))  # ages 0, 10, ..., 50 s
    assert routes(stream.frame(window=25)) == ["/r/0", "/r/1", "/r/2"]
    assert routes(stream.frame(window=timedelta(seconds=10))) == ["/r/0", "/r/1"]
    assert len(stream.frame(window=0)) == 1
    assert len(stream.frame()) == 6
    assert len(stream.frame(window=10_000)) == 6  # never past max_age


@pytest.mark.parametrize("window", [-1, "10", True, float("nan")])
def test_frame_refuses_bad_windows(window: object) -> None:
    with pytest.raises(ConfigError, match="window"):
        Stream().frame(window=window)  # type: ignore[arg-type]


def test_incremental_frames_match_a_simple_model() -> None:
    # Many small conversions, merges and evictions: the frame must always show
    # exactly the last max_records records in arrival order.
    rng = random.Random(7)
    clock = FakeClock()
    stream = Stream(max_records=300, clock=clock)
    model: list[str] = []
    counter = 0
    for _ in range(400):
        batch = [rec(counter + k) for k in range(rng.choice([0, 1, 2, 5, 40, 170]))]
        counter += len(batch)
        if rng.random() < 0.5:
            stream.extend(batch)
        else:
            for record in batch:
                stream.push(record)
        model.extend(str(r["route"]) for r in batch)
        model = model[-300:]
        if rng.random() < 0.4:
            assert routes(stream.frame()) == model
    assert routes(stream.frame()) == model
    assert len(stream._chunks) <= 12


def test_categories_merge_across_chunks() -> None:
    stream = Stream(clock=FakeClock())
    stream.push(rec(0, method="GET"))
    stream.frame()
    stream.push(rec(1, method="POST"))
    frame = stream.frame()
    assert frame["method"].tolist() == ["GET", "POST"]
    assert frame["method"].dtype == "category"


class ReadOnly(Mapping[str, object]):
    """A record that is a mapping but not a dict (allowed with validate=False)."""

    def __init__(self, data: dict[str, object]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.mark.parametrize("as_mapping", [False, True])
def test_mixed_shapes_keep_arrival_order_and_values(as_mapping: bool) -> None:
    # Records of different key sets and key orders, nulls and tags in some rows:
    # the frame shows each row's own values, in arrival order, with the schema's dtypes.
    rng = random.Random(11)
    expected: list[dict[str, object]] = []
    stream = Stream(validate=False, clock=FakeClock())
    for i in range(500):
        record: dict[str, object] = dict(rec(i))
        if rng.random() < 0.3:
            record["tags"] = {"n": str(i)}
        if rng.random() < 0.3:
            record["value"] = float(i)
            record["status"] = None
        if rng.random() < 0.3:
            record = dict(reversed(list(record.items())))
        expected.append(record)
        stream.push(ReadOnly(record) if as_mapping else record)  # type: ignore[arg-type]
    frame = stream.frame()
    assert routes(frame) == [r["route"] for r in expected]
    assert frame["tags"].tolist() == [r.get("tags") for r in expected]
    assert [None if pd.isna(v) else v for v in frame["value"]] == [r.get("value") for r in expected]
    assert [None if v is pd.NA else v for v in frame["status"]] == [
        r.get("status") for r in expected
    ]
    for column, dtype in EXPECTED_DTYPES.items():
        assert str(frame[column].dtype) == dtype, column


# -- validation ------------------------------------------------------------------


def test_push_refuses_bad_records_and_counts_them() -> None:
    stream = Stream(clock=FakeClock())
    with pytest.raises(RecordError, match="'status'"):
        stream.push(rec(0, status="ok"))
    with pytest.raises(RecordError, match="unknown column 'colour'"):
        stream.push(rec(0, colour="red"))
    with pytest.raises(RecordError, match="naive"):
        stream.push(rec(0, time=datetime(2026, 1, 1)))
    assert stream.stats["rejected"] == 3
    assert len(stream) == 0


def test_extend_is_all_or_nothing() -> None:
    stream = Stream(clock=FakeClock())
    with pytest.raises(RecordError, match=r"record 2: column 'kind'"):
        stream.extend([rec(0), rec(1), rec(2, kind="nope"), rec(3)])
    assert len(stream) == 0
    assert stream.stats["rejected"] == 1


def test_validate_false_still_needs_an_aware_time() -> None:
    stream = Stream(validate=False, clock=FakeClock())
    stream.push(rec(0))
    with pytest.raises(RecordError, match="not a record"):
        stream.push({"source": "client", "kind": "http"})  # type: ignore[typeddict-item]
    with pytest.raises(RecordError, match="aware datetime"):
        stream.push(rec(1, time=datetime(2026, 1, 1)))
    assert len(stream) == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_records", 0), ("max_records", 1.5), ("max_age", -1), ("max_age", "600")],
)
def test_stream_refuses_bad_options(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        Stream(**{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [("every", -0.1), ("max_batch", 0), ("max_pending", -5), ("every", "1")],
)
def test_subscribe_refuses_bad_options(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        Stream().subscribe(lambda b: None, **{option: value})  # type: ignore[arg-type]


# -- producers from threads and tasks -------------------------------------------------


def test_many_producer_threads() -> None:
    stream = Stream(max_records=50_000)
    received: list[Record] = []
    sub = stream.subscribe(received.extend, every=0.01, max_pending=50_000)
    per_thread, threads = 3_000, 4
    start = threading.Barrier(threads)

    def produce(worker: int) -> None:
        start.wait()
        now = datetime.now(UTC)
        for i in range(per_thread):
            stream.push(rec(i, t=now.timestamp(), client=f"w{worker}"))

    workers = [threading.Thread(target=produce, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sub.flush(timeout=30)
    total = per_thread * threads
    assert stream.stats["pushed"] == total
    assert len(stream.frame()) == total
    assert sub.delivered == total
    assert sub.dropped == 0
    assert len(received) == total
    for worker in range(threads):  # each producer's order is kept
        mine = [r["route"] for r in received if r["client"] == f"w{worker}"]
        assert mine == [f"/r/{i}" for i in range(per_thread)]
    sub.close()


def test_asyncio_producers() -> None:
    stream = Stream()
    received: list[Record] = []
    sub = stream.subscribe(received.extend, every=0)

    async def produce(task: int) -> None:
        for i in range(200):
            stream.push(rec(i, t=time.time(), client=f"t{task}"))
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(produce(t) for t in range(5)))

    asyncio.run(main())
    assert sub.flush(timeout=10)
    assert stream.stats["pushed"] == 1000
    assert len(stream.frame()) == 1000
    assert sub.delivered == 1000
    assert len(received) == 1000
    sub.close()


# -- subscriptions -----------------------------------------------------------------------


def test_slow_subscriber_drops_are_counted_exactly() -> None:
    stream = Stream(clock=FakeClock())
    batches: list[list[Record]] = []
    # every=1 h: nothing is delivered until flush, so the queue fills deterministically
    sub = stream.subscribe(batches.append, every=3600, max_batch=1000, max_pending=10)
    for i in range(100):
        stream.push(rec(i))
    assert sub.dropped == 90
    assert sub.pending == 10
    assert sub.flush(timeout=10)
    assert sub.delivered == 10
    assert sub.delivered + sub.dropped == 100
    # the newest records are kept, the oldest dropped
    assert [r["route"] for b in batches for r in b] == [f"/r/{i}" for i in range(90, 100)]
    sub.close()


def test_a_blocked_subscriber_never_blocks_producers() -> None:
    stream = Stream()
    gate = threading.Event()
    entered = threading.Event()

    def stuck(batch: list[Record]) -> None:
        entered.set()
        gate.wait(30)

    sub = stream.subscribe(stuck, every=0, max_batch=5, max_pending=50)
    stream.push(rec(0, t=time.time()))
    assert entered.wait(10)  # the dispatcher is now stuck inside the callback

    def produce() -> None:
        for i in range(5_000):
            stream.push(rec(i, t=time.time()))

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(timeout=30)
    assert not producer.is_alive()
    assert sub.pending == 1 + 50  # one in flight, a full queue
    gate.set()
    assert sub.flush(timeout=10)
    assert sub.delivered + sub.dropped == 5_001
    assert sub.dropped == 5_000 - 50
    sub.close()


def test_full_batches_are_delivered_without_waiting() -> None:
    stream = Stream(clock=FakeClock())
    sizes: list[int] = []
    got_two = threading.Event()

    def take(batch: list[Record]) -> None:
        sizes.append(len(batch))
        if len(sizes) == 2:
            got_two.set()

    sub = stream.subscribe(take, every=3600, max_batch=10)
    stream.extend(rec(i) for i in range(25))
    assert got_two.wait(10)
    assert sizes == [10, 10]
    assert sub.flush(timeout=10)
    assert sizes == [10, 10, 5]
    sub.close()


def test_callbacks_run_on_the_dispatcher_thread() -> None:
    stream = Stream()
    threads: list[str] = []
    sub = stream.subscribe(lambda b: threads.append(threading.current_thread().name), every=0)
    stream.push(rec(0, t=time.time()))
    assert sub.flush(timeout=10)
    assert threads == ["perfnb-stream-dispatch"]
    sub.close()


def test_a_raising_callback_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    stream = Stream(clock=FakeClock())
    calls: list[int] = []

    def broken(batch: list[Record]) -> None:
        calls.append(len(batch))
        raise ValueError("consumer bug")

    sub = stream.subscribe(broken, every=3600)
    with caplog.at_level(logging.DEBUG, logger="perfnb.stream"):
        for i in range(3):
            stream.push(rec(i))
            assert sub.flush(timeout=10)
    assert calls == [1, 1, 1]
    assert sub.errors == 3
    assert sub.delivered == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "consumer bug" in caplog.text
    # the stream keeps working
    stream.push(rec(9))
    assert sub.flush(timeout=10)
    assert sub.delivered == 4
    sub.close()


def dispatcher_of(stream: Stream) -> threading.Thread:
    assert stream._dispatcher is not None
    return stream._dispatcher.thread


def test_dispatcher_thread_lifecycle() -> None:
    stream = Stream()
    assert stream._dispatcher is None  # nothing started until someone subscribes
    first = stream.subscribe(lambda b: None)
    thread = dispatcher_of(stream)
    assert thread.is_alive()
    assert thread.name == "perfnb-stream-dispatch"
    assert thread.daemon
    second = stream.subscribe(lambda b: None)
    assert dispatcher_of(stream) is thread  # one per stream
    first.close()
    assert thread.is_alive()
    second.close()
    assert not thread.is_alive()  # closing the last subscription joined it
    assert stream._dispatcher is None
    assert stream.stats["subscribers"] == 0
    # a later subscription starts a new dispatcher; Stream.close stops it
    received: list[Record] = []
    third = stream.subscribe(received.extend, every=3600)
    again = dispatcher_of(stream)
    assert again is not thread
    stream.push(rec(0, t=time.time()))
    stream.close()
    assert third.closed
    assert third.delivered == 1  # close flushed what was queued
    assert len(received) == 1
    assert not again.is_alive()
    stream.push(rec(1, t=time.time()))  # the buffer still works
    assert len(stream) == 2


def test_close_without_flush_counts_the_queue_as_dropped() -> None:
    stream = Stream(clock=FakeClock())
    sub = stream.subscribe(lambda b: None, every=3600)
    stream.extend(rec(i) for i in range(7))
    sub.close(timeout=0)
    assert sub.delivered == 0
    assert sub.dropped == 7
    stream.push(rec(8))  # not offered to a closed subscription
    assert sub.dropped == 7


def test_a_callback_may_close_its_own_subscription() -> None:
    stream = Stream()
    holder: list[Subscription] = []
    done = threading.Event()

    def once(batch: list[Record]) -> None:
        holder[0].close()
        done.set()

    holder.append(stream.subscribe(once, every=0))
    stream.push(rec(0, t=time.time()))
    assert done.wait(10)
    assert holder[0].closed
    assert wait_until(lambda: stream.stats["subscribers"] == 0)


def test_subscription_as_context_manager() -> None:
    stream = Stream(clock=FakeClock())
    received: list[Record] = []
    with stream.subscribe(received.extend, every=3600) as sub:
        stream.push(rec(0))
    assert sub.closed
    assert len(received) == 1
    assert "delivered=1" in repr(sub)


def test_doctests() -> None:
    assert doctest.testmod(perfnb.stream).failed == 0
