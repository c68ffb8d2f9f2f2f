"""The post-mortem report shows health even when nothing watched the range live.

A real session: the demo app (``python -m perfnb.demo``) on 127.0.0.1, its feed
recorded into a Parquet store by the feed client while signed-in guests use it;
half way through, the app's error-burst fault fails half of its API requests.
Nothing watched health live, so the store holds no ``health``/``alert`` records:
notebook 03 replays the engine over the detail, and its timeline (title "health
replayed from the detail") shows the fault's ``error_rate`` alert. ``perfnb health``
finds the same alert from the same store.
"""

from __future__ import annotations

import doctest
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from report_support import T0

import perfnb.reportfigures
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.demo.process import DemoAppProcess
from perfnb.feedclient import connect
from perfnb.healthcmd import main_health
from perfnb.report import build_report, main_report, timeline_figure
from perfnb.store import Store

#: Short windows so that a few seconds of fault make an alert (the defaults need 30 s).
QUICK = HealthConfig(
    window_s=1.0,
    enter_windows=2,
    leave_windows=2,
    min_requests=3,
    baseline_min_windows=3,
)
ROUTES = ("/api/cards", "/api/presence", "/api/conversations")


class Guests:
    """Signed-in guests in threads, cycling through a few API routes."""

    def __init__(self, url: str, *, threads: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.requests = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Guests:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            assert client.post("/api/guests", json={"name": "replay"}).status_code == 201
            while not self.stop.is_set():
                for route in ROUTES:
                    try:
                        client.get(route)
                        self.requests += 1
                    except httpx.HTTPError:
                        pass
                    if self.stop.wait(0.03):
                        return


def _session(tmp: Path) -> tuple[Path, datetime, datetime]:
    root = tmp / "store"
    with DemoAppProcess(db=tmp / "demo.sqlite3", log=tmp / "demo.log") as app:
        recorder = connect(app.url, store=str(root), since="now")
        try:
            assert recorder.wait_for(lambda c: c.connected, timeout=20), recorder.error
            start = datetime.now(UTC)
            with Guests(app.url) as guests, httpx.Client(base_url=app.url) as admin:
                time.sleep(6)  # calm: the routes' baselines
                assert admin.post("/api/admin/faults", json={"error_rate": 0.5}).status_code == 200
                time.sleep(5)
                assert admin.delete("/api/admin/faults").status_code == 200
                time.sleep(4)  # recovery: the alert clears
            assert guests.requests > 100
            # everything the app recorded up to now reaches the store before it closes
            seq = admin_seq(app.url)
            assert recorder.wait_for(lambda c: _last(c) >= seq, timeout=20)
            end = datetime.now(UTC)
        finally:
            recorder.close()
    return root, start, end


def admin_seq(url: str) -> int:
    control = httpx.get(f"{url}/api/performance-metrics/control", timeout=5.0).json()
    return int(control["seq"])


def _last(conn: Any) -> int:
    last = conn.last_event_id or ""
    return int(last.rsplit(":", 1)[-1]) if ":" in last else -1


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime, datetime]:
    return _session(tmp_path_factory.mktemp("replay"))


@pytest.mark.slow
def test_report_replays_health_from_a_real_session_and_shows_the_fault(
    session: tuple[Path, datetime, datetime], tmp_path: Path
) -> None:
    root, start, end = session
    store = Store(root)
    assert store.read(start, end, kinds=["health", "alert"]).empty  # nothing watched live
    out = tmp_path / "report.html"
    report = build_report(root, start, end, out=out, health=QUICK, timeout=240)
    html = report.html.read_text(encoding="utf-8")
    assert "health replayed from the detail" in html
    assert "error_rate raised (critical)" in html  # the alert's marker on the timeline
    assert "error_rate cleared" in html
    # the replay wrote nothing: the store is as it was
    assert Store(root).read(start, end, kinds=["health", "alert"]).empty


@pytest.mark.slow
def test_health_command_finds_the_same_alert_and_writes_it_once(
    session: tuple[Path, datetime, datetime],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, start, end = session
    config = tmp_path / "quick.json"
    config.write_text(json.dumps(QUICK.to_dict()))
    argv = ["--store", str(root), "--from", start.isoformat(), "--to", end.isoformat()]
    assert main_health([*argv, "--config", str(config), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    raised = [r for r in lines if r["kind"] == "alert" and r["tags"]["state"] == "raised"]
    assert "error_rate" in {r["name"] for r in raised}
    # the same alert, as the report showed it, only on a copy of the store: written once
    copy = tmp_path / "copy"
    Store(copy).append(Store(root).read(start, end + timedelta(seconds=5)))
    argv[1] = str(copy)
    assert main_health([*argv, "--config", str(config), "--write"]) == 0
    assert main_health([*argv, "--config", str(config), "--write"]) == 0
    assert "wrote 0 record(s)" in capsys.readouterr().out
    written = Store(copy).read(kinds=["health", "alert"])
    assert len(written) == len(lines)


def test_timeline_title_says_when_health_was_replayed() -> None:
    plain = timeline_figure(None, None, start=T0, end=T0 + timedelta(hours=1))
    replayed = timeline_figure(None, None, start=T0, end=T0 + timedelta(hours=1), replayed=True)
    assert "replayed" not in plain["layout"]["title"]["text"]
    assert "health replayed from the detail" in replayed["layout"]["title"]["text"]


def test_a_bad_health_config_exits_2_before_any_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "store" / "events").mkdir(parents=True)
    bad = tmp_path / "health.json"
    bad.write_text('{"window_s": 0}')
    argv = ["--store", str(tmp_path / "store"), "--from", "2026-01-01", "--to", "2026-01-02"]
    assert main_report([*argv, "--health-config", str(bad)]) == 2
    assert "--health-config" in capsys.readouterr().err
    assert main_report([*argv, "--health-config", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_figure_doctests() -> None:
    result = doctest.testmod(perfnb.reportfigures, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
