"""The shapes of the messages between perfnb's widgets in the kernel and their JavaScript.

One place for every message, so the Python and the ``static/*.js`` sides agree.
Times are epoch seconds (integers for per-second buckets); durations are in ms.
"""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = [
    "AlertItem",
    "FiguresMsg",
    "HealthLight",
    "HelloMsg",
    "PlotlyMsg",
    "SecondSummary",
    "UpdateMsg",
]


class SecondSummary(TypedDict, total=False):
    """What the dashboard shows for one second, under the current filters.

    ``lat`` maps a route to ``[p50, p95, p99]`` in ms; ``rps`` to its requests;
    ``srv``/``net`` are the mean server and network ms seen by clients; ``rss`` is
    MB and ``cpu`` percent of one core; ``vit`` maps a Web Vital to its p75;
    ``poll`` is the median polling interval (s) and ``polls`` the polls counted.
    """

    t: int
    n: int
    err: int
    lat: dict[str, list[float]]
    rps: dict[str, int]
    srv: float
    net: float
    rss: float
    cpu: float
    vit: dict[str, float]
    poll: float
    polls: int


HealthState = Literal[
    "healthy",
    "degraded",
    "failing",
    "good",
    "slow",
    "timeout",
    "optimal",
    "poor",
    "unknown",
]


class HealthLight(TypedDict):
    """One health light: its state in the requirements' terms, a level and the reason."""

    state: str
    level: Literal["ok", "warn", "bad", "unknown"]
    reason: str


class AlertItem(TypedDict):
    """One entry of the alerts list (newest first on screen)."""

    t: float
    level: Literal["info", "warning", "critical"]
    source: str
    message: str


class UpdateMsg(TypedDict):
    """Kernel → browser: new or changed seconds (``reset``: replace everything).

    ``instances`` maps each host seen in the window to its app instances
    (``"<host>-<pid>-<boot>"``); records naming none appear as host ``""``
    holding the instance ``""``.
    """

    type: Literal["update"]
    reset: bool
    window: int
    now: int
    paused: bool
    seconds: list[SecondSummary]
    health: dict[str, HealthLight]
    alerts: list[AlertItem]
    routes: list[str]
    sources: list[str]
    instances: dict[str, list[str]]
    stats: dict[str, int]


class HelloMsg(TypedDict):
    """Browser → kernel, when a view renders: send me everything (and plotly.js)."""

    type: Literal["hello"]
    plotly: bool


class PlotlyMsg(TypedDict):
    """Kernel → browser: plotly.js source follows as the message's first buffer."""

    type: Literal["plotly"]
    version: str


class FiguresMsg(TypedDict):
    """Kernel → browser: whole Plotly figures (for widgets drawing few, small charts)."""

    type: Literal["figures"]
    figures: dict[str, dict[str, object]]
