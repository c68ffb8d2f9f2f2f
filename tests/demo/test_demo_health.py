"""Proof of the health engine against the real demo app's fault switches.

The demo app runs in its own process on 127.0.0.1 (uvicorn); its feed is followed
with :func:`perfnb.feedclient.connect` into a live :class:`~perfnb.stream.Stream`
that :func:`perfnb.analysis.watch.watch` judges, exactly as a notebook would.
Scripted guests (httpx, their client-side records pushed into the same stream)
keep steady traffic on three non-polling routes; then one fault is switched on
through ``POST /api/admin/faults`` and the test waits for the alert it must raise.

Stated detection bounds, from the moment the admin endpoint answered to the
moment ``on_alert`` was called (the windows are 1 s, two bad windows to raise):

==================  ==========================  ===============================
fault               expected alert              bound
==================  ==========================  ===============================
polling runaway     ``runaway`` naming the tab  20 s (the page may be on its
(real Chromium)     that runs away              5 s idle pace, then ~3 periods)
slow DB             ``degradation``             10 s
error burst         ``error_rate``              10 s
timeouts            ``timeout``                 10 s
memory leak         ``leak`` (server RSS)       15 s
==================  ==========================  ===============================

The polling runaway lives in the page's JavaScript, so it is driven in real
headless Chromium. The clean run records 60 s of six scripted guests at three
times life speed (three minutes of their work) through the feed once, then
replays it with the default thresholds on a simulated clock stretched back to
real pace, 21 times over (63 minutes): no alert may be raised. The speed-up is
modest because stretching also stretches the test machine's own hiccups (other
processes on shared cores): at ×3, a stall must last 10 s of real time to look
like the 30 s of sustained slowness that raises a degradation. Measured
latencies are printed (``pytest -s``) as ``detected <fault> in <s> s``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from perfnb.analysis.health import HealthEngine, records_of
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.watch import Watcher, watch
from perfnb.collect.httpx import default_route, instrument
from perfnb.demo.templates import SERVICE, route_template
from perfnb.demo.traffic import drive
from perfnb.feedclient import FeedConnection, connect
from perfnb.schema import Record
from perfnb.stream import Stream

pytestmark = pytest.mark.slow

MiB = 2**20
#: Thresholds for a short test: 1 s windows, a baseline of 4 windows, a leak over 4 s.
LIVE = HealthConfig(
    window_s=1.0,
    enter_windows=2,
    leave_windows=3,
    min_requests=3,
    baseline_windows=30,
    baseline_min_windows=4,
    degrade_min_ms=100.0,
    slow_ms=250.0,
    timeout_ms=1500.0,
    leak_bin_s=1.0,
    leak_bins=10,
    leak_min_duration_s=4.0,
    leak_min_growth_bytes=40 * MiB,
)
STEADY_ROUTES = ("/api/cards", "/api/presence", "/api/conversations")
#: Detection bounds in seconds (see the module docs).
BOUND = {"runaway": 20.0, "degradation": 10.0, "error_rate": 10.0, "timeout": 10.0, "leak": 15.0}


def _route(path: str) -> str:
    return route_template(path) or default_route(path)


def _guest(url: str, *, timeout: float) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=timeout)
    response = client.post("/api/guests", json={"name": "steady"})
    assert response.status_code == 201, response.text
    return client


class Steady:
    """Signed-in guests in threads, each cycling through the steady routes."""

    def __init__(self, url: str, stream: Stream, *, threads: int = 4, pause: float = 0.05) -> None:
        self.url = url
        self.stream = stream
        self.pause = pause
        self.stop = threading.Event()
        self.requests = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Steady:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        # 2 s: well above any steady latency, well below the timeout fault's 3 s hang.
        client = _guest(self.url, timeout=2.0)
        instrument(client, sink=self.stream.push, service=SERVICE, route=_route)
        try:
            while not self.stop.is_set():
                for route in STEADY_ROUTES:
                    try:
                        client.get(route)
                        self.requests += 1
                    except httpx.HTTPError:
                        pass  # a timeout is what the fault is for; its record is in the stream
                    if self.stop.wait(self.pause):
                        return
        finally:
            client.close()


@dataclass
class Watched:
    """The demo app's feed in a stream, watched; alerts kept with their arrival time."""

    demo: Any
    stream: Stream
    feed: FeedConnection
    watcher: Watcher
    alerts: list[tuple[float, Record]] = field(default_factory=list)

    def set_faults(self, **switches: Any) -> float:
        with self.demo.client() as admin:
            response = admin.post("/api/admin/faults", json=switches)
        assert response.status_code == 200, response.text
        return time.monotonic()

    def raised(self, name: str, *, after: float = 0.0) -> list[tuple[float, Record]]:
        return [
            (t, r)
            for t, r in list(self.alerts)
            if r["name"] == name and r["tags"]["state"] == "raised" and t >= after
        ]

    def wait_alert(self, name: str, *, since: float) -> tuple[float, Record]:
        """The first ``name`` alert after ``since``, waiting up to its stated bound."""
        deadline = since + BOUND[name]
        while time.monotonic() < deadline:
            found = self.raised(name, after=since)
            if found:
                t, record = found[0]
                print(f"detected {name} in {t - since:.1f} s: {record['tags']['message']}")
                return found[0]
            time.sleep(0.05)
        names = [(r["name"], r["tags"]["state"]) for _, r in self.alerts]
        raise AssertionError(f"no {name} alert within {BOUND[name]:.0f} s; alerts: {names}")

    def warm_up(self, routes: tuple[str, ...] = STEADY_ROUTES, *, timeout: float = 30.0) -> None:
        """Wait until each route has its baseline and no alert is open.

        (On a shared machine a stall of the app can open a short-lived alert
        before any fault; the fault's own alert is only counted once it clears.)
        """
        deadline = time.monotonic() + timeout
        need = LIVE.baseline_min_windows
        while time.monotonic() < deadline:
            baselines = self.watcher.baselines
            ready = all(baselines.get(r, (0, 0, 0))[2] >= need for r in routes)
            if ready and not self.watcher.active_alerts:
                return
            time.sleep(0.05)
        raise AssertionError(f"no baseline for {routes}, or alerts open, after {timeout:.0f} s")


