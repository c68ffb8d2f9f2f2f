"""The Monitor: control state, exact counters, sinks, beacon intake, spool."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from feed_support import http_record

from perfnb.errors import ConfigError, StoreError
from perfnb.schema import Record
from perfnb.server.beacon import encode_header
from perfnb.server.monitor import Monitor


def test_records_go_to_the_buffer_and_the_sink() -> None:
    seen: list[Record] = []
    monitor = Monitor(sink=seen.append)
    rec = http_record()
    monitor.record(rec)
    assert monitor.last_seq == 1
    assert monitor.buffer.latest(1) == [rec]
    assert seen == [rec]


def test_a_failing_sink_is_counted_and_never_raises() -> None:
    def broken(rec: Record) -> None:
        raise OSError("disk full")

    monitor = Monitor(sink=broken)
    monitor.record(http_record())
    assert monitor.counters["sink_errors"] == 1
    assert monitor.last_seq == 1


def test_disabled_records_nothing_and_counts_exactly() -> None:
    monitor = Monitor()
    monitor.configure(enabled=False)
    assert not monitor.enabled
    assert not monitor.wants("http")
    for _ in range(7):
        monitor.record(http_record())
    assert monitor.last_seq == 0
    assert monitor.counters["skipped_disabled"] == 7


def test_kinds_select_what_is_recorded() -> None:
    monitor = Monitor()
    monitor.configure(kinds=["process"])
    assert monitor.wants("process")
    assert not monitor.wants("http")
    monitor.record(http_record())
    monitor.record({"time": datetime.now(UTC), "source": "server", "kind": "process"})
    assert monitor.last_seq == 1
    assert monitor.counters["skipped_kind"] == 1
    monitor.configure(kinds=None)
    assert monitor.wants("http")
    assert monitor.control.kinds is None


def test_sampling_keeps_about_the_ratio_and_counts_every_record() -> None:
    monitor = Monitor(buffer_size=10)
    monitor.configure(sample=0.25)
    for _ in range(4000):
        monitor.record(http_record())
    kept = monitor.counters["recorded"]
    assert kept + monitor.counters["skipped_sample"] == 4000
    assert 800 < kept < 1200


def test_sampling_never_thins_process_samples() -> None:
    monitor = Monitor()
    monitor.configure(sample=0.0)
    monitor.record(http_record())
    monitor.record({"time": datetime.now(UTC), "source": "server", "kind": "process"})
    assert monitor.last_seq == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"enabled": "yes"}, "enabled"),
        ({"kinds": ["http", "nope"]}, "kinds"),
        ({"kinds": "http"}, "kinds"),
        ({"sample": 1.5}, "sample"),
        ({"sample": -0.1}, "sample"),
        ({"sample": True}, "sample"),
    ],
)
def test_configure_names_the_bad_field(changes: dict[str, object], field: str) -> None:
    monitor = Monitor()
    with pytest.raises(ConfigError, match=f"^{field}: got"):
        monitor.configure(**changes)  # type: ignore[arg-type]
    assert monitor.control.enabled  # nothing changed


def test_prefix_ownership() -> None:
    monitor = Monitor(prefix="/perf/")
    assert monitor.prefix == "/perf"
    assert monitor.owns("/perf")
    assert monitor.owns("/perf/stream")
    assert not monitor.owns("/perfume")
    with pytest.raises(ConfigError, match="prefix"):
        Monitor(prefix="perf")


def test_beacon_header_records_browser_records() -> None:
    monitor = Monitor(service="shop", clock=lambda: 1_767_225_600.0)
    value = encode_header(
        {
            "v": 1,
            "page": "/cards/42",
            "session": "tab-1",
            "records": [
                {"kind": "vital", "name": "LCP", "value": 1234.5, "unit": "ms", "t": 1767225600000}
            ],
        }
    )
    assert monitor.take_beacon_header(value, route="/cards/{id}", client="127.0.0.1") == 1
    (rec,) = monitor.buffer.latest(1)
    assert rec["source"] == "browser"
    assert rec["service"] == "shop"
    assert rec["route"] == "/cards/{id}"
    assert rec["name"] == "LCP"
    assert rec["time"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert rec["client"] != "tab-1"
    assert monitor.counters["beacon_records"] == 1


@pytest.mark.parametrize(
    "value",
    [
        "",
        "!!!!",
        "e30",  # {} : envelope without v
        encode_header({"v": 2, "page": "/", "records": []}),
        encode_header({"v": 1, "page": "/", "records": "nope"}),
        "A" * 20_000,
        b"\xff\xfe",
    ],
)
def test_bad_beacon_headers_are_counted_and_dropped(value: str | bytes) -> None:
    monitor = Monitor()
    assert monitor.take_beacon_header(value, route="/", client="127.0.0.1") == 0
    assert monitor.counters["beacon_batches_bad"] == 1
    assert monitor.last_seq == 0
    assert monitor.last_beacon_error


def test_spool_round_trip_keeps_boot_and_numbers(tmp_path: Path) -> None:
    spool = tmp_path / "feed.spool"
    first = Monitor(buffer_size=3, spool=spool)
    for i in range(5):
        first.record(http_record(f"/r{i}"))
    first.close()
    assert spool.exists()
    second = Monitor(buffer_size=3, spool=spool)
    assert not spool.exists(), "a restored spool is consumed"
    assert second.boot == first.boot
    assert (second.buffer.oldest, second.last_seq) == (3, 5)
    assert [r["route"] for r in second.buffer.latest(9)] == ["/r2", "/r3", "/r4"]
    second.record(http_record("/r5"))
    assert second.last_seq == 6
    assert second.counters["spool_restored"] == 3


def test_a_bad_spool_line_costs_only_what_came_before_it(tmp_path: Path) -> None:
    spool = tmp_path / "feed.spool"
    first = Monitor(buffer_size=10)
    for i in range(4):
        first.record(http_record(f"/r{i}"))
    first.save(spool)
    lines = spool.read_text().splitlines()
    lines[2] = "{broken"
    spool.write_text("\n".join(lines) + "\n")
    second = Monitor(buffer_size=10)
    assert second.load(spool) == 2
    assert (second.buffer.oldest, second.last_seq) == (3, 4)


def test_a_garbage_spool_is_ignored_at_startup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "feed.spool"
    spool.write_bytes(b"\x00\x01 not a spool")
    monitor = Monitor(spool=spool)
    assert monitor.last_seq == 0
    assert "not restored" in caplog.text
    with pytest.raises(StoreError, match="not a perfnb spool"):
        Monitor().load(spool)


def test_load_refuses_a_monitor_that_already_recorded(tmp_path: Path) -> None:
    spool = tmp_path / "s"
    Monitor().save(spool)
    used = Monitor()
    used.record(http_record())
    with pytest.raises(StoreError, match="already recorded"):
        used.load(spool)


def test_spool_header_is_documented_json(tmp_path: Path) -> None:
    monitor = Monitor(service="shop")
    monitor.record(http_record())
    monitor.save(tmp_path / "s")
    header = json.loads((tmp_path / "s").read_text().splitlines()[0])
    assert header == {
        "perfnb_spool": 1,
        "boot": monitor.boot,
        "first": 1,
        "count": 1,
        "service": "shop",
    }


def test_the_server_room_imports_no_pandas_or_pyarrow() -> None:
    import subprocess

    code = (
        "import sys, perfnb.server.monitor, perfnb.server.feed, perfnb.server.sse;"
        "bad = [m for m in ('pandas', 'pyarrow') if m in sys.modules];"
        "raise SystemExit(str(bad) if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "limits",
    [
        {"batch_records": 0},
        {"keepalive_seconds": -1},
        {"stream_seconds": True},
        {"linger_seconds": -0.1},
    ],
)
def test_feed_limits_refuse_nonsense(limits: dict[str, object]) -> None:
    from perfnb.server.monitor import FeedLimits

    field = next(iter(limits))
    with pytest.raises(ConfigError, match=f"FeedLimits.{field}"):
        FeedLimits(**limits)  # type: ignore[arg-type]


def test_state_document_lists_control_and_counters() -> None:
    monitor = Monitor(service="shop", buffer_size=4)
    monitor.record(http_record())
    state = monitor.state()
    assert state["service"] == "shop"
    assert (state["seq"], state["oldest"], state["capacity"]) == (1, 1, 4)
    assert state["enabled"] is True
    counters = state["counters"]
    assert isinstance(counters, dict)
    assert counters["recorded"] == 1
    assert counters["buffered"] == 1


def _entry_monitor(**options: object) -> tuple[Monitor, int]:
    monitor = Monitor(**options)  # type: ignore[arg-type]

    def build(entry: tuple[object, ...]) -> Record:
        return http_record(route=str(entry[1]))

    return monitor, monitor.add_builder(build)


def test_compact_entries_become_records_when_read() -> None:
    monitor, key = _entry_monitor()
    assert monitor.direct
    monitor.take((key, "/a"), "http")
    monitor.buffer.put((key, "/b"))  # what the middleware does while direct
    assert monitor.last_seq == 2
    assert [r["route"] for r in monitor.buffer.latest(5)] == ["/a", "/b"]


def test_compact_entries_follow_the_control_state_exactly() -> None:
    monitor, key = _entry_monitor()
    monitor.configure(kinds=["stream"])
    assert not monitor.direct
    monitor.take((key, "/a"), "http")
    monitor.take((key, "/b"), "stream")
    monitor.configure(kinds=None, enabled=False)
    monitor.take((key, "/c"), "http")
    monitor.configure(enabled=True, sample=0.0)
    monitor.take((key, "/d"), "http")
    counted = monitor.counters
    assert (counted["skipped_kind"], counted["skipped_disabled"]) == (1, 1)
    assert counted["skipped_sample"] == 1
    assert [r["route"] for r in monitor.buffer.latest(5)] == ["/b"]
    monitor.configure(sample=1.0)
    assert monitor.direct


def test_compact_entries_reach_the_sink_as_records_at_once() -> None:
    seen: list[Record] = []
    monitor, key = _entry_monitor(sink=seen.append)
    assert not monitor.direct
    monitor.take((key, "/a"), "http")
    assert [r["route"] for r in seen] == ["/a"]
    assert monitor.buffer.latest(1) == seen


def test_a_failing_builder_leaves_a_record_that_says_so() -> None:
    monitor = Monitor()

    def broken(entry: tuple[object, ...]) -> Record:
        raise ValueError("bad entry")

    key = monitor.add_builder(broken)
    monitor.take((key,), "http")
    (rec,) = monitor.buffer.latest(1)
    assert rec["error_type"] == "PerfnbInternalError"
    assert monitor.counters["internal_errors"] == 1
    assert monitor.last_seq == 1
