"""`perfnb record URL URL ...`: several apps into one store, hosts that go away and come back."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from recorder_support import (
    Identity,
    Traffic,
    free_port,
    start_app,
    start_recorder,
    stop_app,
    stored,
    taken,
    wait_for_line,
)

from perfnb.feedtargets import feed_key
from perfnb.store import Store
from perfnb.store.resume import ResumePoints

pytestmark = pytest.mark.slow


def _stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    return log.read_text()


def _bookkeeping(r: Identity) -> bool:
    """perfnb's own records and process samples: what an app may take after the last
    record a recorder stopped at (its streams' own records, samples on those requests)."""
    return r[1] == "perfnb" or r[2] == "process"


def _check_exact(records: list[Identity], app_records: list[Identity], context: str) -> None:
    """Each record the app took is stored once, up to the last stored (then only bookkeeping)."""
    assert len(records) == len(set(records)), f"duplicates; {context}"
    position = {identity: index for index, identity in enumerate(app_records)}
    known = [position[r] for r in records if r in position]
    seen = max(known) + 1
    assert set(app_records[:seen]) <= set(records), f"records missing; {context}"
    assert all(_bookkeeping(r) for r in app_records[seen:]), context
    assert all(r in position for r in records), f"stored, never taken; {context}"


def test_one_recorder_follows_two_apps_into_one_store_with_exact_counts(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    journal_a, journal_b = tmp_path / "a.journal", tmp_path / "b.journal"
    app_a = start_app(port_a, tmp_path / "a.spool", "--service", "a", "--journal", str(journal_a))
    b_args = ("--service", "b", "--journal", str(journal_b))
    app_b = start_app(port_b, tmp_path / "b.spool", *b_args)
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# the second app\n{url_b}/api/performance-metrics  # b\n")
    store, log = tmp_path / "store", tmp_path / "record.log"
    recorder, out = start_recorder(
        store, log, url_a, "--targets", str(targets), "--max-backoff", "1", "--progress", "0.2"
    )
    try:
        assert wait_for_line(log, f"following {feed_key(url_b)}", timeout=20), log.read_text()
        with Traffic(url_a, url_b, rate=40) as traffic:
            time.sleep(2.0)
            stop_app(app_b)  # graceful: B keeps its buffer in its spool
            assert wait_for_line(log, f"feed {feed_key(url_b)} went away", timeout=15)
            time.sleep(2.0)  # B is away; A goes on
            app_b = start_app(port_b, tmp_path / "b.spool", *b_args)
            assert wait_for_line(log, f"feed {feed_key(url_b)} is back", timeout=15)
            time.sleep(1.5)
        time.sleep(1.5)
        text = _stop(recorder, log)
    finally:
        recorder.kill()
        out.close()
        stop_app(app_a)
        stop_app(app_b)
    assert traffic.failed > 0, "requests to B failed while it was away"
    stored_a, stored_b = stored(store, service="a"), stored(store, service="b")
    _check_exact(stored_a, taken(journal_a), text)
    _check_exact(stored_b, taken(journal_b), text)  # both of B's runs
    for url, rows in ((url_a, stored_a), (url_b, stored_b)):
        key = feed_key(url)
        point = ResumePoints(Store(store).wal_dir).get(key)
        assert point is not None
        assert point["totals"]["received"] == len(rows)
        assert point["totals"]["dropped"] == 0
        assert f"  {key}: {len(rows)} records, 0 missed" in text, text
        assert f"  {key}: the store now holds {len(rows)} records of this feed (0 missed" in text
    said = re.search(r"stopped: (\d+) records written to .*?; 0 missed \(", text)
    assert said is not None, text
    assert int(said[1]) == len(stored_a) + len(stored_b)


def test_an_app_restarted_without_its_spool_is_never_reported_as_0_missed(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = start_app(port, tmp_path / "first.spool")
    store, log = tmp_path / "store", tmp_path / "record.log"
    recorder, out = start_recorder(store, log, url, "--max-backoff", "1", "--progress", "0.2")
    try:
        assert wait_for_line(log, "received", timeout=20), log.read_text()
        app.send_signal(signal.SIGKILL)  # no spool: what it held is gone
        app.wait()
        app = start_app(port, tmp_path / "second.spool")
        assert wait_for_line(log, "restarted without its spool", timeout=15), log.read_text()
        time.sleep(0.6)  # a progress line or more after it
        text = _stop(recorder, log)
    finally:
        recorder.kill()
        out.close()
        stop_app(app)
    restart = re.search(r"boot (\w+) -> (\w+)", text)
    assert restart is not None, text
    old, new = restart[1], restart[2]
    summary = text[text.index("stopped:") :].splitlines()
    key = feed_key(url)
    lines = {
        "stopped": summary[0],
        "feed": next(line for line in summary if line.startswith(f"  {key}: ")),
        "old": next(line for line in summary if f"instance {old}:" in line),
        "total": next(line for line in summary if "the store now holds" in line),
    }
    for name, line in lines.items():
        assert "0 missed" not in line, (name, line)
        assert "an uncountable number missed" in line, (name, line)
    assert "1 app restarts without a spool" in summary[0]
    # the new process lost nothing since, and may say so
    assert re.search(rf"instance {new}: \d+ records, 0 missed$", "\n".join(summary), re.M)
    progress = [line for line in text.splitlines() if "so far" in line]
    assert "0 missed" not in progress[-1], progress[-1]
    point = ResumePoints(Store(store).wal_dir).get(feed_key(url))
    assert point is not None
    assert point["totals"]["boot_changes"] == 1