@pytest.fixture
def watched(demo: Any) -> Iterator[Watched]:
    with Stream() as stream:
        alerts: list[tuple[float, Record]] = []
        feed = connect(demo.url, stream=stream, since="now")
        watcher = watch(
            stream, config=LIVE, on_alert=lambda r: alerts.append((time.monotonic(), r))
        )
        try:
            yield Watched(demo, stream, feed, watcher, alerts)
        finally:
            with demo.client() as admin:
                admin.delete("/api/admin/faults")
            watcher.close()
            feed.close()
    assert watcher.callback_errors == 0


def _routes(found: list[tuple[float, Record]]) -> set[str]:
    return {r.get("route", "") for _, r in found}


# -- each fault is detected and named ----------------------------------------------------


def test_slow_db_raises_degradation(watched: Watched) -> None:
    with Steady(watched.demo.url, watched.stream):
        watched.warm_up()
        on = watched.set_faults(slow_db_ms=150)
        _, alert = watched.wait_alert("degradation", since=on)
        assert alert["route"] in STEADY_ROUTES
        assert "baseline" in alert["tags"]["reason"]
        after = [r["name"] for t, r in watched.alerts if t >= on]
        assert not {"error_rate", "runaway"} & set(after), after


def test_error_burst_raises_error_rate(watched: Watched) -> None:
    with Steady(watched.demo.url, watched.stream):
        watched.warm_up()
        on = watched.set_faults(error_rate=0.5)
        _, alert = watched.wait_alert("error_rate", since=on)
        assert alert["route"] in STEADY_ROUTES
        assert "requests failed" in alert["tags"]["reason"]
        assert alert["tags"]["severity"] == "critical"


def test_timeouts_raise_timeout(watched: Watched) -> None:
    with Steady(watched.demo.url, watched.stream):
        watched.warm_up()
        on = watched.set_faults(timeout_ms=3000, routes=["/api/cards"])
        _, alert = watched.wait_alert("timeout", since=on)
        assert alert["route"] == "/api/cards"
        assert "timed out" in alert["tags"]["reason"]
        assert _routes(watched.raised("timeout")) == {"/api/cards"}


