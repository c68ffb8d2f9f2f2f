"""Freeze live widgets into static Plotly HTML (and a PNG) that any viewer can show.

Live widget state saved in a notebook is stale or blank once the kernel is gone,
so every perfnb widget has a ``freeze()`` that turns what it shows now into:

- **HTML**: the figures as plain Plotly charts with their data, plotly.js embedded
  (the basic bundle when every trace is a scatter, bar or pie; the full one
  otherwise), so it renders offline, in JupyterLab and in nbconvert's HTML;
- **PNG**: one picture of all the charts, drawn by kaleido with the machine's
  Chromium (Debian ``chromium``; kaleido finds ``/usr/bin/chromium`` itself, or
  set ``BROWSER_PATH``). The PNG is also embedded in the HTML as a fallback image
  that the charts replace when scripts run, so viewers that strip scripts (an
  untrusted notebook, a code host's preview) still show the charts.

>>> figs = {"demo": {"data": [{"type": "bar", "x": ["a"], "y": [1]}], "layout": {}}}
>>> frozen = freeze_figures(figs, title="demo", png=False, display=False)
>>> "Plotly.newPlot" in frozen.html and '"y":[1]' in frozen.html
True
"""

from __future__ import annotations

import base64
import html as htmlmod
import math
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from perfnb.errors import PerfnbWarning
from perfnb.widgets._protocols import AlertItem, HealthLight
from perfnb.widgets.assets import plotly_js

__all__ = [
    "Chart",
    "Frozen",
    "composite_figure",
    "freeze_figures",
    "plotly_script",
    "static_chart",
    "to_png",
]

BASIC_TRACES: Final = frozenset({"scatter", "bar", "pie"})
_LEVEL_COLOURS: Final = {"ok": "#2e7d32", "warn": "#f9a825", "bad": "#c62828"}


@dataclass
class Frozen:
    """A frozen view: ``html`` (self-contained), ``png`` (or None) and the figures.

    Displayed in a notebook as HTML with the PNG beside it in the same output,
    so each viewer picks what it can show.
    """

    html: str
    png: bytes | None
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _repr_mimebundle_(self, **_: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/html": self.html, "text/plain": "<perfnb frozen view>"}
        if self.png:
            bundle["image/png"] = base64.b64encode(self.png).decode()
        return bundle

    def save(self, path: str | Path) -> Path:
        """Write the HTML (``.html``) or the PNG (``.png``) to ``path``."""
        target = Path(path)
        if target.suffix.lower() == ".png":
            if self.png is None:
                from perfnb.errors import ConfigError

                raise ConfigError(f"path: {str(target)!r} asks for a PNG; freeze with png=True")
            target.write_bytes(self.png)
        else:
            target.write_text(
                f"<!doctype html><html><head><meta charset='utf-8'></head><body>{self.html}"
                "</body></html>",
                encoding="utf-8",
            )
        return target


def _trace_types(figures: Mapping[str, Mapping[str, Any]]) -> set[str]:
    return {str(t.get("type", "scatter")) for f in figures.values() for t in f.get("data", [])}


def composite_figure(figures: Mapping[str, Mapping[str, Any]], *, cols: int = 2) -> Any:
    """All figures as subplots of one Plotly figure (the PNG's layout)."""
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    names = list(figures)
    rows = max(1, math.ceil(len(names) / cols))
    titles = [
        str(((figures[n].get("layout") or {}).get("title") or {}).get("text", n)) for n in names
    ]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        specs=[[{"secondary_y": True} for _ in range(cols)] for _ in range(rows)],
        vertical_spacing=0.5 / rows if rows > 1 else 0.1,
    )
    for index, name in enumerate(names):
        row, col = index // cols + 1, index % cols + 1
        for trace in figures[name].get("data", []):
            spec = dict(trace)
            secondary = spec.pop("yaxis", "y") == "y2"
            spec.pop("xaxis", None)
            spec["showlegend"] = False
            fig.add_trace(spec, row=row, col=col, secondary_y=secondary)
    fig.update_layout(
        height=300 * rows,
        width=1200,
        margin={"l": 50, "r": 50, "t": 60, "b": 40},
        font={"size": 10},
    )
    fig.update_annotations(font_size=12)
    return fig


def to_png(figures: Mapping[str, Mapping[str, Any]]) -> bytes:
    """One PNG of all ``figures``, drawn by kaleido (headless Chromium)."""
    import plotly.io as pio  # type: ignore[import-untyped]

    png: bytes = pio.to_image(composite_figure(figures), format="png", scale=1)
    return png


def _lights_html(health: Mapping[str, HealthLight]) -> str:
    parts = []
    for name, light in health.items():
        colour = _LEVEL_COLOURS.get(light["level"], "#9e9e9e")
        parts.append(
            "<div style='flex:1 1 200px;border:1px solid #ddd;border-radius:4px;padding:4px 8px'>"
            f"<span style='display:inline-block;width:10px;height:10px;border-radius:50%;"
            f"background:{colour};margin-right:6px'></span>"
            f"<b>{htmlmod.escape(name)}: {htmlmod.escape(light['state'])}</b>"
            f"<div style='color:#666'>{htmlmod.escape(light['reason'])}</div></div>"
        )
    return f"<div style='display:flex;gap:8px;flex-wrap:wrap'>{''.join(parts)}</div>"


