"""What a load run reports: per-route figures, the stop, and whether to trust them.

>>> r = RouteSummary.empty("/api/cards", "GET")
>>> r.count, r.p95_ms
(0, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfnb.load.bottleneck import Bottleneck
from perfnb.load.histogram import Histogram
from perfnb.load.safety import StopEvent
from perfnb.load.stats import Cell

__all__ = ["RouteSummary", "RunResult"]


@dataclass(frozen=True, slots=True)
class RouteSummary:
    """One route's figures over the run; latencies in ms.

    ``p*_ms`` are measured from the actual send; ``corrected_p*_ms`` (open model
    only, else equal to the uncorrected figures) from the intended send time. Both
    are of the requests that succeeded; failed requests (``errors``, by type in
    ``error_types``) are timed apart: ``failed_p50_ms`` and ``failed_max_ms`` are
    how long they took to fail.
    """

    route: str
    method: str
    count: int
    rate: float
    errors: int
    error_types: dict[str, int]
    statuses: dict[int, int]
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    corrected_p50_ms: float
    corrected_p95_ms: float
    corrected_p99_ms: float
    failed_p50_ms: float = 0.0
    failed_max_ms: float = 0.0

    @classmethod
    def empty(cls, route: str, method: str) -> RouteSummary:
        """A summary of no requests."""
        return cls.of(route, method, Cell(), 1.0)

    @classmethod
    def of(cls, route: str, method: str, cell: Cell, seconds: float) -> RouteSummary:
        """Summarise ``cell`` (all of a route's requests) over ``seconds``."""
        p50, p95, p99 = cell.latency.percentiles((50, 95, 99))
        corrected = cell.corrected if cell.corrected.count else cell.latency
        c50, c95, c99 = corrected.percentiles((50, 95, 99))
        return cls(
            route=route,
            method=method,
            count=cell.count,
            rate=cell.count / seconds if seconds > 0 else 0.0,
            errors=cell.error_count,
            error_types=dict(cell.errors),
            statuses=dict(cell.statuses),
            mean_ms=cell.latency.mean,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            max_ms=cell.latency.max_us / 1000.0,
            corrected_p50_ms=c50,
            corrected_p95_ms=c95,
            corrected_p99_ms=c99,
            failed_p50_ms=cell.failed.percentile(50),
            failed_max_ms=cell.failed.max_us / 1000.0,
        )

    @property
    def error_rate(self) -> float:
        """Failed share of requests (0 when none)."""
        return self.errors / self.count if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["statuses"] = {str(k): v for k, v in self.statuses.items()}
        out["error_rate"] = self.error_rate
        return out


@dataclass(slots=True)
class RunResult:
    """Everything a finished run measured.

    ``reliable`` is False, with ``unreliable_reasons``, when the generator itself
    may have distorted the figures (a worker saturated its CPU, or the send lag
    p99 exceeded 5 ms). ``bottleneck`` (when the run was watched by a
    :class:`~perfnb.load.levels.LevelRecorder`, as ``perfnb load`` does) names
    the first route to degrade as the load grew and where its time went.
    """

    run_id: str
    target: str
    model: str
    scenario: str
    workers: int
    started: float  # epoch seconds
    stopped_at: float  # epoch seconds: when the controller told the workers to stop
    elapsed_s: float
    stop: StopEvent
    breaches: list[StopEvent]
    routes: list[RouteSummary]
    total: RouteSummary
    latency: Histogram
    corrected: Histogram
    send_lag: Histogram
    dropped: int
    reconnects: int
    worker_cpu: list[float]
    generator_memory_mb: float
    target_memory_mb: float | None
    killed_workers: int
    journey_errors: int
    reliable: bool
    unreliable_reasons: list[str] = field(default_factory=list)
    bottleneck: Bottleneck | None = None

    @property
    def send_lag_p99_ms(self) -> float:
        """The generator's own send lag, p99 (ms)."""
        return self.send_lag.percentile(99)

    def to_json(self) -> dict[str, Any]:
        """The whole result as one JSON-friendly dict (what ``perfnb load --json`` prints)."""
        return {
            "run_id": self.run_id,
            "target": self.target,
            "model": self.model,
            "scenario": self.scenario,
            "workers": self.workers,
            "started": self.started,
            "stopped_at": self.stopped_at,
            "elapsed_s": round(self.elapsed_s, 3),
            "stop": self.stop.to_json(),
            "breaches": [b.to_json() for b in self.breaches],
            "total": self.total.to_json(),
            "routes": [r.to_json() for r in self.routes],
            "send_lag_p99_ms": self.send_lag_p99_ms,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "worker_cpu": self.worker_cpu,
            "generator_memory_mb": self.generator_memory_mb,
            "target_memory_mb": self.target_memory_mb,
            "killed_workers": self.killed_workers,
            "journey_errors": self.journey_errors,
            "reliable": self.reliable,
            "unreliable_reasons": self.unreliable_reasons,
            "bottleneck": None if self.bottleneck is None else self.bottleneck.to_json(),
        }

    def table(self) -> str:
        """A plain-text summary table, one row per route plus the total."""
        head = (
            f"{'route':<34} {'n':>8} {'rate/s':>8} {'p50':>8} {'p95':>8} {'p99':>8} "
            f"{'c.p50':>8} {'c.p95':>8} {'c.p99':>8} {'errors':>7}"
        )
        lines = [
            f"run {self.run_id} → {self.target} ({self.model} model, {self.workers} worker(s), "
            f"{self.elapsed_s:.1f} s)",
            head,
            "-" * len(head),
        ]
        for r in [*self.routes, self.total]:
            name = f"{r.method} {r.route}" if r.method else r.route
            lines.append(
                f"{name[:34]:<34} {r.count:>8} {r.rate:>8.1f} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} "
                f"{r.p99_ms:>8.2f} {r.corrected_p50_ms:>8.2f} {r.corrected_p95_ms:>8.2f} "
                f"{r.corrected_p99_ms:>8.2f} {r.errors:>7}"
            )
        if self.total.errors:
            kinds = sorted(self.total.error_types.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append(
                "errors: "
                + ", ".join(f"{kind} {n}" for kind, n in kinds)
                + f" (failed after {self.total.failed_p50_ms:.2f} ms median, "
                f"{self.total.failed_max_ms:.2f} ms at most)"
            )
        lines.append(f"stop: {self.stop.reason} — {self.stop.message}")
        lines.append(
            f"send lag p99 {self.send_lag_p99_ms:.2f} ms, dropped {self.dropped}, "
            f"reconnects {self.reconnects}, "
            f"worker CPU {', '.join(f'{c:.0%}' for c in self.worker_cpu)}"
        )
        if not self.reliable:
            lines.append("UNRELIABLE: " + "; ".join(self.unreliable_reasons))
        if self.bottleneck is not None:
            lines.append(self.bottleneck.describe())
        return "\n".join(lines)
