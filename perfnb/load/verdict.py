"""The verdict of a capacity step: when to run it again, what its runs decide, how sure.

:func:`~perfnb.load.capacity.find_capacity` runs each rate as a step of one or
more runs (:class:`StepRun`). One run of load is noisy, so a step is run again,
up to ``repeats`` more times, while its runs leave it in doubt
(:func:`repeat_reason`):

- a run was unreliable (``RunResult.reliable`` is False: the generator itself may
  have distorted it); its verdict is set aside while a reliable run can be had;
- a run failed: a failure ends the climb and sets the answer, so one failing run
  does not decide it alone (a repeat confirms it; a third run settles a split);
- a run passed with a goodput (successful responses per second) far below the
  trend of the step under it.

A run stopped by a safety limit is never run again: it fails its step and ends
the climb. Otherwise the step is decided by the majority of its reliable runs
(:func:`decide_step`); a tie fails, so no rate is claimed that did not hold more
often than not. :func:`climb` is the whole search with the runs passed in, and
:func:`judge_confidence` says how sure its answer is. Nothing here runs load or
reads a clock.

>>> noisy = StepRun(rate=50, achieved_rate=12, p95_ms=900, error_rate=0, passed=False,
...                 why="achieved only 12/s of 50/s", reliable=False,
...                 unreliable_reasons=("send lag p99 80.0 ms exceeded 5 ms",))
>>> repeat_reason([noisy], None, repeats=2)
'run 1 was unreliable (send lag p99 80.0 ms exceeded 5 ms)'
>>> held = StepRun(rate=50, achieved_rate=50, p95_ms=4, error_rate=0, passed=True)
>>> step = decide_step(50, [noisy, held])
>>> step.passed, step.runs_behind, step.unreliable_runs
(True, 1, 1)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from perfnb.errors import ConfigError

__all__ = [
    "TREND_SHARE",
    "CapacityStep",
    "StepRun",
    "climb",
    "decide_step",
    "judge_confidence",
    "repeat_reason",
]

#: A passing run whose goodput is below this share of what the step under it
#: delivered per asked request is out of line with the trend.
TREND_SHARE: Final = 0.8


@dataclass(frozen=True, slots=True)
class StepRun:
    """One run of load at one step, judged against the SLO on its own.

    ``reliable`` and ``unreliable_reasons`` come from the run's
    :class:`~perfnb.load.result.RunResult` (a run whose worker failed counts as
    unreliable too); ``stop_reason`` is ``"completed"`` unless the run was stopped.
    """

    rate: float
    achieved_rate: float
    p95_ms: float
    error_rate: float
    passed: bool
    failed_route: str = ""
    why: str = ""
    run_id: str = ""
    reliable: bool = True
    unreliable_reasons: tuple[str, ...] = ()
    stop_reason: str = "completed"

    @property
    def halted(self) -> bool:
        """Whether a safety limit (or the user) stopped the run: it is not run again."""
        return self.stop_reason not in ("completed", "worker_failed")

    @property
    def goodput(self) -> float:
        """Successful responses per second."""
        return self.achieved_rate * (1.0 - self.error_rate)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["unreliable_reasons"] = list(self.unreliable_reasons)
        out["goodput"] = self.goodput
        return out


@dataclass(frozen=True, slots=True)
class CapacityStep:
    """One step: the rate asked, the verdict of its runs, and the figures behind it.

    The figures are the medians of the runs the verdict rests on (:attr:`basis`);
    ``run_id`` names the run with the median p95. ``runs`` holds every run of the
    step in order, ``repeated_because`` why each repeat was run.
    """

    rate: float
    achieved_rate: float
    p95_ms: float
    error_rate: float
    passed: bool
    failed_route: str = ""
    why: str = ""
    run_id: str = ""
    runs: tuple[StepRun, ...] = ()
    repeated_because: tuple[str, ...] = ()

    @property
    def basis(self) -> tuple[StepRun, ...]:
        """The runs the verdict rests on: the reliable ones that agree with it.

        All runs that agree with it when none was reliable; a halted run alone.
        """
        halted = tuple(r for r in self.runs if r.halted)
        if halted:
            return halted[:1]
        pool = _trusted(self.runs)
        return tuple(r for r in pool if r.passed == self.passed)

    @property
    def runs_behind(self) -> int:
        """How many runs the verdict rests on."""
        return len(self.basis)

    @property
    def unreliable_runs(self) -> int:
        """Runs of this step whose figures the generator may have distorted."""
        return sum(not r.reliable for r in self.runs)

    @property
    def p95_spread_ms(self) -> float:
        """Highest minus lowest p95 over the step's runs (0 for a single run)."""
        p95s = [r.p95_ms for r in self.runs]
        return max(p95s) - min(p95s) if len(p95s) > 1 else 0.0

    @property
    def rate_spread(self) -> float:
        """Highest minus lowest achieved rate over the step's runs (0 for a single run)."""
        rates = [r.achieved_rate for r in self.runs]
        return max(rates) - min(rates) if len(rates) > 1 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["runs"] = [r.to_json() for r in self.runs]
        out["repeated_because"] = list(self.repeated_because)
        out["runs_behind"] = self.runs_behind
        out["unreliable_runs"] = self.unreliable_runs
        out["p95_spread_ms"] = self.p95_spread_ms
        out["rate_spread"] = self.rate_spread
        return out


