"""The post-mortem report opened offline in headless Chromium: every chart drawn with data.

The report is made by ``python -m perfnb.report`` (what ``perfnb report`` runs) over a
real store; the browser context is offline and any request that is not for the file
itself is blocked and recorded. A screenshot is kept in ``artifacts/browser/``.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from report_support import T0, fill

from perfnb.analysis.compare import save_baseline

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
CHARTS = ["timeline", "slowest", "errors", "server_vs_network", "baseline"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-browser") / "store"
    yesterday = T0 - timedelta(days=1)
    fill(root, start=yesterday, slow=0.7, seed=5, marks=False)
    store = fill(root, seed=6)
    save_baseline(store, "yesterday", start=yesterday, end=yesterday + timedelta(minutes=10))
    out = root.parent / "report.html"
    # fmt: off
    done = subprocess.run(
        [sys.executable, "-m", "perfnb.report", "--store", str(root), "--from",
         "2026-03-02T10:00Z", "--to", "2026-03-02T10:10Z", "--baseline", "yesterday",
         "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # fmt: on
    assert done.returncode == 0, done.stderr
    return out


def test_report_renders_every_chart_offline(chromium: Any, report: Path) -> None:
    context = chromium.new_context(offline=True, viewport={"width": 1300, "height": 900})
    fetched: list[str] = []

    def only_the_file(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            fetched.append(url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(report.as_uri())
        page.wait_for_function(
            "n => window.Plotly && Array.from(document.querySelectorAll('.perfnb-chart'))"
            ".filter(d => { const p = d.querySelector('.js-plotly-plot');"
            " return p && p._fullData; }).length === n",
            arg=len(CHARTS),
            timeout=60_000,
        )
        charts = page.evaluate(
            """() => Array.from(document.querySelectorAll('.perfnb-chart')).map(d => {
                const plot = d.querySelector('.js-plotly-plot');
                const points = plot._fullData.reduce(
                    (n, t) => n + ((t.x || []).filter(v => v !== null).length), 0);
                return {
                    name: d.dataset.chart,
                    traces: plot._fullData.length,
                    points: points,
                    drawn: plot.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
                    marks: plot.querySelectorAll(
                        'g.point path, path.point, .scatterlayer path.js-line').length,
                    width: plot.getBoundingClientRect().width,
                };
            })"""
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-offline.png"), full_page=True)
    finally:
        context.close()

    assert [c["name"] for c in charts] == CHARTS
    for chart in charts:
        assert chart["traces"] > 0, chart
        assert chart["points"] > 0, chart
        assert chart["drawn"] > 0, f"{chart['name']}: no SVG trace drawn"
        assert chart["marks"] > 0, f"{chart['name']}: no bar, marker or line in the SVG"
        assert chart["width"] > 300, chart
    assert fetched == [], f"the report asked the network for {fetched}"
    assert errors == []
    assert (ARTIFACTS / "report-offline.png").stat().st_size > 50_000
