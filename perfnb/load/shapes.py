"""Load shapes: how many users (closed model) or what arrival rate (open model), when.

A shape is anything with a ``model`` (``"closed"`` or ``"open"``) and a
``tick(elapsed) -> float | None`` method: the number of users or requests per
second wanted ``elapsed`` seconds into the run, or ``None`` when the run is over.
The controller calls ``tick`` ten times a second in its own process, so a custom
shape may be defined anywhere, even in a notebook cell.

>>> Users(10, ramp_up=5, duration=60).tick(2.5)
5.0
>>> ConstantRate(500, duration=10).tick(11) is None
True
>>> class Spike:
...     model = "open"
...     def tick(self, elapsed: float) -> float | None:
...         return None if elapsed > 30 else (1000.0 if 10 < elapsed < 20 else 100.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from perfnb.errors import ConfigError

__all__ = ["ConstantRate", "RampingRate", "Shape", "Stages", "Users", "check_shape"]

Model = Literal["closed", "open"]


@runtime_checkable
class Shape(Protocol):
    """The whole interface of a load shape."""

    @property
    def model(self) -> Model:
        """``"closed"`` (tick gives users) or ``"open"`` (tick gives requests per second)."""

    def tick(self, elapsed: float) -> float | None:
        """Users (closed) or requests per second (open) wanted now; None ends the run."""


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    ok = value >= 0 if zero_ok else value > 0
    if not ok:
        accepted = "a number ≥ 0" if zero_ok else "a positive number"
        msg = f"{name}={value!r}: accepted: {accepted}"
        raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class Users:
    """Closed model: ``users`` concurrent users, started linearly over ``ramp_up`` seconds."""

    users: int
    duration: float
    ramp_up: float = 0.0
    model: Model = "closed"

    def __post_init__(self) -> None:
        _positive("users", self.users)
        _positive("duration", self.duration)
        _positive("ramp_up", self.ramp_up, zero_ok=True)

    def tick(self, elapsed: float) -> float | None:
        """Users wanted at ``elapsed``."""
        if elapsed >= self.duration:
            return None
        if self.ramp_up > 0 and elapsed < self.ramp_up:
            return float(max(1, int(self.users * elapsed / self.ramp_up)))
        return float(self.users)


@dataclass(frozen=True, slots=True)
class ConstantRate:
    """Open model: ``rate`` requests (or journeys) per second for ``duration`` seconds."""

    rate: float
    duration: float
    model: Model = "open"

    def __post_init__(self) -> None:
        _positive("rate", self.rate)
        _positive("duration", self.duration)

    def tick(self, elapsed: float) -> float | None:
        """Arrival rate wanted at ``elapsed``."""
        return None if elapsed >= self.duration else float(self.rate)


@dataclass(frozen=True, slots=True)
class RampingRate:
    """Open model: the arrival rate goes linearly from ``start`` to ``end`` over ``duration``."""

    start: float
    end: float
    duration: float
    model: Model = "open"

    def __post_init__(self) -> None:
        _positive("start", self.start, zero_ok=True)
        _positive("end", self.end, zero_ok=True)
        _positive("duration", self.duration)

    def tick(self, elapsed: float) -> float | None:
        """Arrival rate wanted at ``elapsed``."""
        if elapsed >= self.duration:
            return None
        return self.start + (self.end - self.start) * elapsed / self.duration


@dataclass(frozen=True, slots=True)
class Stages:
    """Stages of ``(seconds, target)``: each moves linearly from the previous target.

    ``Stages([(10, 100), (30, 100), (10, 0)], model="open")`` ramps to 100/s over
    10 s, holds 30 s, ramps down over 10 s. The first stage starts from ``start``.

    >>> Stages([(10, 100), (10, 100)], model="open").tick(5)
    50.0
    """

    stages: Sequence[tuple[float, float]]
    model: Model = "closed"
    start: float = 0.0

    def __post_init__(self) -> None:
        if not self.stages:
            msg = "stages: the list is empty; accepted: a list of (seconds, target) pairs"
            raise ConfigError(msg)
        for i, stage in enumerate(self.stages):
            given: object = stage  # the type says a pair; user input may not be one
            if not isinstance(given, tuple | list) or len(given) != 2:
                msg = f"stages[{i}]={stage!r}: accepted: a (seconds, target) pair"
                raise ConfigError(msg)
            _positive(f"stages[{i}] seconds", stage[0])
            _positive(f"stages[{i}] target", stage[1], zero_ok=True)
        if self.model not in ("closed", "open"):
            msg = f"model={self.model!r}: accepted: 'closed' (users) or 'open' (rate)"
            raise ConfigError(msg)
        object.__setattr__(self, "stages", tuple((float(s), float(t)) for s, t in self.stages))

    @property
    def duration(self) -> float:
        """Total seconds."""
        return sum(s for s, _ in self.stages)

    def tick(self, elapsed: float) -> float | None:
        """Users or rate wanted at ``elapsed``."""
        before = self.start
        for seconds, target in self.stages:
            if elapsed < seconds:
                value = before + (target - before) * elapsed / seconds
                return float(round(value)) if self.model == "closed" else value
            elapsed -= seconds
            before = target
        return None


def check_shape(shape: object) -> Shape:
    """Return ``shape`` if it fits the :class:`Shape` interface, else raise ConfigError."""
    if not isinstance(shape, Shape) or getattr(shape, "model", None) not in ("closed", "open"):
        msg = (
            f"shape {shape!r}: expected an object with model = 'closed' or 'open' and a "
            "tick(elapsed) -> float | None method (Users, ConstantRate, RampingRate, Stages)"
        )
        raise ConfigError(msg)
    return shape