def _trusted(runs: Sequence[StepRun]) -> list[StepRun]:
    """The reliable runs, or every run when none was reliable."""
    return [r for r in runs if r.reliable] or list(runs)


def repeat_reason(runs: Sequence[StepRun], below: CapacityStep | None, *, repeats: int) -> str:
    """Why a step needs one more run, or ``""`` when its runs settle it.

    ``runs`` are the step's runs so far, ``below`` the decided step under it
    (None for the first step), ``repeats`` how many runs beyond the first are
    allowed.

    >>> ok = StepRun(rate=50, achieved_rate=50, p95_ms=4, error_rate=0, passed=True)
    >>> bad = StepRun(rate=50, achieved_rate=50, p95_ms=400, error_rate=0, passed=False)
    >>> repeat_reason([ok], None, repeats=2)
    ''
    >>> repeat_reason([bad, ok], None, repeats=2)
    'its reliable runs split: 1 passed, 1 failed'
    >>> repeat_reason([bad, bad], None, repeats=2)
    ''
    """
    if not runs or len(runs) > repeats or any(r.halted for r in runs):
        # a run halted by a safety limit is not run again: that would load the target
        # once more into the state the limit is there to prevent
        return ""
    trusted = [r for r in runs if r.reliable]
    if not trusted:
        doubts = "; ".join(runs[-1].unreliable_reasons) or "the generator may have distorted it"
        return f"run {len(runs)} was unreliable ({doubts})"
    passes = sum(r.passed for r in trusted)
    fails = len(trusted) - passes
    if max(passes, fails) >= 2:
        return ""
    if passes and fails:
        return f"its reliable runs split: {passes} passed, {fails} failed"
    if fails:
        if below is None:
            return "the first step failed, with no passing step under it to compare with"
        return f"it failed after {below.rate:g}/s held; a failure ends the climb: confirm it"
    return _out_of_line(trusted[0], below)


def _out_of_line(run: StepRun, below: CapacityStep | None) -> str:
    if below is None or not below.passed or below.rate <= 0:
        return ""
    expected = run.rate * below.achieved_rate * (1.0 - below.error_rate) / below.rate
    if run.goodput < TREND_SHARE * expected:
        return (
            f"goodput {run.goodput:.1f}/s is out of line: the trend of {below.rate:g}/s "
            f"expects about {expected:.1f}/s"
        )
    return ""


