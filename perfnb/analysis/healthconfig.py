"""Every threshold of perfnb's health analysis, in one frozen, validated object.

The defaults suit a real app watched in real time; tests and demos shrink the
windows. Load settings from a dict or a JSON document; a wrong key or value is a
:class:`~perfnb.errors.ConfigError` that names the key, shows the value and says
what is accepted.

=============================  ==========  ================================================
key                            default     meaning
=============================  ==========  ================================================
``window_s``                   10          length of one evaluation window (s)
``enter_windows``              3           consecutive bad windows before a state worsens
                                           or an alert is raised
``leave_windows``              3           consecutive good windows before it recovers
                                           or the alert is cleared
``recover_ratio``              0.8         leave thresholds = enter thresholds × this
                                           (hysteresis: no flapping at a threshold)
``min_requests``               10          fewest requests in a window to judge it
``include_load``               false       judge load-run traffic (``run_id`` set) too
``max_routes``                 200         routes tracked; later ones share ``(other)``
``max_clients``                5000        polling clients tracked (least recent dropped)
``polling_routes``             ["*poll*"]  route templates (fnmatch patterns) that poll
``client_key``                 "client"    what names a client: ``client`` (the
                                           middleware's session/address hash) or
                                           ``tag:<name>`` (a tag of the record)
``poll_min_s`` / ``poll_max_s``  2 / 5     the expected polling interval (s)
``poll_degraded_errors``       0.05        share of failed polls: apiPolling degraded
``poll_failing_errors``        0.25        share of failed polls: apiPolling failing
``poll_slow_ratio``            2           median interval > poll_max_s × this: degraded
``runaway_window_s``           10          look-back over one client's polls (s)
``runaway_min_polls``          4           polls in the look-back before judging
``runaway_interval_ratio``     0.5         median interval < poll_min_s × this: runaway
``runaway_rate_jump``          3           rate ≥ this × the client's own earlier rate
``runaway_overlaps``           2           polls started before the previous ended
``slow_ms``                    500         serverResponse slow: p95 at or above (ms)
``timeout_ms``                 10000       a request this long counts as a timeout (ms)
``timeout_share``              0.05        share of timeouts: serverResponse timeout,
                                           and a timeout alert on a route
``timeout_min_count``          2           fewest timeouts in a window for an alert
``baseline_windows``           30          rolling baseline: last N healthy windows
``baseline_min_windows``       6           windows of baseline before judging a route
``degrade_ratio``              2           degradation: p95 ≥ baseline p95 × this ...
``degrade_min_ms``             50          ... and at least this much above it (ms)
``error_rate_enter``           0.1         error alert: error share at or above this ...
``error_rate_margin``          0.05        ... and this far above the route's baseline
``vitals_window_s``            60          look-back for Web Vitals and long frames (s)
``vitals``                     web.dev     ``{name: [good_at_most, poor_above]}`` at p75
``long_frame_ms``              50          a render record this long is a long frame
``long_frames_degraded``       10          long frames per minute: degraded
``long_frames_poor``           30          long frames per minute: poor
``leak_bin_s``                 60          memory floor: minimum per bin of this (s)
``leak_bins``                  60          floors kept for the slope
``leak_min_duration_s``        600         growth sustained at least this long (s)
``leak_min_growth_bytes``      52428800    and at least this many bytes (50 MiB)
``leak_min_growth_ratio``      0.1         and at least this share of the first floor
``leak_monotonic``             0.8         share of floor pairs that must rise
=============================  ==========  ================================================

>>> config = HealthConfig.from_mapping({"window_s": 1, "poll_min_s": 1.5})
>>> config.window_s, config.poll_max_s
(1.0, 5.0)
>>> HealthConfig.from_mapping({"window": 1})
Traceback (most recent call last):
...
perfnb.errors.ConfigError: health config: unknown key 'window' (value 1); accepted: ...
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Final

from perfnb.errors import ConfigError

__all__ = ["DEFAULT_VITALS", "HealthConfig"]

#: Web Vitals at the 75th percentile: (good at or below, poor above), as web.dev publishes.
DEFAULT_VITALS: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {
        "LCP": (2500.0, 4000.0),
        "INP": (200.0, 500.0),
        "FID": (100.0, 300.0),
        "CLS": (0.1, 0.25),
        "FCP": (1800.0, 3000.0),
        "TTFB": (800.0, 1800.0),
    }
)

# Numeric keys: (integer?, lowest, highest, lowest inclusive?).
_NUMBERS: Final[dict[str, tuple[bool, float, float, bool]]] = {
    "window_s": (False, 0.0, 86_400.0, False),
    "enter_windows": (True, 1, 1000, True),
    "leave_windows": (True, 1, 1000, True),
    "recover_ratio": (False, 0.0, 1.0, False),
    "min_requests": (True, 1, 1_000_000, True),
    "max_routes": (True, 1, 100_000, True),
    "max_clients": (True, 1, 1_000_000, True),
    "poll_min_s": (False, 0.0, 86_400.0, False),
    "poll_max_s": (False, 0.0, 86_400.0, False),
    "poll_degraded_errors": (False, 0.0, 1.0, False),
    "poll_failing_errors": (False, 0.0, 1.0, False),
    "poll_slow_ratio": (False, 1.0, 1000.0, True),
    "runaway_window_s": (False, 0.0, 86_400.0, False),
    "runaway_min_polls": (True, 2, 10_000, True),
    "runaway_interval_ratio": (False, 0.0, 1.0, False),
    "runaway_rate_jump": (False, 1.0, 1000.0, False),
    "runaway_overlaps": (True, 1, 10_000, True),
    "slow_ms": (False, 0.0, 1e9, False),
    "timeout_ms": (False, 0.0, 1e9, False),
    "timeout_share": (False, 0.0, 1.0, False),
    "timeout_min_count": (True, 1, 1_000_000, True),
    "baseline_windows": (True, 1, 100_000, True),
    "baseline_min_windows": (True, 1, 100_000, True),
    "degrade_ratio": (False, 1.0, 1000.0, False),
    "degrade_min_ms": (False, 0.0, 1e9, True),
    "error_rate_enter": (False, 0.0, 1.0, False),
    "error_rate_margin": (False, 0.0, 1.0, True),
    "vitals_window_s": (False, 0.0, 86_400.0, False),
    "long_frame_ms": (False, 0.0, 1e9, False),
    "long_frames_degraded": (False, 0.0, 1e9, False),
    "long_frames_poor": (False, 0.0, 1e9, False),
    "leak_bin_s": (False, 0.0, 86_400.0, False),
    "leak_bins": (True, 3, 1000, True),
    "leak_min_duration_s": (False, 0.0, 1e9, False),
    "leak_min_growth_bytes": (False, 0.0, 1e15, False),
    "leak_min_growth_ratio": (False, 0.0, 1000.0, True),
    "leak_monotonic": (False, 0.5, 1.0, True),
}


def _fail(key: str, value: object, accepted: str) -> ConfigError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ConfigError(
        f"health config: key {key!r}: got {shown} ({type(value).__name__}); {accepted}"
    )


def _number(key: str, value: object) -> float | int:
    integer, low, high, inclusive = _NUMBERS[key]
    lower = "≥" if inclusive else ">"
    accepted = f"expected {'an integer' if integer else 'a number'} {lower} {low:g} and ≤ {high:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, value, accepted)
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise _fail(key, value, accepted)
    if not math.isfinite(value) or value > high or value < low or (value == low and not inclusive):
        raise _fail(key, value, accepted)
    return int(value) if integer else float(value)


def _vitals(value: object) -> Mapping[str, tuple[float, float]]:
    accepted = "expected {name: [good_at_most, poor_above]} with 0 ≤ good ≤ poor"
    if not isinstance(value, Mapping):
        raise _fail("vitals", value, accepted)
    out: dict[str, tuple[float, float]] = {}
    for name, pair in value.items():
        ok = (
            isinstance(name, str)
            and isinstance(pair, list | tuple)
            and len(pair) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        )
        if not ok or not 0 <= pair[0] <= pair[1] < math.inf:
            raise _fail(f"vitals.{name}", pair, accepted)
        out[name] = (float(pair[0]), float(pair[1]))
    return MappingProxyType(out)


def _patterns(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _fail("polling_routes", value, "expected a list of route templates or patterns")
    if not all(isinstance(v, str) and v for v in value):
        raise _fail("polling_routes", value, "expected non-empty strings")
    return tuple(value)


def _client_key(value: object) -> str:
    if value == "client" or (
        isinstance(value, str) and value.startswith("tag:") and len(value) > len("tag:")
    ):
        return value
    raise _fail("client_key", value, "expected 'client' or 'tag:<name>'")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The thresholds of the health engine (see the module's table for each key).

    Checked on construction: ``HealthConfig(window_s=0)`` raises a
    :class:`~perfnb.errors.ConfigError` naming ``window_s``.

    >>> HealthConfig(enter_windows=3).leave_windows
    3
    """

    window_s: float = 10.0
    enter_windows: int = 3
    leave_windows: int = 3
    recover_ratio: float = 0.8
    min_requests: int = 10
    include_load: bool = False
    max_routes: int = 200
    max_clients: int = 5000
    polling_routes: tuple[str, ...] = ("*poll*",)
    client_key: str = "client"
    poll_min_s: float = 2.0
    poll_max_s: float = 5.0
    poll_degraded_errors: float = 0.05
    poll_failing_errors: float = 0.25
    poll_slow_ratio: float = 2.0
    runaway_window_s: float = 10.0
    runaway_min_polls: int = 4
    runaway_interval_ratio: float = 0.5
    runaway_rate_jump: float = 3.0
    runaway_overlaps: int = 2
    slow_ms: float = 500.0
    timeout_ms: float = 10_000.0
    timeout_share: float = 0.05
    timeout_min_count: int = 2
    baseline_windows: int = 30
    baseline_min_windows: int = 6
    degrade_ratio: float = 2.0
    degrade_min_ms: float = 50.0
    error_rate_enter: float = 0.1
    error_rate_margin: float = 0.05
    vitals_window_s: float = 60.0
    vitals: Mapping[str, tuple[float, float]] = field(default_factory=lambda: DEFAULT_VITALS)
    long_frame_ms: float = 50.0
    long_frames_degraded: float = 10.0
    long_frames_poor: float = 30.0
    leak_bin_s: float = 60.0
    leak_bins: int = 60
    leak_min_duration_s: float = 600.0
    leak_min_growth_bytes: float = 50.0 * 1024 * 1024
    leak_min_growth_ratio: float = 0.1
    leak_monotonic: float = 0.8

    def __post_init__(self) -> None:
        for key in _NUMBERS:
            object.__setattr__(self, key, _number(key, getattr(self, key)))
        if not isinstance(self.include_load, bool):
            raise _fail("include_load", self.include_load, "expected true or false")
        object.__setattr__(self, "polling_routes", _patterns(self.polling_routes))
        object.__setattr__(self, "client_key", _client_key(self.client_key))
        object.__setattr__(self, "vitals", _vitals(self.vitals))
        if self.poll_max_s < self.poll_min_s:
            raise _fail(
                "poll_max_s", self.poll_max_s, f"expected ≥ poll_min_s ({self.poll_min_s:g})"
            )
        if self.poll_failing_errors < self.poll_degraded_errors:
            raise _fail(
                "poll_failing_errors",
                self.poll_failing_errors,
                f"expected ≥ poll_degraded_errors ({self.poll_degraded_errors:g})",
            )
        if self.long_frames_poor < self.long_frames_degraded:
            raise _fail(
                "long_frames_poor",
                self.long_frames_poor,
                f"expected ≥ long_frames_degraded ({self.long_frames_degraded:g})",
            )
        if self.baseline_windows < self.baseline_min_windows:
            raise _fail(
                "baseline_windows",
                self.baseline_windows,
                f"expected ≥ baseline_min_windows ({self.baseline_min_windows})",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> HealthConfig:
        """A config from a dict of the keys to change (the others keep their defaults).

        >>> HealthConfig.from_mapping({"slow_ms": 300}).slow_ms
        300.0
        """
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"health config: got {type(values).__name__}; expected a mapping of keys to values"
            )
        known = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"health config: unknown key {key!r} (value {value!r}); "
                    f"accepted: {', '.join(sorted(known))}"
                )
        return cls(**dict(values))

    @classmethod
    def from_json(cls, text: str) -> HealthConfig:
        """A config from a JSON object (a file's text, say).

        >>> HealthConfig.from_json('{"window_s": 2}').window_s
        2.0
        """
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"health config: not valid JSON ({exc})") from None
        return cls.from_mapping(values)

    def replace(self, **changes: Any) -> HealthConfig:
        """A copy with some keys changed (checked like the original).

        >>> HealthConfig().replace(window_s=1).window_s
        1.0
        """
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every key and its value, JSON-ready (``from_mapping`` reads it back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["polling_routes"] = list(self.polling_routes)
        out["vitals"] = {k: list(v) for k, v in self.vitals.items()}
        return out
