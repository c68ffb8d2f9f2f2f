"""Replaying records in pieces gives what one replay of them all gives."""

from __future__ import annotations

import doctest
import random

import pandas as pd
import pytest
from health_support import http, polls, sample, steady

from perfnb.analysis import healthreplay
from perfnb.analysis.health import HealthConfig, HealthEngine
from perfnb.analysis.healthreplay import PieceReplay
from perfnb.errors import RecordError
from perfnb.schema import Record

QUICK = HealthConfig(window_s=1.0, min_requests=3, enter_windows=2, leave_windows=2)


def story() -> list[Record]:
    """Steady traffic, an error burst, a slow spell, a runaway poller, a growing RSS."""
    out = steady(120, every=0.05)
    out += [http(40 + i * 0.1, status=500) for i in range(60)]
    out += steady(20, start=70, every=0.05, route="/api/search", duration=900.0)
    out += polls("calm", 0, 120, 3.0) + polls("wild", 50, 80, 0.2)
    out += [sample(t, 1e8 + t * 1e6) for t in range(0, 120, 5)]
    out.sort(key=lambda r: r["time"])
    return out


def cut(records: list[Record], sizes: list[int]) -> list[list[Record]]:
    pieces, at = [], 0
    for size in sizes:
        pieces.append(records[at : at + size])
        at += size
    return [*pieces, records[at:]]


def test_any_cut_gives_the_same_output() -> None:
    records = story()
    expected = HealthEngine(QUICK).replay(records)
    assert {r["name"] for r in expected if r["kind"] == "alert"} >= {"error_rate", "runaway"}
    rng = random.Random(5)
    for _ in range(5):
        sizes = [rng.choice([0, 1, 7, 150, 999]) for _ in range(40)]
        got = HealthEngine(QUICK).replay_pieces(iter(cut(records, sizes)))
        assert got == expected


def test_frames_and_stretch_in_pieces() -> None:
    records = story()
    frame = pd.DataFrame(records)
    expected = HealthEngine(QUICK).replay(frame, stretch=3.0)
    pieces = (frame.iloc[i : i + 500] for i in range(0, len(frame), 500))
    assert HealthEngine(QUICK).replay_pieces(pieces, stretch=3.0) == expected


def test_a_piece_boundary_judges_nothing() -> None:
    records = steady(3, every=0.1)  # three one-second windows of ten requests
    replay = PieceReplay(HealthEngine(QUICK))
    assert replay.feed(records[:10]) == []  # the first window, whole
    assert replay.engine.stats["windows"] == 0  # not judged at the piece's end
    middle = replay.feed(records[10:20]) + replay.feed(records[20:])
    assert replay.engine.stats["windows"] == 2  # judged as the next one began
    last = replay.finish()
    assert replay.engine.stats["windows"] == 3
    assert middle + last == HealthEngine(QUICK).replay(records)
    assert replay.records == len(records)


def test_pieces_out_of_order_are_refused() -> None:
    records = story()
    replay = PieceReplay(HealthEngine(QUICK))
    replay.feed(records[500:600])
    with pytest.raises(RecordError, match=r"time: got .* expected pieces in time order"):
        replay.feed(records[:10])


def test_finish_ends_the_replay() -> None:
    replay = PieceReplay(HealthEngine(QUICK))
    replay.feed(steady(0.5, every=0.1))
    # the only window is judged once, at the end: serverResponse becomes known
    assert [r["name"] for r in replay.finish()] == ["serverResponse"]
    assert replay.finish() == []
    with pytest.raises(RecordError, match="after finish"):
        replay.feed(steady(0.5, start=1, every=0.1))


def test_no_records_no_windows() -> None:
    engine = HealthEngine(QUICK)
    assert engine.replay_pieces([[], pd.DataFrame(), []]) == []
    assert engine.stats["windows"] == 0


def test_doctests() -> None:
    result = doctest.testmod(healthreplay, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
