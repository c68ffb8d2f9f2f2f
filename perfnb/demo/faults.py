"""Fault switches: make the demo app misbehave on purpose, at run time.

Every switch is off by default. They are read on the request path and changed
through ``GET/POST/DELETE /api/admin/faults``; perfnb's health analysis and load
safety limits are proven against them.

==========================  ================================================
switch                      effect
==========================  ================================================
``slow_db_ms``              the database calls of the affected routes sleep
                            this long first
``error_rate``              that share of API requests answer a 500
``leak_kb_per_request``     each API request retains that many KB for good
``polling_runaway``         the front end's poll loop stops backing off and
                            multiplies (the flag rides on every poll answer)
``timeout_ms``              API handlers hang this long before working
``routes``                  limit the faults to these route templates
                            (empty: every API route but admin and health)
==========================  ================================================

>>> faults = Faults()
>>> faults.update({"error_rate": 0.25, "slow_db_ms": 40})["error_rate"]
0.25
>>> faults.update({"error_rate": 2})
Traceback (most recent call last):
...
perfnb.demo.faults.FaultError: fault 'error_rate': got 2; expected a number from 0 to 1
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Collection, Mapping
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass, field, replace
from typing import Final

from perfnb.errors import ConfigError

__all__ = ["FaultError", "FaultState", "Faults"]

#: (lowest, highest) accepted for the numeric switches; highs keep a typo from
#: hanging or exhausting the machine.
_LIMITS: Final[dict[str, tuple[float, float]]] = {
    "slow_db_ms": (0.0, 60_000.0),
    "error_rate": (0.0, 1.0),
    "leak_kb_per_request": (0.0, 10_240.0),
    "timeout_ms": (0.0, 120_000.0),
}
#: The leak stops growing here, so a forgotten switch cannot take the host down.
MAX_LEAK_BYTES: Final = 1024 * 1024 * 1024

#: The route template of the request being served, for the database's slow-DB check
#: (the database runs on worker threads, which inherit the request's context). ``""``
#: marks a route that faults never hit (admin, health); None is outside any request.
_ROUTE: ContextVar[str | None] = ContextVar("perfnb_demo_fault_route", default=None)


class FaultError(ConfigError):
    """A fault switch was given a bad value; ``field`` names the switch."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class FaultState:
    """The switches as they stand; immutable, swapped whole on every change."""

    slow_db_ms: float = 0.0
    error_rate: float = 0.0
    leak_kb_per_request: float = 0.0
    polling_runaway: bool = False
    timeout_ms: float = 0.0
    routes: tuple[str, ...] = field(default=())

    def applies_to(self, route: str) -> bool:
        """Whether the request-path faults hit this route template."""
        return not self.routes or route in self.routes


def _number(name: str, value: object) -> float:
    low, high = _LIMITS[name]
    accepted = f"expected a number from {low:g} to {high:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(name, f"fault {name!r}: got {value!r}; {accepted}")
    if not math.isfinite(value) or not low <= value <= high:
        raise FaultError(name, f"fault {name!r}: got {value!r}; {accepted}")
    return float(value)


class Faults:
    """The fault switches of one app, plus the memory the leak holds on to.

    Thread-safe: the state is an immutable :class:`FaultState` replaced under a
    lock, so the request path reads it without locking.

    >>> f = Faults(known_routes={"/api/cards"})
    >>> f.update({"routes": ["/api/cards"], "timeout_ms": 5}).get("routes")
    ['/api/cards']
    """

    def __init__(
        self, *, known_routes: Collection[str] = (), rng: random.Random | None = None
    ) -> None:
        self._known_routes = frozenset(known_routes)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._state = FaultState()
        self._leak: list[bytes] = []
        self._leaked_bytes = 0

    @property
    def state(self) -> FaultState:
        """The current switches."""
        return self._state

    @staticmethod
    def serving(route: str | None) -> Token[str | None]:
        """Mark the current request's route (``""`` for one faults never hit)."""
        return _ROUTE.set(route)

    @staticmethod
    def served(token: Token[str | None]) -> None:
        """Undo :meth:`serving` when the request ends."""
        _ROUTE.reset(token)

    def db_delay_ms(self) -> float:
        """How long the current database call sleeps: the slow-DB fault, if it hits here."""
        state = self._state
        if state.slow_db_ms <= 0:
            return 0.0
        route = _ROUTE.get()
        if route is None:  # outside the API's requests: only an unscoped fault applies
            return 0.0 if state.routes else state.slow_db_ms
        return state.slow_db_ms if route and state.applies_to(route) else 0.0

    @property
    def leaked_bytes(self) -> int:
        """Bytes the leak switch has retained so far."""
        return self._leaked_bytes

    def as_json(self) -> dict[str, object]:
        """The switches and the leak's size, as the admin endpoint answers them."""
        out: dict[str, object] = asdict(self._state)
        out["routes"] = list(self._state.routes)
        out["leaked_bytes"] = self._leaked_bytes
        return out

    def update(self, changes: Mapping[str, object]) -> dict[str, object]:
        """Change some switches; the others keep their values. All or nothing.

        Raises :class:`~perfnb.errors.ConfigError` naming the first bad field.
        """
        if not isinstance(changes, Mapping):
            raise FaultError(
                "body", f"faults: got {type(changes).__name__}; expected a JSON object of switches"
            )
        accepted = ", ".join([*_LIMITS, "polling_runaway", "routes"])
        values: dict[str, object] = {}
        for name, value in changes.items():
            if name in _LIMITS:
                values[name] = _number(name, value)
            elif name == "polling_runaway":
                if not isinstance(value, bool):
                    raise FaultError(
                        name, f"fault 'polling_runaway': got {value!r}; expected true/false"
                    )
                values[name] = value
            elif name == "routes":
                values[name] = self._routes(value)
            else:
                raise FaultError(name, f"unknown fault {name!r}; accepted: {accepted}")
        with self._lock:
            self._state = replace(self._state, **values)  # type: ignore[arg-type]
        return self.as_json()

    def reset(self) -> dict[str, object]:
        """Turn every switch off and free what the leak held."""
        with self._lock:
            self._state = FaultState()
            self._leak = []
            self._leaked_bytes = 0
        return self.as_json()

    def _routes(self, value: object) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FaultError(
                "routes", f"fault 'routes': got {value!r}; expected a list of route templates"
            )
        unknown = [v for v in value if self._known_routes and v not in self._known_routes]
        if unknown:
            raise FaultError(
                "routes",
                f"fault 'routes': unknown route template {unknown[0]!r}; "
                f"accepted: {', '.join(sorted(self._known_routes))}",
            )
        return tuple(value)

    # -- used on the request path -------------------------------------------------

    def should_fail(self) -> bool:
        """Draw whether this request gets an injected 500."""
        rate = self._state.error_rate
        return rate > 0 and self._rng.random() < rate

    def leak(self) -> None:
        """Retain ``leak_kb_per_request`` KB, written so the pages count in RSS."""
        size = int(self._state.leak_kb_per_request * 1024)
        if size <= 0 or self._leaked_bytes >= MAX_LEAK_BYTES:
            return
        # bytes(n) would map untouched zero pages that RSS never sees; filling
        # with a non-zero byte makes the leak real.
        block = b"\x5a" * size
        with self._lock:
            self._leak.append(block)
            self._leaked_bytes += size
