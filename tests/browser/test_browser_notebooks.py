"""perfnb's notebooks in a real JupyterLab and a real browser.

Each test opens a shipped notebook, runs its cells as a user would, and checks
what the page shows: charts painted and changing while the demo app takes
traffic, frozen charts drawn, no tracebacks, no console errors. Screenshots land
in ``artifacts/browser/``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _code_cells(lab_page: Any) -> list[int]:
    kinds: list[str] = lab_page._eval(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.type)"
    )
    return [i for i, kind in enumerate(kinds) if kind == "code"]


def _chart_points(lab_page: Any, chart: str) -> int:
    value = lab_page._eval(
        "(c) => { const d = document.querySelector(`.perfnb-dashboard .perfnb-chart"
        '[data-chart="${c}"]`); return d && d.dataset.points ? Number(d.dataset.points) : -1; }',
        chart,
    )
    return int(value)


def _readout(lab_page: Any, name: str) -> str:
    text = lab_page._eval(
        "(n) => { const r = document.querySelector(`.perfnb-dashboard .perfnb-readout"
        '[data-readout="${n}"]`); return r ? r.textContent : ""; }',
        name,
    )
    return str(text)


def _wait(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_live_dashboard_paints_and_follows_the_demo_app(lab_page: Any) -> None:
    lab_page.open("01_live_dashboard.ipynb")
    cells = _code_cells(lab_page)
    setup, dashboard, traffic, *rest = cells
    lab_page.run_cell(setup)
    lab_page.run_cell(dashboard)
    lab_page.page.wait_for_selector(
        ".perfnb-dashboard .perfnb-chart[data-chart='latency'][data-painted]", timeout=30_000
    )
    lab_page.page.wait_for_selector(
        ".perfnb-dashboard .perfnb-chart[data-chart='polling'][data-painted]", timeout=30_000
    )
    lab_page.screenshot("dashboard-painted")

    # traffic starts; while its cell still waits, the charts must fill in
    lab_page.run_cell(traffic, wait=False)
    before = _chart_points(lab_page, "throughput")
    _wait(
        lambda: _chart_points(lab_page, "throughput") >= before + 3,
        timeout=60,
        what="the throughput chart to grow",
    )
    first = _chart_points(lab_page, "latency")
    _wait(
        lambda: _chart_points(lab_page, "latency") > first,
        timeout=60,
        what="the latency chart to change",
    )
    lab_page.wait_idle(timeout=120)

    def light() -> str | None:
        return lab_page.page.get_attribute(
            ".perfnb-dashboard .perfnb-light[data-light='serverResponse']", "data-state"
        )

    # the health engine judges a light once its first 10 s window with traffic has ended
    _wait(
        lambda: light() in {"good", "slow", "timeout"},
        timeout=60,
        what="the serverResponse light to be judged",
    )
    # perfnb's own cost, from the middleware's overhead records, as a share of server time
    _wait(
        lambda: "% of server time" in _readout(lab_page, "overhead"),
        timeout=30,
        what="the overhead readout",
    )
    lab_page.screenshot("dashboard-with-traffic", selector=".perfnb-dashboard")

    for index in rest:
        lab_page.run_cell(index, timeout=180)
    # the frozen copy is drawn by plain plotly.js, not by the widget
    lab_page.page.wait_for_selector(".perfnb-frozen .perfnb-frozen-chart .main-svg", timeout=30_000)
    lab_page.screenshot("frozen", selector=".perfnb-frozen")
    assert lab_page.error_outputs() == []
    assert lab_page.console_errors == []


def _set_input(lab_page: Any, name: str, value: str) -> None:
    box = lab_page.page.locator(f".perfnb-panel input[data-control='{name}']").last
    box.fill(value)
    box.dispatch_event("change")


def test_load_panel_emergency_stop_ends_traffic_within_a_second(
    lab_page: Any, demo_app: Any
) -> None:
    from perfnb.feedclient import connect

    seen: list[dict[str, Any]] = []
    with connect(demo_app.url, sink=seen.append, since="now") as feed:
        lab_page.open("02_load_test.ipynb")
        setup, panel_cell, *rest = _code_cells(lab_page)
        lab_page.run_cell(setup)
        lab_page.run_cell(panel_cell)
        page = lab_page.page
        page.wait_for_selector(".perfnb-panel button[data-action='start']", timeout=30_000)
        page.wait_for_selector(".perfnb-dashboard .perfnb-chart[data-painted]", timeout=30_000)
        # a long, steady run that no limit will stop before the button does, at a rate the
        # app keeps up with (an overloaded app would still be starting queued requests)
        _set_input(lab_page, "duration", "120")
        _set_input(lab_page, "rate", "40")
        _set_input(lab_page, "max_p95_ms", "0")
        _set_input(lab_page, "max_error_rate", "0.5")
        page.click(".perfnb-panel button[data-action='start']")

        def load_records() -> list[dict[str, Any]]:
            return [
                r
                for r in list(seen)
                if r.get("source") == "server" and str(r.get("run_id") or "").startswith("panel-")
            ]

        _wait(
            lambda: len(load_records()) >= 80,
            timeout=90,
            what=f"load traffic at the app (feed: {feed.received} received, {len(seen)} seen)",
        )
        status = ".perfnb-panel .perfnb-run-status"
        assert page.get_attribute(status, "data-status") == "running", page.inner_text(status)
        lab_page.screenshot("panel-running", selector=".jp-OutputArea-output .widget-hbox")
        button = ".perfnb-panel button[data-action='emergency_stop']"
        page.click(button)
        # the moment the click reached the page (Playwright's own click waits for the
        # button to be stable first, which says nothing about perfnb)
        clicked = float(page.get_attribute(button, "data-clicked-at") or "nan")
        page.wait_for_selector(
            ".perfnb-panel .perfnb-run-status[data-status='finished']", timeout=30_000
        )
        assert page.get_attribute(".perfnb-panel [data-stop-reason]", "data-stop-reason") == (
            "emergency_stop"
        )
        time.sleep(2.0)  # what was in flight reaches the feed
        last_start = max(r["time"].timestamp() for r in load_records())
        assert last_start <= clicked + 1.0, (
            f"load went on {last_start - clicked:.2f} s after the click"
        )
        lab_page.screenshot("panel-stopped", selector=".jp-OutputArea-output .widget-hbox")

    *middle, stop_cell = rest
    for index in middle:
        lab_page.run_cell(index, timeout=240)
    page.wait_for_selector(".perfnb-healthboard tr[data-route]", timeout=30_000)
    lab_page.screenshot("healthboard", selector=".perfnb-healthboard")
    page.wait_for_selector(".perfnb-frozen .perfnb-frozen-chart .main-svg", timeout=30_000)
    lab_page.screenshot("frozen", selector=".perfnb-frozen")
    lab_page.run_cell(stop_cell)  # closes the live widgets; the frozen copies stay
    assert lab_page.error_outputs() == []
    assert lab_page.console_errors == []