def _alerts_html(alerts: Sequence[AlertItem]) -> str:
    if not alerts:
        return "<p style='color:#666'>no alerts</p>"
    items = []
    for a in alerts[:20]:
        when = datetime.fromtimestamp(a["t"], UTC).strftime("%H:%M:%S")
        items.append(
            f"<li>{when} UTC <b>{htmlmod.escape(a['level'])}</b> "
            f"{htmlmod.escape(a['message'])}</li>"
        )
    return f"<ul>{''.join(items)}</ul>"


def plotly_script(*, basic: bool = True) -> str:
    """plotly.js, inline, in a ``<script>`` that defines ``Plotly`` once per page.

    ``basic`` takes the vendored basic bundle (scatter, bar and pie traces: about a
    fifth of the full one); otherwise the full bundle of the ``plotly`` package.

    >>> plotly_script().startswith("<script type='text/javascript'>if (!window.Plotly)")
    True
    """
    if basic:
        source, _version = plotly_js()
        code = source.decode("utf-8")
    else:
        from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

        code = get_plotlyjs()
    # a page may hold several frozen views: each brings plotly.js but runs it once
    return "<script type='text/javascript'>if (!window.Plotly) {" + code + "\n}</script>"


def _chart_html(
    name: str, fig: Mapping[str, Any], *, css_class: str = "perfnb-frozen-chart"
) -> str:
    import plotly.io as pio

    layout = dict(fig.get("layout") or {})
    layout.setdefault("height", 280)
    layout.pop("uirevision", None)
    html: str = (
        f"<div class='{css_class}' data-chart='{htmlmod.escape(name)}'>"
        + pio.to_html(
            {"data": fig.get("data", []), "layout": layout},
            include_plotlyjs=False,
            full_html=False,
            validate=False,
            config={"displaylogo": False, "responsive": True},
        )
        + "</div>"
    )
    return html


@dataclass(frozen=True)
class Chart:
    """One static Plotly chart as HTML, without plotly.js (see :func:`static_chart`)."""

    name: str
    html: str
    figure: Mapping[str, Any]

    def _repr_mimebundle_(self, **_: Any) -> dict[str, Any]:
        return {"text/html": self.html, "text/plain": f"<perfnb chart {self.name}>"}


def static_chart(figure: Mapping[str, Any], *, name: str) -> Chart:
    """A Plotly figure dict as a static chart: a ``div`` and the ``Plotly.newPlot`` call.

    It brings no plotly.js: show :func:`plotly_script` once earlier on the page (a
    report shows it in its first cell), so a page of many charts carries the
    library once. The div has the class ``perfnb-chart`` and ``data-chart=name``.

    >>> chart = static_chart({"data": [{"type": "bar", "x": ["a"], "y": [1]}]}, name="demo")
    >>> "data-chart='demo'" in chart.html and "Plotly.newPlot" in chart.html
    True
    """
    return Chart(name=name, html=_chart_html(name, figure, css_class="perfnb-chart"), figure=figure)


def freeze_figures(
    figures: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "perfnb",
    health: Mapping[str, HealthLight] | None = None,
    alerts: Sequence[AlertItem] | None = None,
    tables: Mapping[str, str] | None = None,
    png: bool = True,
    display: bool = False,
) -> Frozen:
    """Freeze ``figures`` (Plotly figure dicts) with optional lights, alerts and HTML tables.

    ``display`` shows the result in the notebook (text/html with image/png); the
    :class:`Frozen` is returned either way.
    """
    figs = {name: dict(fig) for name, fig in figures.items()}
    image: bytes | None = None
    if png and figs:
        try:
            image = to_png(figs)
        except Exception as exc:  # no Chromium for kaleido: the HTML still carries the data
            warnings.warn(
                f"freeze: no PNG ({type(exc).__name__}: {exc}); the HTML has the charts",
                PerfnbWarning,
                stacklevel=2,
            )
    key = uuid.uuid4().hex[:10]
    script = plotly_script(basic=_trace_types(figs) <= BASIC_TRACES)
    charts = [_chart_html(name, fig) for name, fig in figs.items()]
    fallback = ""
    if image is not None:
        b64 = base64.b64encode(image).decode()
        fallback = (
            f"<img id='perfnb-fallback-{key}' alt='{htmlmod.escape(title)}' "
            f"style='max-width:100%' src='data:image/png;base64,{b64}'/>"
            f"<script>(function(){{var i=document.getElementById('perfnb-fallback-{key}');"
            "if(i&&window.Plotly){i.style.display='none';}})();</script>"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = [
        f"<div class='perfnb-frozen' id='perfnb-frozen-{key}' style='font-family:sans-serif'>",
        f"<h3 style='margin:4px 0'>{htmlmod.escape(title)}</h3>",
        f"<div style='color:#666;font-size:12px'>frozen {stamp}</div>",
    ]
    if health:
        body.append(_lights_html(health))
    body.append(script)
    body.append(fallback)
    body.append(
        "<div style='display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));"
        f"gap:4px'>{''.join(charts)}</div>"
    )
    for caption, table in (tables or {}).items():
        body.append(f"<h4 style='margin:6px 0 2px'>{htmlmod.escape(caption)}</h4>{table}")
    if alerts is not None:
        body.append("<h4 style='margin:6px 0 2px'>Alerts</h4>" + _alerts_html(alerts))
    body.append("</div>")
    frozen = Frozen(html="".join(body), png=image, figures=figs)
    if display:
        from IPython.display import display as show

        show(frozen)  # type: ignore[no-untyped-call]
    return frozen
