"""The health board: per-endpoint health with the reason for each state, and the app's
monitoring controls (on/off, which kinds it records, sampling) through its feed.

>>> board = HealthBoard(stream, app_url="http://127.0.0.1:8000")   # doctest: +SKIP
>>> board.set_monitoring(kinds=["http", "process"])                # doctest: +SKIP

Each endpoint (route template) is judged over the last ``rules.window_s`` seconds
of real traffic: **failing** when ≥ 20% of its requests fail, **timeout** when ≥ 1%
time out or its p95 reaches ``rules.timeout_ms``, **degraded** when ≥ 5% fail,
**slow** when its p95 reaches ``rules.slow_ms``, **good** otherwise; an alert the
health engine holds open on the endpoint (degradation against its baseline, error
rate, timeouts, a runaway poller) is added to its reason. The three app-wide
lights head the board: the states of perfnb's health engine
(:mod:`perfnb.analysis.health`, thresholds in ``health=``), with their reasons.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import traitlets

from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError, PerfnbError
from perfnb.schema import KINDS, Record
from perfnb.widgets._base import ChartWidget, LazyEsm
from perfnb.widgets.aggregate import Aggregator, Filters
from perfnb.widgets.dashboard import StreamLike
from perfnb.widgets.lights import HealthRules, engine_lights, server_response

__all__ = ["HealthBoard", "endpoint_health"]

FEED_PREFIX: Final = "/api/performance-metrics"
_FAILING: Final = 0.2
_DEGRADED: Final = 0.05


def endpoint_health(fig: dict[str, Any], rules: HealthRules) -> dict[str, Any]:
    """One endpoint's state and reason from its window figures (see the module's rules)."""
    count = int(fig.get("count", 0))
    share = int(fig.get("errors", 0)) / count if count else 0.0
    if count and share >= _FAILING:
        return {"state": "failing", "level": "bad", "reason": f"{share:.0%} of {count} failed"}
    light = server_response(fig, rules)
    if light["state"] == "good" and share >= _DEGRADED:
        return {"state": "degraded", "level": "warn", "reason": f"{share:.0%} of {count} failed"}
    return dict(light)


class HealthBoard(ChartWidget):
    """Per-endpoint health from ``stream``, and monitoring controls for the app at ``app_url``.

    ``exclude_load=False`` judges load-test traffic too (during a load test).
    ``health``: the health engine's thresholds (:class:`HealthConfig`); the engine
    itself is :attr:`engine`.
    """

    _esm = LazyEsm("healthboard")

    lights = traitlets.Dict().tag(sync=True)
    endpoints = traitlets.List(traitlets.Dict()).tag(sync=True)
    kinds = traitlets.List(traitlets.Unicode()).tag(sync=True)
    control = traitlets.Dict().tag(sync=True)
    control_error = traitlets.Unicode("").tag(sync=True)
    has_app = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        stream: StreamLike,
        *,
        app_url: str | None = None,
        token: str | None = None,
        rules: HealthRules | None = None,
        health: HealthConfig | None = None,
        exclude_load: bool = True,
        every: float = 1.0,
        title: str = "perfnb · health",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(title=title, kinds=sorted(KINDS), has_app=app_url is not None)
        self.rules = rules or HealthRules()
        self._app_url = app_url.rstrip("/") if app_url else None
        self._token = token
        self.aggregator = Aggregator(
            max_window=max(60, self.rules.window_s),
            filters=Filters(exclude_load=exclude_load),
            clock=clock,
        )
        history = stream.frame(window=self.rules.window_s)
        self.aggregator.add_frame(history)
        config = (health or HealthConfig()).replace(include_load=not exclude_load)
        self.engine = HealthEngine(config, clock=clock)
        self.engine.replay(history)
        self.refresh()
        self._subscription: Any = stream.subscribe(self._on_records, every=every)
        self.on_msg(self._on_control_msg)
        if self._app_url:
            try:
                self.control = self._call("GET")
            except PerfnbError as exc:
                self.control_error = str(exc)

    def _on_records(self, records: list[Record]) -> None:
        self.aggregator.add_records(records)
        self.engine.observe(records)
        self.refresh()

    def refresh(self) -> None:
        """Judge every endpoint and the app-wide lights again."""
        window = self.rules.window_s
        self.lights = dict(engine_lights(self.engine.states))
        open_alerts: dict[str, list[str]] = {}
        for alert in self.engine.active_alerts:
            open_alerts.setdefault(alert.get("route", ""), []).append(alert.get("name", ""))
        rows = []
        for route, fig in sorted(self.aggregator.route_figures(window).items()):
            health = endpoint_health(fig, self.rules)
            if route in open_alerts:
                health["reason"] += "; alert: " + ", ".join(sorted(open_alerts[route]))
            durations = fig["durations"]
            p95 = float(np.percentile(durations, 95)) if len(durations) else 0.0
            rows.append(
                {
                    "route": route,
                    "requests": fig["count"],
                    "errors": fig["errors"],
                    "p95_ms": round(p95, 2),
                    **health,
                }
            )
        self.endpoints = rows

    # -- monitoring controls ---------------------------------------------------------------
    def _call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        if not self._app_url:
            raise ConfigError("app_url: not given; the board cannot reach the app's controls")
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        url = f"{self._app_url}{FEED_PREFIX}/control"
        try:
            reply = httpx.request(method, url, json=body, headers=headers, timeout=5.0)
        except httpx.HTTPError as exc:
            raise PerfnbError(f"control at {url}: {exc}") from None
        if reply.status_code != 200:
            raise PerfnbError(f"control at {url}: HTTP {reply.status_code} {reply.text[:200]}")
        data: dict[str, Any] = reply.json()
        return data

    def set_monitoring(
        self,
        *,
        enabled: bool | None = None,
        kinds: Sequence[str] | None = None,
        sample: float | None = None,
    ) -> dict[str, Any]:
        """Turn the app's monitoring on/off, choose the kinds it records, set its sampling.

        ``kinds=[]`` means every kind. Returns the app's control state.
        """
        body: dict[str, Any] = {}
        if enabled is not None:
            body["enabled"] = bool(enabled)
        if kinds is not None:
            unknown = sorted(set(kinds) - KINDS)
            if unknown:
                raise ConfigError(f"kinds: got {unknown}; expected some of {sorted(KINDS)}")
            body["kinds"] = list(kinds) or None
        if sample is not None:
            if not 0.0 <= sample <= 1.0:
                raise ConfigError(f"sample: got {sample!r}; expected a ratio from 0 to 1")
            body["sample"] = sample
        state = self._call("POST", body)
        self.control = state
        self.control_error = ""
        return state

    def _on_control_msg(self, _widget: object, content: Any, _buffers: object) -> None:
        if not isinstance(content, dict) or content.get("type") != "control":
            return
        try:
            self.set_monitoring(
                enabled=content.get("enabled"),
                kinds=content.get("kinds"),
                sample=content.get("sample"),
            )
        except PerfnbError as exc:
            self.control_error = str(exc)

    def freeze(self, *, png: bool = True, display: bool = False) -> Any:
        """A static copy: the lights, and a chart of p95 and errors per endpoint."""
        from perfnb.widgets.freeze import freeze_figures

        routes = [r["route"] for r in self.endpoints]
        figures = {
            "endpoints": {
                "data": [
                    {
                        "type": "bar",
                        "name": "p95 ms",
                        "x": routes,
                        "y": [r["p95_ms"] for r in self.endpoints],
                    },
                    {
                        "type": "bar",
                        "name": "errors",
                        "x": routes,
                        "y": [r["errors"] for r in self.endpoints],
                        "yaxis": "y2",
                    },
                ],
                "layout": {
                    "title": {"text": "Endpoints: p95 (ms) and errors"},
                    "yaxis2": {"overlaying": "y", "side": "right"},
                },
            }
        }
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in ("route", "state", "reason"))
            + "</tr>"
            for r in self.endpoints
        )
        head = "<tr><th>route</th><th>state</th><th>reason</th></tr>"
        table = f"<table class='perfnb-table'>{head}{rows}</table>"
        return freeze_figures(
            figures,
            title=self.title,
            health=self.lights,
            tables={"Endpoints": table},
            png=png,
            display=display,
        )

    def close(self) -> None:
        sub = getattr(self, "_subscription", None)
        self._subscription = None
        if sub is not None:
            sub.close()
        super().close()