def decide_step(
    rate: float, runs: Sequence[StepRun], *, repeated_because: Sequence[str] = ()
) -> CapacityStep:
    """The verdict of a step's runs: the majority of the reliable ones (a tie fails).

    Unreliable runs count only when no run was reliable. A run stopped by a
    safety limit fails the step whatever the others said. The figures are the
    medians of the runs that agree with the verdict.

    >>> ok = StepRun(rate=50, achieved_rate=50, p95_ms=4, error_rate=0, passed=True)
    >>> bad = StepRun(rate=50, achieved_rate=50, p95_ms=400, error_rate=0, passed=False)
    >>> decide_step(50, [bad, ok, ok]).passed, decide_step(50, [bad, ok]).passed
    (True, False)
    """
    if not runs:
        msg = f"decide_step({rate!r}, runs=[]): accepted: at least one run of the step"
        raise ConfigError(msg)
    halted = [r for r in runs if r.halted]
    if halted:
        basis = halted[:1]
        passed = False
    else:
        trusted = _trusted(runs)
        passed = 2 * sum(r.passed for r in trusted) > len(trusted)
        basis = [r for r in trusted if r.passed == passed]
    middle = sorted(basis, key=lambda r: r.p95_ms)[(len(basis) - 1) // 2]
    return CapacityStep(
        rate=rate,
        achieved_rate=statistics.median(r.achieved_rate for r in basis),
        p95_ms=statistics.median(r.p95_ms for r in basis),
        error_rate=statistics.median(r.error_rate for r in basis),
        passed=passed,
        failed_route="" if passed else middle.failed_route,
        why="" if passed else middle.why,
        run_id=middle.run_id,
        runs=tuple(runs),
        repeated_because=tuple(repeated_because),
    )


def climb(
    run_step: Callable[[float], StepRun], rates: Iterable[float], *, repeats: int
) -> list[CapacityStep]:
    """Run each rate (repeating as :func:`repeat_reason` asks) up to the first failure."""
    steps: list[CapacityStep] = []
    for rate in rates:
        below = steps[-1] if steps else None
        runs = [run_step(rate)]
        because: list[str] = []
        while reason := repeat_reason(runs, below, repeats=repeats):
            because.append(reason)
            runs.append(run_step(rate))
        decided = decide_step(rate, runs, repeated_because=because)
        steps.append(decided)
        if not decided.passed:
            break
    return steps


def judge_confidence(steps: Sequence[CapacityStep]) -> tuple[str, str]:
    """How sure the answer is, from the steps it hangs on: the last pass, the first failure."""
    if not steps:
        return "low", "no step ran"
    failed = next((s for s in steps if not s.passed), None)
    held = next((s for s in reversed(steps) if s.passed), None)
    order = {"high": 0, "medium": 1, "low": 2}
    worst = ("high", "")
    for s in (held, failed):
        if s is None:
            continue
        word, why = _step_confidence(s)
        if order[word] > order[worst[0]]:
            worst = (word, why)
    if worst[0] != "high":
        return worst
    if failed is None:
        return "high", f"every step held up to {steps[-1].rate:g}/s (none failed)"
    under = "nothing held under it" if held is None else f"{held.rate:g}/s held"
    return "high", f"{failed.runs_behind} runs agree that {failed.rate:g}/s fails; {under}"


def _step_confidence(step: CapacityStep) -> tuple[str, str]:
    verdict = "passed" if step.passed else "failed"
    if not step.runs:
        return "low", f"no run of {step.rate:g}/s was recorded"
    if step.basis[0].halted:
        return "medium", (
            f"the run at {step.rate:g}/s was stopped ({step.basis[0].why}) and not run again"
        )
    trusted = [r for r in step.runs if r.reliable]
    if not trusted:
        return "low", f"every run at {step.rate:g}/s was unreliable"
    agree = sum(r.passed == step.passed for r in trusted)
    if 2 * agree <= len(trusted):
        return "low", f"runs at {step.rate:g}/s split evenly; counted as failed"
    if agree < len(trusted):
        return "medium", f"runs at {step.rate:g}/s disagreed: {agree} of {len(trusted)} {verdict}"
    if not step.passed and agree < 2:
        return "medium", f"the failure at {step.rate:g}/s rests on one run (not confirmed)"
    return "high", ""
