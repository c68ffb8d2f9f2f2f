"""Breaking points: raise the arrival rate step by step until an SLO fails.

:func:`find_capacity` runs the open model at ``start``, ``start + step``, … for
``step_duration`` seconds each. A run passes when every route's p95 (corrected
for coordinated omission) stays within ``slo_p95_ms``, the error rate within
``slo_error_rate``, and the generator held the asked rate (within 5 %). A step
whose run was unreliable, failed, or is out of line with the step under it is
run again, and its runs decide it together (:mod:`perfnb.load.verdict`).

The answer is the highest rate that passed, the first route to fail, where that
route's time went (app, db, network — from Server-Timing), and how sure it is:
the bracket between the last passing and the first failing rate, the runs and
repeats behind it, the unreliable runs, the spread of repeated steps, and a
confidence word with its reason. ``bottleneck`` judges the steps as levels of
load (:mod:`perfnb.load.bottleneck`): the first route to degrade against its own
figures at the lowest step, which may come before the SLO fails.

>>> cap = find_capacity("http://127.0.0.1:8000", scenario, slo_p95_ms=50)   # doctest: +SKIP
>>> cap.highest_sustained_rate, cap.bracket, cap.confidence                 # doctest: +SKIP
(1400.0, (1400.0, 1450.0), 'high')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
from perfnb.load.verdict import CapacityStep, StepRun, climb, judge_confidence

__all__ = ["CapacityResult", "CapacityStep", "StepRun", "find_capacity"]

_HELD_SHARE = 0.95


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The outcome of :func:`find_capacity`, and how sure it is.

    >>> from perfnb.load.verdict import decide_step
    >>> ok = StepRun(rate=100, achieved_rate=100, p95_ms=8, error_rate=0, passed=True)
    >>> slow = StepRun(rate=150, achieved_rate=150, p95_ms=140, error_rate=0, passed=False,
    ...                failed_route="GET /a", why="p95 140.0 ms > 100 ms")
    >>> steps = [decide_step(100, [ok]), decide_step(150, [slow, slow])]
    >>> cap = CapacityResult(100, "GET /a", slow.why, {}, steps)
    >>> cap.bracket, cap.confidence, cap.runs, cap.repeats
    ((100, 150), 'high', 3, 1)
    """

    highest_sustained_rate: float
    first_failed_route: str
    why: str
    breakdown: dict[str, float]
    steps: list[CapacityStep] = field(default_factory=list)
    bottleneck: Bottleneck | None = None

    @property
    def bracket(self) -> tuple[float, float | None]:
        """(last passing rate or 0, first failing rate or None when none failed)."""
        failed = next((s.rate for s in self.steps if not s.passed), None)
        return (self.highest_sustained_rate, failed)

    @property
    def runs(self) -> int:
        """Runs of load behind the answer, repeats included."""
        return sum(len(s.runs) for s in self.steps)

    @property
    def repeats(self) -> int:
        """Runs beyond the first at each step."""
        return sum(max(0, len(s.runs) - 1) for s in self.steps)

    @property
    def unreliable_runs(self) -> int:
        """Runs whose figures the generator may have distorted."""
        return sum(s.unreliable_runs for s in self.steps)

    @property
    def p95_spread_ms(self) -> float:
        """The widest p95 spread of any repeated step (0 when no step was repeated)."""
        return max((s.p95_spread_ms for s in self.steps), default=0.0)

    @property
    def confidence(self) -> str:
        """``"high"``, ``"medium"`` or ``"low"``; :attr:`confidence_why` says why."""
        return judge_confidence(self.steps)[0]

    @property
    def confidence_why(self) -> str:
        """The reason for :attr:`confidence`."""
        return judge_confidence(self.steps)[1]

    def describe(self) -> str:
        """The answer and how sure it is, in two lines."""
        low, high = self.bracket
        if high is None:
            answer = f"capacity: at least {low:g} req/s ({self.why})"
        else:
            answer = (
                f"capacity: {low:g} req/s; fails at {high:g} req/s: "
                f"{self.first_failed_route or 'all routes'} — {self.why}"
            )
        sure = (
            f"confidence {self.confidence}: {self.confidence_why} "
            f"[{len(self.steps)} step(s), {self.runs} run(s), {self.repeats} repeat(s), "
            f"{self.unreliable_runs} unreliable; widest p95 spread {self.p95_spread_ms:.1f} ms]"
        )
        return f"{answer}\n{sure}"

    def table(self) -> str:
        """One row per step (median figures, runs, spread), then :meth:`describe`."""
        head = (
            f"{'rate/s':>8} {'runs':>5} {'unrel':>5} {'achieved':>9} {'p95 ms':>8} "
            f"{'±p95':>7} {'errors':>7}  verdict"
        )
        lines = [head, "-" * len(head)]
        for s in self.steps:
            verdict = "pass" if s.passed else f"FAIL {s.why}"
            lines.append(
                f"{s.rate:>8g} {len(s.runs):>5} {s.unreliable_runs:>5} {s.achieved_rate:>9.1f} "
                f"{s.p95_ms:>8.2f} {s.p95_spread_ms:>7.2f} {s.error_rate:>7.1%}  {verdict}"
            )
            lines.extend(f"{'':>8} repeated: {why}" for why in s.repeated_because)
        lines.append(self.describe())
        if self.bottleneck is not None:
            lines.append(self.bottleneck.describe())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        low, high = self.bracket
        return {
            "highest_sustained_rate": self.highest_sustained_rate,
            "first_failed_route": self.first_failed_route,
            "why": self.why,
            "breakdown": self.breakdown,
            "steps": [s.to_json() for s in self.steps],
            "bottleneck": None if self.bottleneck is None else self.bottleneck.to_json(),
            "bracket": [low, high],
            "runs": self.runs,
            "repeats": self.repeats,
            "unreliable_runs": self.unreliable_runs,
            "p95_spread_ms": self.p95_spread_ms,
            "confidence": self.confidence,
            "confidence_why": self.confidence_why,
        }


