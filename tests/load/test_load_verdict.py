"""The verdict of capacity steps, on scripted runs: no server, no clock."""

from __future__ import annotations

import doctest
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import perfnb.load.verdict
from perfnb.errors import ConfigError
from perfnb.load.verdict import (
    StepRun,
    climb,
    decide_step,
    judge_confidence,
    repeat_reason,
)


def ok(rate: float, p95_ms: float = 5.0, **kw: Any) -> StepRun:
    return StepRun(rate=rate, achieved_rate=rate, p95_ms=p95_ms, error_rate=0.0, passed=True, **kw)


def bad(rate: float, p95_ms: float = 400.0, **kw: Any) -> StepRun:
    kw.setdefault("failed_route", "GET /a")
    kw.setdefault("why", f"p95 {p95_ms:.1f} ms > 100 ms")
    return StepRun(rate=rate, achieved_rate=rate, p95_ms=p95_ms, error_rate=0.0, passed=False, **kw)


def unreliable(run: StepRun) -> StepRun:
    return StepRun(
        **{
            **{k: getattr(run, k) for k in run.__dataclass_fields__},
            "reliable": False,
            "unreliable_reasons": ("send lag p99 40.0 ms exceeded 5 ms",),
        }
    )


class Script:
    """Hands out scripted runs per rate, in order; a rate without script passes."""

    def __init__(self, script: dict[float, Sequence[StepRun]]) -> None:
        self.left = {rate: list(runs) for rate, runs in script.items()}
        self.calls: list[float] = []

    def __call__(self, rate: float) -> StepRun:
        self.calls.append(rate)
        runs = self.left.get(rate)
        return runs.pop(0) if runs else ok(rate)


def test_doctests() -> None:
    assert doctest.testmod(perfnb.load.verdict).failed == 0


def test_one_unreliable_failing_first_step_no_longer_ends_the_climb_at_zero() -> None:
    # issue 13.7: one unreliable first step (the generator fell behind: 0 req/s achieved)
    # returned a capacity of 0 req/s
    first = unreliable(
        StepRun(50, achieved_rate=0.0, p95_ms=0.0, error_rate=0.0, passed=False, why="achieved 0/s")
    )
    script = Script({50: [first], 150: [bad(150), bad(150)]})
    steps = climb(script, [50, 100, 150, 200], repeats=2)
    assert script.calls == [50, 50, 100, 150, 150]
    assert [(s.rate, s.passed) for s in steps] == [(50, True), (100, True), (150, False)]
    assert steps[0].repeated_because[0].startswith("run 1 was unreliable (send lag p99")
    assert (steps[0].runs_behind, steps[0].unreliable_runs) == (1, 1)
    assert judge_confidence(steps) == ("high", "2 runs agree that 150/s fails; 100/s held")


def test_a_reliable_but_noisy_first_failure_is_outvoted_by_two_passes() -> None:
    script = Script({50: [bad(50), ok(50), ok(50)]})
    steps = climb(script, [50], repeats=2)
    assert script.calls == [50, 50, 50]
    assert steps[0].passed
    assert steps[0].repeated_because == (
        "the first step failed, with no passing step under it to compare with",
        "its reliable runs split: 1 passed, 1 failed",
    )
    assert judge_confidence(steps) == ("medium", "runs at 50/s disagreed: 2 of 3 passed")


def test_a_failure_is_confirmed_by_one_repeat_before_the_climb_ends() -> None:
    script = Script({100: [bad(100), bad(100, p95_ms=300.0)]})
    steps = climb(script, [50, 100, 150], repeats=2)
    assert script.calls == [50, 100, 100]
    assert not steps[-1].passed
    assert steps[-1].repeated_because == (
        "it failed after 50/s held; a failure ends the climb: confirm it",
    )
    assert steps[-1].p95_ms == 350.0
    assert steps[-1].p95_spread_ms == 100.0


@pytest.mark.parametrize("repeats", [0, 1, 2, 3])
def test_repeats_are_bounded(repeats: int) -> None:
    script = Script({50: [unreliable(bad(50))] * 10})
    steps = climb(script, [50, 100], repeats=repeats)
    assert script.calls == [50] * (1 + repeats)
    # every run unreliable: they decide together, and the answer says how little that is
    assert not steps[0].passed
    assert judge_confidence(steps) == ("low", "every run at 50/s was unreliable")


