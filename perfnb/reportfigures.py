"""The figures of the post-mortem notebook: the timeline, and PNGs of any chart.

:func:`timeline_figure` draws health transitions, alerts and load runs in lanes
over a range (its title says when the health marks were replayed from the
detail rather than recorded live); :func:`write_pngs` writes one picture per
figure. Both are re-exported by :mod:`perfnb.report`, which runs the notebook.

>>> from datetime import UTC, datetime
>>> fig = timeline_figure(None, None, start=datetime(2026, 1, 1, tzinfo=UTC),
...                       end=datetime(2026, 1, 1, 1, tzinfo=UTC), replayed=True)
>>> fig["layout"]["title"]["text"].startswith("Timeline: health replayed from the detail")
True
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["timeline_figure", "write_pngs"]

#: Colour of a health state (its level) in the timeline.
_STATE_LEVEL: Final = {
    "healthy": "ok",
    "good": "ok",
    "optimal": "ok",
    "degraded": "warn",
    "slow": "warn",
    "failing": "bad",
    "timeout": "bad",
    "poor": "bad",
}
_LEVEL_COLOUR: Final = {"ok": "#2e7d32", "warn": "#f9a825", "bad": "#c62828", "none": "#9e9e9e"}
_TITLE: Final = "Timeline: health transitions, alerts and load runs"
_TITLE_REPLAYED: Final = (
    "Timeline: health replayed from the detail (nothing watched live), alerts and load runs"
)
_SEVERITY_COLOUR: Final = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}


def _tag(tags: object, key: str) -> str:
    if isinstance(tags, Mapping):
        return str(tags.get(key, ""))
    if isinstance(tags, Sequence) and not isinstance(tags, str):
        # pyarrow hands map columns to pandas as lists of (key, value) pairs
        for pair in tags:
            if isinstance(pair, tuple | list) and len(pair) == 2 and pair[0] == key:
                return str(pair[1])
    return ""


def _iso(value: Any) -> str:
    import pandas as pd

    return str(pd.Timestamp(value).isoformat())


def timeline_figure(
    marks: pd.DataFrame | None,
    runs: pd.DataFrame | None,
    *,
    start: datetime,
    end: datetime,
    replayed: bool = False,
) -> dict[str, Any]:
    """A Plotly figure dict: health transitions, alerts and load runs in lanes over time.

    ``marks`` holds ``health``/``alert`` records (``time``, ``kind``, ``name``,
    ``tags`` with ``state``/``previous``/``reason`` or ``severity``/``state``/
    ``reason``); ``runs`` one row per load run (``run_id``, ``first``, ``last``,
    optionally ``requests`` and ``errors``). With neither, the chart still shows
    the range, with one line saying nothing was recorded. ``replayed``: the marks
    come from replaying the health engine over the detail (nothing watched the range
    live), and the title says so.
    """
    traces: list[dict[str, Any]] = []
    lanes: list[str] = []

    def lane(label: str) -> str:
        if label not in lanes:
            lanes.append(label)
        return label

    if runs is not None and not runs.empty:
        xs: list[str | None] = []
        ys: list[str | None] = []
        texts: list[str | None] = []
        for row in runs.itertuples(index=False):
            label = lane(f"load · {row.run_id}")
            note = f"run {row.run_id}: {getattr(row, 'requests', '?')} requests"
            if getattr(row, "errors", None) is not None:
                note += f", {row.errors} errors"
            xs += [_iso(row.first), _iso(row.last), None]
            ys += [label, label, None]
            texts += [note, note, None]
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "load run",
                "x": xs,
                "y": ys,
                "text": texts,
                "hoverinfo": "text+x",
                "line": {"width": 14, "color": "#7e57c2"},
            }
        )
    if marks is not None and not marks.empty:
        health = marks[marks["kind"] == "health"]
        alerts = marks[marks["kind"] == "alert"]
        by_level: dict[str, dict[str, list[str]]] = {}
        for row in health.itertuples(index=False):
            state = _tag(row.tags, "state") or "unknown"
            level = _STATE_LEVEL.get(state, "none")
            bucket = by_level.setdefault(level, {"x": [], "y": [], "text": []})
            bucket["x"].append(_iso(row.time))
            bucket["y"].append(lane(f"health · {row.name}"))
            previous = _tag(row.tags, "previous") or "?"
            bucket["text"].append(f"{row.name}: {previous} → {state}. {_tag(row.tags, 'reason')}")
        for level, points in by_level.items():
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"health: {level}",
                    **points,
                    "hoverinfo": "text+x",
                    "marker": {"size": 12, "color": _LEVEL_COLOUR[level], "symbol": "circle"},
                }
            )
        by_state: dict[tuple[str, str], dict[str, list[str]]] = {}
        for row in alerts.itertuples(index=False):
            state = _tag(row.tags, "state") or "raised"
            severity = _tag(row.tags, "severity") or "warning"
            key = (state, severity)
            bucket = by_state.setdefault(key, {"x": [], "y": [], "text": []})
            bucket["x"].append(_iso(row.time))
            bucket["y"].append(lane(f"alert · {row.name}"))
            bucket["text"].append(f"{row.name} {state} ({severity}): {_tag(row.tags, 'reason')}")
        for (state, severity), points in sorted(by_state.items()):
            cleared = state == "cleared"
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"alert {state}" + ("" if cleared else f" ({severity})"),
                    **points,
                    "hoverinfo": "text+x",
                    "marker": {
                        "size": 13,
                        "symbol": "circle-open" if cleared else "triangle-up",
                        "color": "#2e7d32"
                        if cleared
                        else _SEVERITY_COLOUR.get(severity, "#ef6c00"),
                        "line": {"width": 2},
                    },
                }
            )
    annotations = []
    if not traces:
        label = lane("nothing recorded")
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "nothing recorded",
                "x": [_iso(start), _iso(end)],
                "y": [label, label],
                "line": {"color": "#bdbdbd", "dash": "dot"},
                "hoverinfo": "skip",
            }
        )
        annotations.append(
            {
                "text": "no health transitions, alerts or load runs in this range",
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"color": "#757575"},
            }
        )
    return {
        "data": traces,
        "layout": {
            "title": {"text": _TITLE_REPLAYED if replayed else _TITLE},
            "height": 140 + 34 * len(lanes),
            "margin": {"l": 170, "r": 20, "t": 50, "b": 40},
            "xaxis": {"type": "date", "range": [_iso(start), _iso(end)]},
            "yaxis": {
                "type": "category",
                "categoryorder": "array",
                "categoryarray": list(reversed(lanes)),
            },
            "showlegend": True,
            "legend": {"orientation": "h", "y": -0.25},
            "annotations": annotations,
        },
    }


def write_pngs(
    figures: Mapping[str, Mapping[str, Any]], folder: str | os.PathLike[str]
) -> list[Path]:
    """One PNG per figure in ``folder`` (``<name>.png``), drawn by kaleido in one session."""
    import plotly.io as pio  # type: ignore[import-untyped]

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png") for name in figures]
    sized = []
    for fig in figures.values():
        layout = dict(fig.get("layout") or {})
        layout.setdefault("width", 1000)
        layout.setdefault("height", 420)
        sized.append({"data": list(fig.get("data", [])), "layout": layout})
    pio.write_images(sized, [str(p) for p in paths], format="png", validate=False)
    return paths
