"""Breaking points: raise the arrival rate step by step until an SLO fails.

:func:`find_capacity` runs the open model at ``start``, ``start + step``, … for
``step_duration`` seconds each. A step passes when every route's p95 (corrected
for coordinated omission) stays within ``slo_p95_ms``, the error rate within
``slo_error_rate``, and the generator held the asked rate (within 5 %). The
answer is the highest rate that passed, the first route to fail, and where that
route's time went (app, db, network — from Server-Timing). ``bottleneck`` judges
the steps as levels of load (:mod:`perfnb.load.bottleneck`): the first route to
degrade against its own figures at the lowest step, which may come before the
SLO fails.

>>> cap = find_capacity("http://127.0.0.1:8000", scenario, slo_p95_ms=50)   # doctest: +SKIP
>>> cap.highest_sustained_rate, cap.first_failed_route                      # doctest: +SKIP
(1400.0, 'GET /api/cards/export')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfnb.errors import ConfigError
from perfnb.load.bottleneck import Bottleneck, Level, figures_of_cell, find_bottleneck
from perfnb.load.engine import Target
from perfnb.load.result import RunResult
from perfnb.load.runner import LoadRun
from perfnb.load.scenarios import Endpoints, Journey
from perfnb.load.shapes import ConstantRate
from perfnb.load.stats import Cell

__all__ = ["CapacityResult", "CapacityStep", "find_capacity"]


@dataclass(frozen=True, slots=True)
class CapacityStep:
    """One step: the rate asked, what was achieved, and whether the SLO held."""

    rate: float
    achieved_rate: float
    p95_ms: float
    error_rate: float
    passed: bool
    failed_route: str = ""
    why: str = ""
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The outcome of :func:`find_capacity`."""

    highest_sustained_rate: float
    first_failed_route: str
    why: str
    breakdown: dict[str, float]
    steps: list[CapacityStep] = field(default_factory=list)
    bottleneck: Bottleneck | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "highest_sustained_rate": self.highest_sustained_rate,
            "first_failed_route": self.first_failed_route,
            "why": self.why,
            "breakdown": self.breakdown,
            "steps": [_step_json(s) for s in self.steps],
            "bottleneck": None if self.bottleneck is None else self.bottleneck.to_json(),
        }


def _step_json(step: CapacityStep) -> dict[str, Any]:
    return {k: getattr(step, k) for k in step.__dataclass_fields__}


def _judge(
    result: RunResult, rate: float, slo_p95_ms: float, slo_error_rate: float
) -> CapacityStep:
    worst = ("", "", 0.0)  # route, why, how far over (ratio)
    for r in result.routes:
        name = f"{r.method} {r.route}"
        if r.count and r.corrected_p95_ms > slo_p95_ms:
            ratio = r.corrected_p95_ms / slo_p95_ms
            if ratio > worst[2]:
                why = f"p95 {r.corrected_p95_ms:.1f} ms > {slo_p95_ms:g} ms"
                worst = (name, why, ratio)
        if r.count and r.error_rate > slo_error_rate:
            ratio = r.error_rate / max(slo_error_rate, 1e-9)
            if ratio > worst[2]:
                worst = (name, f"error rate {r.error_rate:.1%} > {slo_error_rate:.1%}", ratio)
    achieved = result.total.rate
    why = worst[1]
    if not why and result.stop.reason not in ("completed",):
        why = f"stopped: {result.stop.message}"
    if not why and achieved < rate * 0.95:
        why = f"achieved only {achieved:.0f}/s of {rate:.0f}/s"
    return CapacityStep(
        rate=rate,
        achieved_rate=achieved,
        p95_ms=result.total.corrected_p95_ms,
        error_rate=result.total.error_rate,
        passed=not why,
        failed_route=worst[0],
        why=why,
        run_id=result.run_id,
    )


def find_capacity(
    target: str | Target,
    scenario: Endpoints | Journey,
    *,
    slo_p95_ms: float = 100.0,
    slo_error_rate: float = 0.01,
    start: float = 50.0,
    step: float = 50.0,
    max_rate: float = 5_000.0,
    step_duration: float = 10.0,
    **options: Any,
) -> CapacityResult:
    """Step the arrival rate up until the SLO fails; report the highest rate that held.

    ``options`` are passed to each step's :class:`~perfnb.load.runner.LoadRun`
    (``workers``, ``limits``, ``sink``, ``store``, ``allow_hosts``, …).
    """
    for name, value in (("start", start), ("step", step), ("step_duration", step_duration)):
        if not value > 0:
            msg = f"{name}={value!r}: accepted: a positive number"
            raise ConfigError(msg)
    steps: list[CapacityStep] = []
    levels: list[Level] = []
    highest = 0.0
    rate = start
    while rate <= max_rate:
        run = LoadRun(target, scenario, ConstantRate(rate, duration=step_duration), **options)
        run.start()
        result = run.wait()
        judged = _judge(result, rate, slo_p95_ms, slo_error_rate)
        steps.append(judged)
        levels.append(Level(rate, {k: figures_of_cell(c) for k, c in run.route_cells().items()}))
        if not judged.passed:
            return CapacityResult(
                highest_sustained_rate=highest,
                first_failed_route=judged.failed_route,
                why=judged.why,
                breakdown=_breakdown(run, judged.failed_route),
                steps=steps,
                bottleneck=find_bottleneck(levels, unit="req/s"),
            )
        highest = rate
        rate += step
    return CapacityResult(
        highest,
        "",
        f"no failure up to {max_rate:g}/s",
        {},
        steps,
        bottleneck=find_bottleneck(levels, unit="req/s"),
    )


def _breakdown(run: LoadRun, route: str) -> dict[str, float]:
    cells = run.route_cells()
    cell = cells.get(route)
    if cell is None:
        merged = Cell()
        for c in cells.values():
            merged.merge(c)
        cell = merged
    return cell.breakdown()
