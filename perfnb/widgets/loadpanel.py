"""The load-test panel: pick a preset, set users, duration, rate, payload, think time and
the safety limits, then Start, Stop or Emergency stop, and watch the run's progress.

>>> panel = LoadTestPanel("http://127.0.0.1:8000", stream)           # doctest: +SKIP
>>> panel                                                            # doctest: +SKIP
>>> panel.config()["safetyLimits"]["emergencyStop"]                  # doctest: +SKIP
True

The run never blocks the kernel: Start builds the run and starts it on background
threads (the engine's worker processes do the sending), so the Stop and Emergency
stop buttons are handled at once while it runs. Emergency stop halts all sending
now (workers that do not obey within 2 s are killed). The configuration is the
requirements document's JSON: :meth:`LoadTestPanel.config` writes it and
:meth:`LoadTestPanel.load_config` reads it (either form perfnb accepts).

When the run ends, the summary names its bottleneck (the first route to degrade
as the load grew, and where its time went; :mod:`perfnb.load.bottleneck`): each
row says at which load its route degraded (``degrades_at``) and where most of
its time went (``time_in``), and ``summary["bottleneck"]`` says it in a line.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import traitlets

from perfnb.errors import ConfigError, PerfnbError
from perfnb.widgets._base import ChartWidget, LazyEsm

if TYPE_CHECKING:
    from perfnb.load.bottleneck import Bottleneck
    from perfnb.load.result import RunResult
    from perfnb.load.runner import LoadRun
    from perfnb.widgets.freeze import Frozen

__all__ = ["LoadTestPanel"]

_TICK_S: Final = 0.5
#: Below this share of the wanted rate (open model) the generator is not keeping up.
_KEEPING_UP: Final = 0.9


class LoadTestPanel(ChartWidget):
    """A load test of ``target`` (a loopback URL) whose records go to ``stream``.

    Parameters mirror the presets' (see :mod:`perfnb.load.presets`): ``rate`` > 0
    asks for the open model (requests per second), 0 for ``users`` looping with
    ``think_time``. Limits of 0 are off.
    """

    _esm = LazyEsm("loadpanel")

    presets = traitlets.List(traitlets.Dict()).tag(sync=True)
    preset = traitlets.Unicode("api_stress").tag(sync=True)
    users = traitlets.Int(10).tag(sync=True)
    duration = traitlets.Float(30.0).tag(sync=True)
    rate = traitlets.Float(0.0).tag(sync=True)
    payload_size = traitlets.Int(10_000).tag(sync=True)
    think_time = traitlets.Float(1.0).tag(sync=True)
    max_error_rate = traitlets.Float(0.05).tag(sync=True)
    max_p95_ms = traitlets.Float(0.0).tag(sync=True)
    max_memory_mb = traitlets.Float(0.0).tag(sync=True)
    emergency_stop = traitlets.Bool(True).tag(sync=True)

    status = traitlets.Unicode("idle").tag(sync=True)
    progress = traitlets.Dict().tag(sync=True)
    summary = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    target = traitlets.Unicode().tag(sync=True)

    def __init__(
        self,
        target: str,
        stream: Any = None,
        *,
        preset: str = "api_stress",
        users: int = 10,
        duration: float = 30.0,
        rate: float = 0.0,
        payload_size: int = 10_000,
        think_time: float = 1.0,
        max_error_rate: float = 0.05,
        max_p95_ms: float = 0.0,
        max_memory_mb: float = 0.0,
        emergency_stop: bool = True,
        workers: int | None = 1,
        store: Any = None,
        title: str = "perfnb · load test",
    ) -> None:
        from perfnb.load.engine import check_target
        from perfnb.load.presets import PRESETS

        self._target = check_target(target)  # refuses anything but loopback, at once
        super().__init__(
            title=title,
            target=self._target.url,
            presets=[
                {"name": p.name, "title": p.title, "description": p.description}
                for p in PRESETS.values()
            ],
            preset=preset,
            users=users,
            duration=duration,
            rate=rate,
            payload_size=payload_size,
            think_time=think_time,
            max_error_rate=max_error_rate,
            max_p95_ms=max_p95_ms,
            max_memory_mb=max_memory_mb,
            emergency_stop=emergency_stop,
        )
        self._check_preset(preset)
        self._stream = stream
        self._store = store
        self._workers = workers
        self._lock = threading.Lock()
        self.run: LoadRun | None = None
        self.result: RunResult | None = None
        self._watcher: threading.Thread | None = None
        self._stop_wanted: tuple[str, str] | None = None
        self.on_msg(self._on_action)

    @traitlets.validate("preset")
    def _valid_preset(self, proposal: Mapping[str, Any]) -> str:
        value: str = proposal["value"]
        self._check_preset(value)
        return value

    @staticmethod
    def _check_preset(name: str) -> None:
        from perfnb.load.presets import PRESETS

        if name not in PRESETS:
            raise ConfigError(f"preset: got {name!r}; expected one of {', '.join(sorted(PRESETS))}")

    # -- configuration -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The panel's settings as the requirements document's JSON (times in ms).

        >>> panel.config()["parameters"]["concurrentUsers"]     # doctest: +SKIP
        10
        """
        params: dict[str, Any] = {
            "concurrentUsers": self.users,
            "duration": round(self.duration * 1000),
            "delayBetweenCalls": round(self.think_time * 1000),
            "payloadSize": self.payload_size,
        }
        if self.rate > 0:
            params["requestsPerSecond"] = self.rate
        limits: dict[str, Any] = {"emergencyStop": self.emergency_stop}
        if self.max_error_rate > 0:
            limits["maxErrorRate"] = self.max_error_rate
        if self.max_p95_ms > 0:
            limits["maxP95Latency"] = self.max_p95_ms
        if self.max_memory_mb > 0:
            limits["maxMemoryUsage"] = self.max_memory_mb
        return {"scenario": self.preset, "parameters": params, "safetyLimits": limits}

    def load_config(self, config: Mapping[str, Any]) -> None:
        """Set the panel from a configuration (the document's JSON or perfnb's Python form)."""
        from perfnb.load.config import parse_config

        cfg = parse_config(config)
        p = cfg.parameters
        lim = cfg.limits
        with self.hold_trait_notifications():
            self.preset = cfg.scenario
            self.users = int(p.get("users", self.users))
            self.duration = float(p.get("duration", self.duration))
            self.rate = float(p.get("rate") or 0.0)
            self.payload_size = int(p.get("payload_size", self.payload_size))
            self.think_time = float(p.get("think_time", self.think_time))
            self.max_error_rate = lim.max_error_rate or 0.0
            self.max_p95_ms = lim.max_p95_ms or 0.0
            self.max_memory_mb = lim.max_target_memory_mb or 0.0
            self.emergency_stop = lim.emergency_stop

    # -- actions ------------------------------------------------------------------------
    def _on_action(self, _widget: object, content: Any, _buffers: object) -> None:
        if not isinstance(content, dict) or content.get("type") != "action":
            return
        action = content.get("action")
        if action == "start":
            self.start()
        elif action == "stop":
            self.stop()
        elif action == "emergency_stop":
            self.emergency()

    def start(self) -> None:
        """Start a run with the current settings; returns at once."""
        from perfnb.load.config import parse_config

        with self._lock:
            if self.status in ("starting", "running", "stopping"):
                self.error = "a run is already going: stop it first"
                return
            try:
                cfg = parse_config(self.config())
            except ConfigError as exc:
                self.error = str(exc)
                return
            self.error = ""
            self.summary = {}
            self.result = None
            self.run = None
            self.status = "starting"
            self._stop_wanted = None
            self._marks: list[tuple[float, int]] = []
            self.progress = {"elapsed_s": 0.0, "remaining_s": self.duration}
            self._watcher = threading.Thread(
                target=self._drive, args=(cfg,), name="perfnb-load-panel", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        """Stop the run now (reason ``interrupt``)."""
        self._halt("interrupt", "stopped from the panel")

    def emergency(self) -> None:
        """Emergency stop: halt all sending now (reason ``emergency_stop``)."""
        self._halt("emergency_stop", "emergency stop from the panel")

    def _halt(self, reason: str, message: str) -> None:
        with self._lock:
            run = self.run
            if self.status in ("starting", "running"):
                self.status = "stopping"
                self._stop_wanted = (reason, message)
        if run is not None:
            run.stop(reason, message)

    def _drive(self, cfg: Any) -> None:
        from perfnb.load.levels import LevelRecorder
        from perfnb.load.presets import Params, build_preset
        from perfnb.load.runner import LoadRun

        try:
            run_id = f"panel-{int(time.time())}"
            overrides = dict(cfg.parameters)
            scenario, shape, _params = build_preset(
                cfg.scenario, self._target, run_id=run_id, params=Params(), overrides=overrides
            )
            levels = LevelRecorder(
                run_id=run_id, sink=self._stream.push if self._stream is not None else None
            )
            run = LoadRun(
                self._target,
                scenario,
                shape,
                run_id=run_id,
                workers=self._workers,
                limits=cfg.limits,
                sink=levels,
                store=self._store,
            )
            with self._lock:
                self.run = run
                wanted = self._stop_wanted
                self.status = "running" if wanted is None else "stopping"
            run.start()
            if wanted is not None:
                run.stop(*wanted)
            while run.running:
                self._tick(run)
                time.sleep(_TICK_S)
            result = run.wait()
            result.bottleneck = levels.bottleneck(shape=shape)
            self.result = result
            self._finish(result)
        except PerfnbError as exc:
            self.error = str(exc)
            self.status = "failed"
        except Exception as exc:  # shown in the panel; the kernel carries on
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"

    def _tick(self, run: LoadRun) -> None:
        snap = run.snapshot()
        elapsed = float(snap["elapsed_s"])
        # the achieved rate over the last ~2 s, from the run's own running totals
        self._marks.append((elapsed, int(snap["requests"])))
        while len(self._marks) > 2 and self._marks[-1][0] - self._marks[1][0] >= 2.0:
            self._marks.pop(0)
        (t0, n0), (t1, n1) = self._marks[0], self._marks[-1]
        rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        reliability = "ok"
        if snap["model"] == "open" and snap["target"] and elapsed > 2:
            achieved = rate / float(snap["target"])
            if achieved < _KEEPING_UP:
                reliability = f"generator behind: {achieved:.0%} of the wanted rate"
        self.progress = {
            "elapsed_s": round(elapsed, 1),
            "remaining_s": round(max(0.0, self.duration - elapsed), 1),
            "rate": round(rate, 1),
            "requests": int(snap["requests"]),
            "errors": int(snap["errors"]),
            "error_types": _kinds(snap.get("error_types", {})),
            "reconnects": int(snap.get("reconnects", 0)),
            "p95_ms": round(float(snap["window_p95_ms"]), 2),
            "target": snap["target"],
            "model": snap["model"],
            "reliability": reliability,
            "run_id": snap["run_id"],
        }

    def _finish(self, result: RunResult) -> None:
        b = result.bottleneck
        rows = [
            {
                "route": f"{r.method} {r.route}".strip(),
                "count": r.count,
                "rate": round(r.rate, 1),
                "p50_ms": round(r.p50_ms, 2),
                "p95_ms": round(r.p95_ms, 2),
                "p99_ms": round(r.p99_ms, 2),
                "errors": r.errors,
                "error_types": _kinds(r.error_types),
                **_bottleneck_cells(b, f"{r.method} {r.route}".strip()),
            }
            for r in [*result.routes, result.total]
        ]
        self.summary = {
            "run_id": result.run_id,
            "stop_reason": result.stop.reason,
            "stop_message": result.stop.message,
            "elapsed_s": round(result.elapsed_s, 2),
            "reconnects": result.reconnects,
            "reliable": result.reliable,
            "unreliable_reasons": list(result.unreliable_reasons),
            "rows": rows,
            "bottleneck": b.describe() if b is not None else "",
        }
        self.progress = {**self.progress, "remaining_s": 0.0}
        self.status = "finished"

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Wait for the current run to end (for scripts and tests); returns its result."""
        watcher = self._watcher
        if watcher is not None:
            watcher.join(timeout)
        return self.result

    # -- sharing --------------------------------------------------------------------------
    def summary_html(self) -> str:
        """The last run's summary table as HTML."""
        rows = self.summary.get("rows", [])
        if not rows:
            return "<p>no run yet</p>"
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
            for row in rows
        )
        return f"<table class='perfnb-table'><tr>{head}</tr>{body}</table>"

    def freeze(self, *, png: bool = True, display: bool = False) -> Frozen:
        """The last run as a static report: latency and throughput per route, and its table."""
        from perfnb.widgets.freeze import freeze_figures

        rows = [r for r in self.summary.get("rows", []) if r["route"] != "total"]
        routes = [r["route"] for r in rows]
        figures = {
            "latency": {
                "data": [
                    {"type": "bar", "name": q, "x": routes, "y": [r[f"{q}_ms"] for r in rows]}
                    for q in ("p50", "p95", "p99")
                ],
                "layout": {"title": {"text": "Latency per route (ms)"}, "barmode": "group"},
            },
            "throughput": {
                "data": [
                    {"type": "bar", "name": "req/s", "x": routes, "y": [r["rate"] for r in rows]}
                ],
                "layout": {"title": {"text": "Throughput per route (requests/s)"}},
            },
        }
        s = self.summary
        caption = (
            f"Run {s.get('run_id', '-')}: stopped by {s.get('stop_reason', '-')} "
            f"after {s.get('elapsed_s', 0)} s. {s.get('bottleneck', '')}"
        ).strip()
        return freeze_figures(
            figures,
            title=f"{self.title} · {self.preset}",
            tables={caption: self.summary_html()},
            png=png,
            display=display,
        )

    def close(self) -> None:
        """Stop any run and close the widget."""
        run = getattr(self, "run", None)
        if run is not None and run.running:
            run.stop("interrupt", "panel closed")
        super().close()


def _bottleneck_cells(b: Bottleneck | None, route: str) -> dict[str, str]:
    """A summary row's bottleneck columns: the load its route degraded at, and its main part."""
    if b is None:
        return {}
    if route not in b.degraded_at:
        return {"degrades_at": "", "time_in": ""}
    level = b.degraded_at[route]
    if level is None:
        return {"degrades_at": "held", "time_in": ""}
    return {
        "degrades_at": f"{level:g} {b.unit}" + (" (first)" if route == b.route else ""),
        "time_in": b.causes.get(route, ""),
    }


def _kinds(counts: dict[str, int]) -> str:
    """Error counts by type, most first: ``"connect 12, http_5xx 3"`` ("" when none)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{kind} {n}" for kind, n in ranked)
