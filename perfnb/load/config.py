"""The load-test configuration: the requirements document's JSON, or its Python twin.

Both shapes are accepted as written::

    {"scenario": "high_user_load",
     "parameters": {"concurrentUsers": 10, "duration": 60000,
                    "apiCallsPerUser": 5, "delayBetweenCalls": 1000},
     "safetyLimits": {"maxMemoryUsage": 100, "maxErrorRate": 0.05, "emergencyStop": true}}

    {"scenario": "high_user_load",
     "parameters": {"users": 10, "duration": 60, "calls_per_user": 5, "think_time": 1.0},
     "safety_limits": {"max_memory_mb": 100, "max_error_rate": 0.05, "emergency_stop": True}}

In the JSON form times are milliseconds (as in the document); in the Python form
seconds. A field that is not known gets a :class:`~perfnb.errors.ConfigError`
naming it, its value and what is accepted.

>>> cfg = parse_config({"scenario": "high_user_load",
...                     "parameters": {"concurrentUsers": 10, "duration": 60000},
...                     "safetyLimits": {"maxErrorRate": 0.05}})
>>> cfg.scenario, cfg.parameters["users"], cfg.parameters["duration"], cfg.limits.max_error_rate
('high_user_load', 10, 60.0, 0.05)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from perfnb.errors import ConfigError
from perfnb.load.presets import PRESETS
from perfnb.load.safety import Limits

__all__ = ["LoadConfig", "load_config", "parse_config"]


def _ms(v: float) -> float:
    return v / 1000.0


def _same(v: float) -> float:
    return v


# parameter name -> (canonical name, converter, kind)
_PARAMS: Final[dict[str, tuple[str, Callable[[float], float], type]]] = {
    # the requirements document's names (times in ms)
    "concurrentUsers": ("users", _same, int),
    "duration": ("duration", _same, float),  # unit decided by the document's form
    "apiCallsPerUser": ("calls_per_user", _same, int),
    "delayBetweenCalls": ("think_time", _ms, float),
    "rampUp": ("ramp_up", _ms, float),
    "requestsPerSecond": ("rate", _same, float),
    "payloadSize": ("payload_size", _same, int),
    "dataSize": ("payload_size", _same, int),
    "bulkSize": ("bulk_size", _same, int),
    "latency": ("latency_ms", _same, float),
    "bandwidth": ("bandwidth_kbps", _same, float),
    # the Python names (times in s)
    "users": ("users", _same, int),
    "calls_per_user": ("calls_per_user", _same, int),
    "think_time": ("think_time", _same, float),
    "ramp_up": ("ramp_up", _same, float),
    "rate": ("rate", _same, float),
    "payload_size": ("payload_size", _same, int),
    "bulk_size": ("bulk_size", _same, int),
    "latency_ms": ("latency_ms", _same, float),
    "bandwidth_kbps": ("bandwidth_kbps", _same, float),
}
_JSON_ONLY: Final = frozenset(
    {"concurrentUsers", "apiCallsPerUser", "delayBetweenCalls", "rampUp", "requestsPerSecond"}
)

# safety field -> (Limits field, converter)
_LIMITS: Final[dict[str, tuple[str, Callable[[float], float]]]] = {
    "maxMemoryUsage": ("max_target_memory_mb", _same),
    "maxErrorRate": ("max_error_rate", _same),
    "maxP95Latency": ("max_p95_ms", _same),
    "maxGeneratorMemory": ("max_generator_memory_mb", _same),
    "maxDuration": ("max_duration", _ms),
    "errorWindow": ("error_window", _ms),
    "max_memory_mb": ("max_target_memory_mb", _same),
    "max_target_memory_mb": ("max_target_memory_mb", _same),
    "max_error_rate": ("max_error_rate", _same),
    "max_p95_ms": ("max_p95_ms", _same),
    "max_generator_memory_mb": ("max_generator_memory_mb", _same),
    "max_duration": ("max_duration", _same),
    "error_window": ("error_window", _same),
}
_BOOL_LIMITS: Final = {"emergencyStop": "emergency_stop", "emergency_stop": "emergency_stop"}
_TOP: Final = ("scenario", "parameters", "safetyLimits", "safety_limits")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """A checked configuration: a preset name, its parameters (s, bytes) and the limits."""

    scenario: str
    parameters: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


def _fail(where: str, value: object, accepted: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{where}: got {shown}; accepted: {accepted}")


def _number(where: str, value: object, kind: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, value, "a number")
    if kind is int and (not float(value).is_integer()):
        raise _fail(where, value, "a whole number")
    if value < 0:
        raise _fail(where, value, "a number ≥ 0")
    return float(value)


def parse_config(data: Mapping[str, Any]) -> LoadConfig:
    """Check a configuration (either form) and return it with canonical names and units."""
    if not isinstance(data, Mapping):
        raise _fail(
            "configuration", data, "a JSON object with 'scenario', 'parameters', 'safetyLimits'"
        )
    for key in data:
        if key not in _TOP:
            raise _fail(f"field {key!r}", data[key], f"top-level fields {', '.join(_TOP)}")
    scenario = data.get("scenario")
    if not isinstance(scenario, str):
        raise _fail("field 'scenario'", scenario, f"one of {', '.join(sorted(PRESETS))}")
    name = scenario.strip().lower().replace("-", "_").replace(" ", "_")
    if name not in PRESETS:
        raise _fail("field 'scenario'", scenario, f"one of {', '.join(sorted(PRESETS))}")
    raw_params = data.get("parameters", {})
    if not isinstance(raw_params, Mapping):
        raise _fail("field 'parameters'", raw_params, "an object of parameters")
    json_form = "safetyLimits" in data or any(k in _JSON_ONLY for k in raw_params)
    params: dict[str, Any] = {}
    for key, value in raw_params.items():
        if key not in _PARAMS:
            raise _fail(f"field 'parameters.{key}'", value, ", ".join(sorted(_PARAMS)))
        canonical, convert, kind = _PARAMS[key]
        number = _number(f"field 'parameters.{key}'", value, kind)
        if key == "duration":
            number = number / 1000.0 if json_form else number  # the document's ms
            if number <= 0:
                raise _fail(f"field 'parameters.{key}'", value, "a positive duration")
        else:
            number = convert(number)
        params[canonical] = int(number) if kind is int else number
    if "users" in params and params["users"] < 1:
        raise _fail("field 'parameters.users'", params["users"], "at least 1 user")
    limits = _parse_limits(data)
    return LoadConfig(scenario=name, parameters=params, limits=limits)


def _parse_limits(data: Mapping[str, Any]) -> Limits:
    key = "safetyLimits" if "safetyLimits" in data else "safety_limits"
    raw = data.get(key, {})
    if not isinstance(raw, Mapping):
        raise _fail(f"field {key!r}", raw, "an object of safety limits")
    values: dict[str, Any] = {}
    accepted = ", ".join(sorted([*_LIMITS, *_BOOL_LIMITS]))
    for name, value in raw.items():
        where = f"field '{key}.{name}'"
        if name in _BOOL_LIMITS:
            if not isinstance(value, bool):
                raise _fail(where, value, "true or false")
            values[_BOOL_LIMITS[name]] = value
        elif name in _LIMITS:
            target, convert = _LIMITS[name]
            values[target] = None if value is None else convert(_number(where, value, float))
        else:
            raise _fail(where, value, accepted)
    try:
        return Limits(**values)
    except ConfigError as exc:
        raise ConfigError(f"field {key!r}: {exc}") from None


def load_config(path: str | Path) -> LoadConfig:
    """Read and check a JSON configuration file."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"config file {str(file)!r} cannot be read: {exc.strerror}"
        raise ConfigError(msg) from None
    except json.JSONDecodeError as exc:
        msg = f"config file {str(file)!r} is not valid JSON: {exc}"
        raise ConfigError(msg) from None
    return parse_config(data)
