"""`perfnb record` against gunicorn's sync workers sharing a fleet directory, killed and restarted.

The feed's id holds a place per worker process; the recorder keeps it opaque,
stores it with each batch, and resumes every worker exactly after SIGKILL. No app
restart is invented from ids of different workers, and counts are per worker.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from recorder_support import free_port, start_recorder, stored, wait_for_line

from perfnb.feedtargets import feed_key
from perfnb.store import Store
from perfnb.store.resume import ResumePoints

pytestmark = pytest.mark.slow

APPS = Path(__file__).parent / "server"
N = 800
ROUTE = "/hello/<int:n>"


def _send(url: str, done: threading.Event) -> None:
    # a new connection per request, so gunicorn spreads them over its workers
    with httpx.Client(
        base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    ) as c:
        for n in range(N):
            assert c.get(f"/hello/{n}").status_code == 200
            time.sleep(0.005)
    done.set()


def test_a_recorder_killed_while_following_gunicorn_workers_resumes_each_exactly(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("PERFNB_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PERFNB_FLEET_DIR": str(tmp_path / "fleet"), "PYTHONPATH": str(APPS)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "-w",
            "3",
            "fleet_apps:flask_app",
        ],
        cwd=APPS,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = tmp_path / "store"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/pid", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            time.sleep(0.1)
        done = threading.Event()
        sender = threading.Thread(target=_send, args=(url, done), daemon=True)
        sender.start()
        for run in range(4):
            proc, out = start_recorder(store, tmp_path / f"run{run}.log", url)
            time.sleep(rng.uniform(0.5, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            out.close()
            time.sleep(rng.uniform(0.0, 0.5))
        final = tmp_path / "final.log"
        proc, out = start_recorder(store, final, url, "--progress", "0.5")
        assert done.wait(60), "the requests did not all go out"
        sender.join()
        assert wait_for_line(final, "following", timeout=20)
        # caught up: a sync worker's stream ends when it has nothing more, and the
        # recorder comes back after the stream's retry hint (1 s)
        time.sleep(4.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, final.read_text()
        out.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = final.read_text()
    context = f"seed {seed}\n{text}"
    records = stored(store)
    assert len(records) == len(set(records)), f"duplicates; {context}"
    hellos = [r for r in records if r[4] == ROUTE and r[1] == "server"]
    assert len(hellos) == N, context
    point = ResumePoints(Store(store).wal_dir).get(feed_key(url))
    assert point is not None
    totals = point["totals"]
    assert (totals["received"], totals["dropped"], totals["boot_changes"]) == (len(records), 0, 0)
    assert len(totals["instances"]) >= 2, "counted per worker"
    assert sum(t["received"] for t in totals["instances"].values()) == len(records)
    everything = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "restarted without its spool" not in everything
    assert "records missed" not in everything
    summary = text[text.index("stopped:") :]
    assert "; 0 missed (" in summary
    assert "0 app restarts without a spool" in summary
    workers = re.findall(r"instance \S+ \(host \S+, pid (\d+)\): (\d+) records, 0 missed", summary)
    assert len({pid for pid, count in workers if int(count) > 0}) >= 2, summary
    assert not re.search(r"instance \S+: \d+ records", summary), "every worker has its pid"
