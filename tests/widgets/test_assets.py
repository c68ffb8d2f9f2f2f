"""plotly.js ships inside the package, in the version the plotly package writes for."""

from __future__ import annotations

from perfnb.widgets._base import esm_source
from perfnb.widgets.assets import VENDORED, plotly_js, python_plotly_js_version


def test_vendored_plotly_matches_the_python_package() -> None:
    assert VENDORED.is_file()
    source, version = plotly_js()
    assert version == python_plotly_js_version()
    assert b"(basic - minified)" in source[:200]


def test_each_widget_esm_is_self_contained() -> None:
    dashboard = esm_source("dashboard")
    assert "__PLOTLY_LOADER__" not in dashboard
    assert "function plotlyLoader" in dashboard
    for name in ("loadpanel", "healthboard"):
        assert "export default" in esm_source(name)
