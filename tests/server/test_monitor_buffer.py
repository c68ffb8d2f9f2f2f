"""The sequence-numbered ring buffer: numbering, overwrite, exact misses, restore."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfnb.errors import ConfigError
from perfnb.server.buffer import RingBuffer


def test_numbers_start_at_one_and_run_on() -> None:
    ring: RingBuffer[int] = RingBuffer(4)
    assert ring.last == 0
    assert ring.oldest == 1
    assert [ring.append(i) for i in range(6)] == [1, 2, 3, 4, 5, 6]
    assert ring.oldest == 3
    assert len(ring) == 4
    assert ring.latest(2) == [4, 5]
    assert ring.latest(99) == [2, 3, 4, 5]


def test_read_reports_exactly_what_was_overwritten() -> None:
    ring: RingBuffer[str] = RingBuffer(3)
    for ch in "abcdefg":
        ring.append(ch)
    read = ring.read(after=2, limit=10)
    assert (read.missed_first, read.missed_last, read.missed) == (3, 4, 2)
    assert read.first == 5
    assert read.items == ["e", "f", "g"]
    assert read.last == 7


def test_read_after_the_newest_reads_nothing_and_misses_nothing() -> None:
    ring: RingBuffer[int] = RingBuffer(3)
    ring.append(1)
    read = ring.read(after=50, limit=10)
    assert read.items == []
    assert read.missed == 0


def test_read_is_capped_by_limit() -> None:
    ring: RingBuffer[int] = RingBuffer(10)
    for i in range(8):
        ring.append(i)
    read = ring.read(after=0, limit=3)
    assert read.items == [0, 1, 2]
    assert read.last == 3


def test_restore_keeps_numbers_and_reports_earlier_ones_as_missed() -> None:
    ring: RingBuffer[str] = RingBuffer(5)
    ring.restore(41, ["x", "y"])
    assert (ring.oldest, ring.last) == (41, 42)
    assert ring.append("z") == 43
    read = ring.read(after=30, limit=10)
    assert (read.missed_first, read.missed_last) == (31, 40)
    assert read.items == ["x", "y", "z"]


def test_restore_more_than_capacity_keeps_the_newest() -> None:
    ring: RingBuffer[int] = RingBuffer(2)
    ring.restore(10, [10, 11, 12, 13])
    assert ring.dump() == (12, [12, 13])
    assert ring.read(after=9, limit=9).missed == 2


def test_restore_refuses_a_used_buffer_and_bad_numbers() -> None:
    ring: RingBuffer[int] = RingBuffer(2)
    with pytest.raises(ConfigError, match="first sequence number"):
        ring.restore(0, [])
    ring.append(1)
    with pytest.raises(ConfigError, match="already holds"):
        ring.restore(5, [1])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_capacity_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="buffer_size"):
        RingBuffer(bad)  # type: ignore[arg-type]


@given(
    capacity=st.integers(1, 20),
    appends=st.integers(0, 80),
    after=st.integers(-5, 100),
    limit=st.integers(0, 30),
)
def test_every_number_is_either_read_or_missed(
    capacity: int, appends: int, after: int, limit: int
) -> None:
    ring: RingBuffer[int] = RingBuffer(capacity)
    for i in range(1, appends + 1):
        assert ring.append(i) == i
    read = ring.read(after=after, limit=limit)
    assert read.items == list(range(read.first, read.first + len(read.items)))
    start = min(max(after, 0) + 1, appends + 1)
    if read.missed:
        assert read.missed_first == start
        assert read.missed_last == read.first - 1
        assert read.first == appends - capacity + 1
    else:
        assert read.first == start
    assert len(read.items) == min(limit, appends - read.first + 1)


def test_concurrent_appends_get_distinct_consecutive_numbers() -> None:
    ring: RingBuffer[int] = RingBuffer(100_000)
    numbers: list[list[int]] = [[] for _ in range(4)]

    def work(slot: int) -> None:
        numbers[slot].extend(ring.append(slot) for _ in range(5_000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = sorted(n for part in numbers for n in part)
    assert flat == list(range(1, 20_001))


def test_put_items_are_numbered_by_the_next_reader() -> None:
    ring: RingBuffer[int] = RingBuffer(3)
    ring.append(1)
    for i in range(2, 7):
        ring.put(i)
    assert ring.last == 6
    read = ring.read(after=0, limit=10)
    assert (read.missed_first, read.missed_last) == (1, 3)
    assert read.items == [4, 5, 6]
    assert ring.append(7) == 7


def test_concurrent_puts_and_reads_stay_gap_free() -> None:
    ring: RingBuffer[tuple[int, int]] = RingBuffer(1_000)
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def work(slot: int) -> None:
        for i in range(5_000):
            ring.put((slot, i))

    def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            read = ring.read(after=after, limit=300)
            assert read.first == (read.missed_last or after) + 1
            seen.extend(read.items)
            after = read.last
            if finished and not read.items:
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert ring.last == 20_000
    for slot in range(4):  # each producer's items arrive in its order
        mine = [i for s, i in seen if s == slot]
        assert mine == sorted(mine)


def test_compact_items_are_realised_once_when_read() -> None:
    built: list[tuple[str, int]] = []

    def realise(item: tuple[str, int]) -> str:
        built.append(item)
        return f"{item[0]}{item[1]}"

    ring: RingBuffer[str] = RingBuffer(4, realise=realise)
    ring.put(("a", 1))
    ring.append("plain")
    ring.put(("b", 2))
    assert ring.latest(10) == ["a1", "plain", "b2"]
    assert ring.read(after=0, limit=10).items == ["a1", "plain", "b2"]
    assert ring.dump() == (1, ["a1", "plain", "b2"])
    assert built == [("a", 1), ("b", 2)]
