"""Process samples: the metrics, at most once per interval, the loop-lag probe."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from perfnb.errors import ConfigError
from perfnb.schema import Record, validate_record
from perfnb.server.sampler import ProcessSampler

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_sample_gives_valid_process_records() -> None:
    sampler = ProcessSampler(service="svc")
    first = sampler.sample(NOW)
    second = sampler.sample(NOW)
    names = {r["name"] for r in second}
    assert {"rss_bytes", "threads", "open_files", "cpu_percent", "gc_collections"} <= names
    assert {"rss_bytes", "threads", "open_files"} <= {r["name"] for r in first}
    for record in first + second:
        validate_record(record)
        assert record["kind"] == "process"
        assert record["service"] == "svc"
    assert sampler.latest["rss_bytes"] > 0


def test_at_most_once_per_interval() -> None:
    clock = [10_000_000_000]
    sampler = ProcessSampler(interval=1.0, clock=lambda: clock[0])
    out: list[Record] = []
    assert sampler.maybe_sample(NOW, out.append)
    taken = len(out)
    assert not sampler.maybe_sample(NOW, out.append)
    clock[0] += 999_999_999
    assert not sampler.maybe_sample(NOW, out.append)
    clock[0] += 1
    assert sampler.maybe_sample(NOW, out.append)
    assert len(out) > taken


def test_loop_lag_is_recorded_when_the_loop_gets_to_it() -> None:
    sampler = ProcessSampler()
    out: list[Record] = []

    async def main() -> None:
        sampler.probe_loop(out.append)
        assert out == []  # nothing runs until the loop turns
        await asyncio.sleep(0)

    asyncio.run(main())
    assert [r["name"] for r in out] == ["loop_lag_ms"]
    assert out[0]["value"] >= 0


def test_probe_outside_a_loop_does_nothing() -> None:
    out: list[Record] = []
    ProcessSampler().probe_loop(out.append)
    assert out == []


@pytest.mark.parametrize("interval", [0, -1, "1", True])
def test_bad_interval_is_refused(interval: object) -> None:
    with pytest.raises(ConfigError, match="interval"):
        ProcessSampler(interval=interval)  # type: ignore[arg-type]
