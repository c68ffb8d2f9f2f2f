"""The dashboard's charts as plain Plotly figure dicts, built from per-second summaries.

The live dashboard draws the same charts in the browser (``static/dashboard.js``
mirrors :func:`dashboard_figures`); this module builds them in the kernel for
:func:`~perfnb.widgets.freeze.freeze` and for tests. Times become ISO strings so
the figures are JSON as they stand.

>>> figs = dashboard_figures([{"t": 0, "n": 2, "err": 1, "lat": {"/a": [1.0, 2.0, 3.0]},
...                            "rps": {"/a": 2}}])
>>> sorted(figs)
['cpu_memory', 'errors', 'latency', 'polling', 'server_network', 'throughput', 'vitals']
>>> figs["errors"]["data"][0]["y"]
[50.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from perfnb.widgets._protocols import SecondSummary

__all__ = ["CHARTS", "dashboard_figures", "top_routes"]

#: chart id -> title, in the order the dashboard lays them out.
CHARTS: Final[dict[str, str]] = {
    "latency": "Latency per route (ms): p50 · p95 · p99",
    "throughput": "Throughput (requests/s)",
    "errors": "Error rate (%)",
    "server_network": "Where time goes (ms, mean): server vs network",
    "cpu_memory": "Process memory (MB) and CPU (%)",
    "vitals": "Web Vitals (p75)",
    "polling": "Polling cadence",
}

PALETTE: Final = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
)


def _iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def top_routes(summaries: Sequence[SecondSummary], *, limit: int = 6) -> list[str]:
    """The busiest routes over ``summaries`` (most requests first)."""
    counts: dict[str, int] = {}
    for s in summaries:
        for route, n in s.get("rps", {}).items():
            counts[route] = counts.get(route, 0) + n
    return [r for r, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 13}},
        "margin": {"l": 50, "r": 50, "t": 36, "b": 30},
        "height": 240,
        "showlegend": True,
        "legend": {"orientation": "h", "y": -0.2, "font": {"size": 10}},
        "xaxis": {"type": "date"},
        "uirevision": "perfnb",
    }
    layout.update(extra)
    return layout


def dashboard_figures(
    summaries: Sequence[SecondSummary], *, max_routes: int = 6
) -> dict[str, dict[str, Any]]:
    """Every dashboard chart as a Plotly figure dict (``{"data": [...], "layout": {...}}``)."""
    ordered = sorted(summaries, key=lambda s: s["t"])
    x = [_iso(s["t"]) for s in ordered]
    figs: dict[str, dict[str, Any]] = {}

    traces: list[dict[str, Any]] = []
    for i, route in enumerate(top_routes(ordered, limit=max_routes)):
        color = PALETTE[i % len(PALETTE)]
        for index, (label, dash, width) in enumerate(
            (("p50", "dot", 1), ("p95", "solid", 2), ("p99", "dash", 1))
        ):
            xs, ys = [], []
            for t, s in zip(x, ordered, strict=True):
                lat = s.get("lat", {}).get(route)
                if lat is not None:
                    xs.append(t)
                    ys.append(lat[index])
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"{route} {label}",
                    "legendgroup": route,
                    "showlegend": label == "p95",
                    "x": xs,
                    "y": ys,
                    "line": {"color": color, "dash": dash, "width": width},
                }
            )
    figs["latency"] = {"data": traces, "layout": _layout(CHARTS["latency"])}

    figs["throughput"] = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "requests/s",
                "x": x,
                "y": [s.get("n", 0) for s in ordered],
                "fill": "tozeroy",
                "line": {"color": PALETTE[0]},
            }
        ],
        "layout": _layout(CHARTS["throughput"]),
    }

    err_x, err_y = [], []
    for t, s in zip(x, ordered, strict=True):
        if s.get("n"):
            err_x.append(t)
            err_y.append(round(100.0 * s.get("err", 0) / s["n"], 3))
    figs["errors"] = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "errors %",
                "x": err_x,
                "y": err_y,
                "line": {"color": PALETTE[3]},
            }
        ],
        "layout": _layout(CHARTS["errors"], yaxis={"rangemode": "tozero"}),
    }

    def series(field: str) -> tuple[list[str], list[float]]:
        xs, ys = [], []
        for t, s in zip(x, ordered, strict=True):
            if field in s:
                xs.append(t)
                ys.append(s[field])  # type: ignore[literal-required]
        return xs, ys

    srv_x, srv_y = series("srv")
    net_x, net_y = series("net")
    figs["server_network"] = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "server",
                "stackgroup": "time",
                "x": srv_x,
                "y": srv_y,
                "line": {"color": PALETTE[0]},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "network",
                "stackgroup": "time",
                "x": net_x,
                "y": net_y,
                "line": {"color": PALETTE[1]},
            },
        ],
        "layout": _layout(CHARTS["server_network"]),
    }

    rss_x, rss_y = series("rss")
    cpu_x, cpu_y = series("cpu")
    figs["cpu_memory"] = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "RSS MB",
                "x": rss_x,
                "y": rss_y,
                "line": {"color": PALETTE[4]},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "CPU %",
                "x": cpu_x,
                "y": cpu_y,
                "yaxis": "y2",
                "line": {"color": PALETTE[2]},
            },
        ],
        "layout": _layout(
            CHARTS["cpu_memory"],
            yaxis={"title": {"text": "MB"}},
            yaxis2={"title": {"text": "CPU %"}, "overlaying": "y", "side": "right"},
        ),
    }

    names = sorted({n for s in ordered for n in s.get("vit", {})})
    vit_traces = []
    for i, name in enumerate(names):
        xs, ys = [], []
        for t, s in zip(x, ordered, strict=True):
            if name in s.get("vit", {}):
                xs.append(t)
                ys.append(s["vit"][name])
        trace: dict[str, Any] = {
            "type": "scatter",
            "mode": "markers+lines",
            "name": name,
            "x": xs,
            "y": ys,
            "marker": {"color": PALETTE[i % len(PALETTE)], "size": 6},
        }
        if name == "CLS":
            trace["yaxis"] = "y2"
        vit_traces.append(trace)
    figs["vitals"] = {
        "data": vit_traces,
        "layout": _layout(
            CHARTS["vitals"],
            yaxis={"title": {"text": "ms"}},
            yaxis2={"title": {"text": "CLS"}, "overlaying": "y", "side": "right"},
        ),
    }

    poll_x, poll_y = series("poll")
    polls_x, polls_y = series("polls")
    figs["polling"] = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "median interval (s)",
                "x": poll_x,
                "y": poll_y,
                "line": {"color": PALETTE[0]},
            },
            {
                "type": "bar",
                "name": "polls/s",
                "x": polls_x,
                "y": polls_y,
                "yaxis": "y2",
                "marker": {"color": PALETTE[7], "opacity": 0.4},
            },
        ],
        "layout": _layout(
            CHARTS["polling"],
            yaxis={"title": {"text": "s"}, "rangemode": "tozero"},
            yaxis2={"title": {"text": "polls/s"}, "overlaying": "y", "side": "right"},
        ),
    }
    return figs