def test_without_repeats_every_step_runs_once_and_a_single_failure_is_unconfirmed() -> None:
    script = Script({100: [bad(100)]})
    steps = climb(script, [50, 100], repeats=0)
    assert script.calls == [50, 100]
    assert judge_confidence(steps) == (
        "medium",
        "the failure at 100/s rests on one run (not confirmed)",
    )


def test_a_split_the_repeats_cannot_settle_fails_with_low_confidence() -> None:
    steps = climb(Script({50: [bad(50), ok(50)]}), [50], repeats=1)
    assert not steps[0].passed
    assert judge_confidence(steps) == ("low", "runs at 50/s split evenly; counted as failed")


def test_unreliable_runs_count_only_when_no_run_was_reliable() -> None:
    noisy_passes = [unreliable(ok(50)), unreliable(ok(50))]
    assert not decide_step(50, [*noisy_passes, bad(50)]).passed
    assert decide_step(50, [*noisy_passes, unreliable(bad(50))]).passed


def test_a_run_stopped_by_a_safety_limit_is_not_repeated_and_ends_the_climb() -> None:
    halted = bad(100, stop_reason="error_rate", why="stopped: error rate 30% > 5%")
    script = Script({100: [halted]})
    steps = climb(script, [50, 100, 150], repeats=2)
    assert script.calls == [50, 100]
    assert repeat_reason([ok(100), halted], None, repeats=2) == ""
    assert not decide_step(100, [ok(100), ok(100), halted]).passed
    assert judge_confidence(steps) == (
        "medium",
        "the run at 100/s was stopped (stopped: error rate 30% > 5%) and not run again",
    )


def test_a_run_whose_worker_failed_is_run_again() -> None:
    broken = unreliable(bad(50, stop_reason="worker_failed", why="stopped: worker 0 died"))
    assert not broken.halted
    assert repeat_reason([broken], None, repeats=2).startswith("run 1 was unreliable")


def test_a_pass_with_goodput_far_below_the_trend_is_run_again() -> None:
    below = decide_step(100, [ok(100)])
    # a lax error SLO let half the requests fail: 110 good responses/s where 200 were due
    lax = StepRun(200, achieved_rate=200, p95_ms=5.0, error_rate=0.45, passed=True)
    assert repeat_reason([lax], below, repeats=2) == (
        "goodput 110.0/s is out of line: the trend of 100/s expects about 200.0/s"
    )
    assert repeat_reason([ok(200)], below, repeats=2) == ""
    assert repeat_reason([lax, lax], below, repeats=2) == ""


def test_a_steps_figures_are_the_medians_of_the_runs_that_agree_with_it() -> None:
    runs = [ok(50, 4.0, run_id="a"), bad(50, run_id="b"), ok(50, 10.0, run_id="c")]
    runs.append(ok(50, 6.0, run_id="d"))
    step = decide_step(50, runs)
    assert (step.passed, step.p95_ms, step.run_id) == (True, 6.0, "d")
    assert [r.run_id for r in step.basis] == ["a", "c", "d"]
    assert step.p95_spread_ms == 396.0
    assert step.to_json()["runs_behind"] == 3


def test_deciding_a_step_without_runs_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"runs=\[\]\): accepted: at least one run"):
        decide_step(50, [])


def test_confidence_of_an_empty_or_unbroken_climb() -> None:
    assert judge_confidence([]) == ("low", "no step ran")
    steps = climb(Script({}), [50, 100], repeats=2)
    assert judge_confidence(steps) == ("high", "every step held up to 100/s (none failed)")


_runs = st.builds(
    StepRun,
    rate=st.just(50.0),
    achieved_rate=st.floats(0, 60),
    p95_ms=st.floats(0, 1000),
    error_rate=st.floats(0, 1),
    passed=st.booleans(),
    reliable=st.booleans(),
)


@given(first=_runs)
def test_one_noisy_run_never_fails_a_step_that_its_repeats_pass(first: StepRun) -> None:
    script = Script({50: [first, ok(50), ok(50)]})
    steps = climb(script, [50], repeats=2)
    assert steps[0].passed
    assert len(script.calls) <= 3


@given(runs=st.lists(_runs, min_size=1, max_size=6), repeats=st.integers(0, 4))
def test_a_step_runs_at_most_one_plus_repeats_times_and_follows_its_reliable_majority(
    runs: list[StepRun], repeats: int
) -> None:
    script = Script({50: runs})
    (step,) = climb(script, [50], repeats=repeats)
    assert 1 <= len(step.runs) <= 1 + repeats
    trusted = [r for r in step.runs if r.reliable] or list(step.runs)
    assert step.passed == (2 * sum(r.passed for r in trusted) > len(trusted))