# -- running the steps ------------------------------------------------------------
def _judge(result: RunResult, rate: float, slo_p95_ms: float, slo_error_rate: float) -> StepRun:
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
    doubts = list(result.unreliable_reasons)
    if result.stop.reason == "worker_failed":
        # the generator broke, not the target: a run to repeat, not a limit found
        doubts.append(f"a worker failed: {result.stop.message}")
    why = worst[1]
    if not why and result.stop.reason != "completed":
        why = f"stopped: {result.stop.message}"
    if not why and achieved < rate * _HELD_SHARE:
        why = f"achieved only {achieved:.0f}/s of {rate:.0f}/s"
    return StepRun(
        rate=rate,
        achieved_rate=achieved,
        p95_ms=result.total.corrected_p95_ms,
        error_rate=result.total.error_rate,
        passed=not why,
        failed_route=worst[0],
        why=why,
        run_id=result.run_id,
        reliable=not doubts,
        unreliable_reasons=tuple(doubts),
        stop_reason=result.stop.reason,
    )


def _rates(start: float, step: float, max_rate: float) -> Iterator[float]:
    n = 0
    while (rate := start + n * step) <= max_rate:
        yield rate
        n += 1


def _finished(run: LoadRun) -> RunResult:
    """Run to the end; on Ctrl-C stop the load before the interrupt goes on up."""
    run.start()
    try:
        return run.wait()
    except KeyboardInterrupt:
        run.stop("interrupt", "interrupted (Ctrl-C or kernel interrupt)")
        run.wait()
        raise


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
    repeats: int = 2,
    **options: Any,
) -> CapacityResult:
    """Step the arrival rate up until the SLO fails; report the highest rate that held.

    A step whose run was unreliable, failed, or is out of line with the step
    under it is run again, up to ``repeats`` more times (0: every step runs once;
    1 cannot settle a split between a passing and a failing run, which then
    fails); see :mod:`perfnb.load.verdict`. ``options`` are passed to each run's
    :class:`~perfnb.load.runner.LoadRun` (``workers``, ``limits``, ``sink``,
    ``store``, ``allow_hosts``, …); each run gets its own run id. Ctrl-C stops
    the running step's load before the interrupt is raised on.

    >>> cap = find_capacity("http://127.0.0.1:8000", scenario, step_duration=5)  # doctest: +SKIP
    >>> print(cap.table())                                                       # doctest: +SKIP
    """
    for name, value in (("start", start), ("step", step), ("step_duration", step_duration)):
        if not value > 0:
            msg = f"{name}={value!r}: accepted: a positive number"
            raise ConfigError(msg)
    if not max_rate >= start:
        msg = f"max_rate={max_rate!r}: accepted: a rate ≥ start ({start!r})"
        raise ConfigError(msg)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
        msg = f"repeats={repeats!r}: accepted: an integer ≥ 0"
        raise ConfigError(msg)
    if "run_id" in options:
        msg = "run_id: find_capacity names each run itself; accepted: no run_id option"
        raise ConfigError(msg)
    cells: dict[str, dict[str, Cell]] = {}

    def run_step(rate: float) -> StepRun:
        run = LoadRun(target, scenario, ConstantRate(rate, duration=step_duration), **options)
        result = _finished(run)
        cells[result.run_id] = run.route_cells()
        return _judge(result, rate, slo_p95_ms, slo_error_rate)

    steps = climb(run_step, _rates(start, step, max_rate), repeats=repeats)
    merged = [_merged(cells[r.run_id] for r in s.basis) for s in steps]
    bottleneck = find_bottleneck(
        [
            Level(s.rate, {k: figures_of_cell(c) for k, c in m.items()})
            for s, m in zip(steps, merged, strict=True)
        ],
        unit="req/s",
    )
    held = [s.rate for s in steps if s.passed]
    last = steps[-1]
    if last.passed:
        return CapacityResult(
            held[-1], "", f"no failure up to {max_rate:g}/s", {}, steps, bottleneck=bottleneck
        )
    return CapacityResult(
        highest_sustained_rate=held[-1] if held else 0.0,
        first_failed_route=last.failed_route,
        why=last.why,
        breakdown=_breakdown(merged[-1], last.failed_route),
        steps=steps,
        bottleneck=bottleneck,
    )


def _merged(runs: Iterable[dict[str, Cell]]) -> dict[str, Cell]:
    """Each route's cells summed over ``runs`` (the runs a step's verdict rests on)."""
    out: dict[str, Cell] = {}
    for cells in runs:
        for route, cell in cells.items():
            out.setdefault(route, Cell()).merge(cell)
    return out


def _breakdown(cells: dict[str, Cell], route: str) -> dict[str, float]:
    cell = cells.get(route)
    if cell is None:
        # no single route failed (the run was stopped, or fell short of the rate): all of them
        cell = Cell()
        for c in cells.values():
            cell.merge(c)
    return cell.breakdown()
