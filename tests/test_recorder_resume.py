"""`perfnb record` killed with SIGKILL at random moments resumes exactly from its store."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
from recorder_support import (
    Traffic,
    app_process,
    free_port,
    start_recorder,
    stored,
    taken,
    wait_for_line,
    wait_until_quiet,
)

from perfnb.feedtargets import feed_key
from perfnb.store import Store
from perfnb.store.resume import ResumePoints

pytestmark = pytest.mark.slow


def test_a_recorder_killed_ten_times_stores_each_record_once_and_reports_every_gap(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("PERFNB_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    store = tmp_path / "store"
    # A ring of 400 records; while the recorder is away after these runs, a burst of
    # 500 requests overwrites what it had not read yet.
    long_away = {3, 7}
    journal = tmp_path / "app.journal"
    with (
        app_process(
            free_port(), tmp_path / "app.spool", "--buffer", "400", "--journal", str(journal)
        ) as url,
        Traffic(url, rate=100) as traffic,
    ):
        logs: list[Path] = []
        for run in range(10):
            log = tmp_path / f"run{run}.log"
            logs.append(log)
            proc, out = start_recorder(store, log, url, "--progress", "0.2")
            # any moment: while it starts (imports, opens the store, connects), or,
            # every other run, once it follows the feed and stores batches
            if run % 2 and wait_for_line(log, "following", timeout=30):
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                time.sleep(rng.uniform(0.3, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            out.close()
            if run in long_away:
                traffic.burst(500)
            time.sleep(rng.uniform(0.0, 0.4))
        final = tmp_path / "final.log"
        proc, out = start_recorder(store, final, url, "--progress", "0.2")
        assert wait_for_line(final, "following", timeout=20), final.read_text()
        time.sleep(1.0)
        traffic.stop()
        # caught up once its count stops moving (no traffic: no new records)
        assert wait_until_quiet(final, seconds=1.5, timeout=60), final.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, final.read_text()
        out.close()
    app_records = taken(journal)
    text = final.read_text()
    context = f"seed {seed}\n{text}"

    records = stored(store)
    assert len(records) == len(set(records)), f"duplicates stored; {context}"
    position = {identity: index for index, identity in enumerate(app_records)}
    assert all(r in position for r in records), context
    # The app numbered its records in this order. The first run started at the oldest
    # record the app still held then; from there on, every record is stored or counted.
    first = min(position[r] for r in records)
    seen = max(position[r] for r in records) + 1
    assert all(r[4] != "/hello" for r in app_records[seen:]), context
    point = ResumePoints(Store(store).wal_dir).get(feed_key(url))
    assert point is not None
    totals = point["totals"]
    assert totals["received"] == len(records), context
    gap = seen - first - len(records)
    assert gap == totals["dropped"], f"the gap reported is not the gap; {context}"
    assert totals["dropped"] > 0, f"the long absences overflowed the app's ring; {context}"
    assert totals["boot_changes"] == 0
    sent = {run_id for ids in traffic.sent.values() for run_id in ids}
    hello = {r[5] for r in records if r[4] == "/hello" and r[5] is not None}
    assert hello <= sent
    after_first = {r[5] for r in app_records[first:] if r[4] == "/hello" and r[5] is not None}
    assert len(after_first - hello) <= totals["dropped"], context

    # what the final run says is the store's truth, in numbers
    said = re.search(r"the store now holds (\d+) records of this feed \((\d+) missed", text)
    assert said is not None, context
    assert (int(said[1]), int(said[2])) == (len(records), totals["dropped"]), context
    assert "0 missed, 0 invalid, over every run" not in text
    # every run that stored something resumed from the store's point, never from --since
    assert "resuming after the point stored with its records" in text
    # a killed run logs a gap only once it is stored with the batch that skips it
    logged = sum(
        int(n)
        for log in [*logs, final]
        for n in re.findall(r"(\d+) records missed", log.read_text(errors="replace"))
    )
    assert logged <= totals["dropped"], context