def test_memory_leak_raises_leak(watched: Watched) -> None:
    with Steady(watched.demo.url, watched.stream):
        watched.warm_up()
        on = watched.set_faults(leak_kb_per_request=256)
        _, alert = watched.wait_alert("leak", since=on)
        assert "server RSS" in alert["tags"]["reason"]
        assert alert["unit"] == "bytes/s"
        assert alert["value"] > 1 * MiB  # growing by MiB a second, as the fault makes it
        assert "leak" in {r["name"] for t, r in watched.alerts if t >= on}


def test_front_end_polling_runaway_in_chromium(watched: Watched) -> None:
    from chromium import launch

    stop = threading.Event()
    calm_polls: list[float] = []

    def calm_poller() -> None:  # another signed-in guest polling properly, every 2 s
        client = _guest(watched.demo.url, timeout=5.0)
        try:
            while True:
                client.get("/api/poll")
                calm_polls.append(time.monotonic())
                if stop.wait(2.0):
                    return
        finally:
            client.close()

    calm = threading.Thread(target=calm_poller, daemon=True)
    calm.start()
    try:
        with launch() as browser:
            page = browser.new_page()
            page.goto(watched.demo.url + "/")
            page.wait_for_function("window.perfnbDemo.state.polls >= 3", timeout=20_000)
            # Both pollers seen by the server, with their client keys; nothing raised yet.
            keys: set[str] = set()
            deadline = time.monotonic() + 10
            while len(keys) < 2 and time.monotonic() < deadline:
                frame = watched.stream.frame()
                polls = frame[(frame["route"] == "/api/poll") & (frame["source"] == "server")]
                keys = set(polls["client"].dropna())
                time.sleep(0.1)
            assert len(keys) >= 2, keys
            assert watched.raised("runaway") == []
            on = watched.set_faults(polling_runaway=True)
            _, alert = watched.wait_alert("runaway", since=on)
            assert page.evaluate("window.perfnbDemo.state.loops") > 1
            assert alert["route"] == "/api/poll"
            assert alert["client"] in keys
            assert alert["client"] in alert["tags"]["reason"]
            # Only the page ran away: the calm guest was never named.
            named = {r["client"] for _, r in watched.raised("runaway")}
            assert named == {alert["client"]}
            page.close()
    finally:
        stop.set()
        calm.join(timeout=10)
    assert len(calm_polls) >= 3


# -- a clean run raises nothing -----------------------------------------------------------


def test_clean_traffic_replayed_over_an_hour_raises_no_alert(demo: Any) -> None:
    speed, seconds, tiles = 3.0, 180.0, 21
    with Stream(max_age=3600) as stream:
        with connect(demo.url, stream=stream, since="now") as feed:
            result = asyncio.run(
                drive(demo.url, guests=6, seconds=seconds, speed=speed, sink=stream.push, seed=8)
            )
            # A marker request: once its record is through the feed, so is all before it.
            with demo.client() as client:
                client.get("/api/health")

            def marker_seen(_conn: FeedConnection) -> bool:
                frame = stream.frame()
                return bool(
                    ((frame["route"] == "/api/health") & (frame["source"] == "server")).any()
                )

            assert feed.wait_for(marker_seen, timeout=30)
        frame = stream.frame()
    recorded = frame[frame["source"] != "perfnb"]
    assert result.requests > 500  # three minutes of six people: ~900 requests
    assert result.errors == 0
    server = recorded[(recorded["source"] == "server") & (recorded["kind"] == "http")]
    assert len(server) >= result.requests * 0.9  # the feed dropped nothing that matters
    records = records_of(recorded)
    span = records[-1]["time"] - records[0]["time"] + timedelta(seconds=1)
    tiled: list[Record] = []
    for k in range(tiles):
        for record in records:
            copy = dict(record)
            copy["time"] = record["time"] + span * k
            tiled.append(copy)  # type: ignore[arg-type]
    engine = HealthEngine()  # the production defaults
    out = engine.replay(tiled, stretch=speed)
    simulated = (tiled[-1]["time"] - tiled[0]["time"]).total_seconds() * speed
    print(f"clean replay: {len(tiled)} records over {simulated / 60:.0f} simulated minutes")
    assert simulated >= 3600
    alerts = [r for r in out if r["kind"] == "alert"]
    assert alerts == [], [r["tags"]["message"] for r in alerts]
    states = engine.states
    assert states["apiPolling"].state == "healthy", states
    assert states["serverResponse"].state == "good", states
