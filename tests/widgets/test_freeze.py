"""Frozen views: static Plotly HTML with the data, a PNG from kaleido, and an nbconvert
HTML export of a frozen notebook that shows its charts in a real browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from chromium import launch

from perfnb.errors import ConfigError
from perfnb.widgets.freeze import Frozen, composite_figure, freeze_figures

FIGS: dict[str, dict[str, Any]] = {
    "a": {
        "data": [{"type": "scatter", "x": [1, 2, 3], "y": [4.5, 5.5, 6.5]}],
        "layout": {"title": {"text": "first"}},
    },
    "b": {
        "data": [
            {"type": "bar", "x": ["p"], "y": [7]},
            {"type": "scatter", "x": ["p"], "y": [0.25], "yaxis": "y2"},
        ],
        "layout": {"title": {"text": "second"}},
    },
}


def test_html_carries_every_figure_with_its_data_and_plotly_js() -> None:
    frozen = freeze_figures(FIGS, title="t", png=False)
    assert frozen.html.count("Plotly.newPlot") == 2
    assert "[4.5,5.5,6.5]" in frozen.html
    assert "plotly.js (basic - minified)" in frozen.html  # embedded: renders offline
    bundle = frozen._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}


def test_figures_beyond_the_basic_bundle_embed_the_full_plotly_js() -> None:
    frozen = freeze_figures({"h": {"data": [{"type": "heatmap", "z": [[1]]}]}}, png=False)
    assert "plotly.js (basic" not in frozen.html
    assert "Plotly.newPlot" in frozen.html


def test_composite_figure_keeps_secondary_axes() -> None:
    fig = composite_figure(FIGS)
    assert len(fig.data) == 3
    assert fig.data[2].yaxis != fig.data[1].yaxis


def test_save_png_without_png_names_the_option(tmp_path: Path) -> None:
    frozen = Frozen(html="<b>x</b>", png=None)
    with pytest.raises(ConfigError, match="png=True"):
        frozen.save(tmp_path / "x.png")
    assert "<b>x</b>" in frozen.save(tmp_path / "x.html").read_text()


@pytest.mark.slow
def test_png_comes_from_kaleido_with_the_machines_chromium(tmp_path: Path) -> None:
    frozen = freeze_figures(FIGS, title="t", png=True)
    assert frozen.png is not None
    assert frozen.png.startswith(b"\x89PNG")
    assert "data:image/png;base64," in frozen.html  # the fallback for script-less viewers
    assert frozen.save(tmp_path / "f.png").stat().st_size == len(frozen.png)
    assert "image/png" in frozen._repr_mimebundle_()


NOTEBOOK = [
    "from datetime import UTC, datetime, timedelta\n"
    "from perfnb.stream import Stream\n"
    "from perfnb.widgets import Dashboard\n"
    "stream = Stream()\n"
    "now = datetime.now(UTC)\n"
    "stream.extend([{'time': now - timedelta(seconds=i / 10), 'source': 'server', 'kind': 'http',"
    " 'route': '/api/r%d' % (i % 3), 'status': 200, 'duration_ms': 5.0 + i % 17}"
    " for i in range(300)])\n"
    "dash = Dashboard(stream, window=60)\n"
    "dash",
    "dash.freeze(png=False)",
    "dash.close(); stream.close()",
]


@pytest.mark.slow
def test_nbconvert_html_of_a_frozen_notebook_shows_the_charts_with_data(tmp_path: Path) -> None:
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        }
    )
    nb.cells = [nbformat.v4.new_code_cell(s) for s in NOTEBOOK]
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    html, _ = HTMLExporter().from_notebook_node(nb)
    page_file = tmp_path / "frozen.html"
    page_file.write_text(html, encoding="utf-8")
    with launch() as browser:
        try:
            page = browser.new_page()
            # the export links a few assets from the internet; offline they fail, harmlessly
            page.route("http*://**", lambda route: route.abort())
            page.goto(page_file.as_uri())
            page.wait_for_selector(".perfnb-frozen-chart .main-svg", timeout=30_000)
            points = page.evaluate(
                "() => [...document.querySelectorAll('.perfnb-frozen-chart .plotly-graph-div')]"
                ".map(d => d.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0))"
            )
        finally:
            browser.close()
    assert len(points) == 7
    assert points[0] > 0
    assert points[1] > 0
