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
seconds. A field that is not known, or a value that does not fit its field (not a
number, ``true`` for a number, ``NaN`` or ``Infinity``, below its range), gets a
:class:`~perfnb.errors.ConfigError` naming the field, its value and what is
accepted. A file that is not UTF-8 JSON, is larger than 1 MiB or nests deeper than
32 levels is refused the same way, with the place of the fault.

>>> cfg = parse_config({"scenario": "high_user_load",
...                     "parameters": {"concurrentUsers": 10, "duration": 60000},
...                     "safetyLimits": {"maxErrorRate": 0.05}})
>>> cfg.scenario, cfg.parameters["users"], cfg.parameters["duration"], cfg.limits.max_error_rate
('high_user_load', 10, 60.0, 0.05)
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from perfnb.errors import ConfigError
from perfnb.load.presets import PRESETS, param_problem
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

# a configuration is two levels deep; the bounds keep a hostile file from costing much
_MAX_BYTES: Final = 1 << 20
_MAX_DEPTH: Final = 32
_MAX_DIGITS: Final = 40
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """A checked configuration: a preset name, its parameters (s, bytes) and the limits."""

    scenario: str
    parameters: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _field(prefix: str, name: object) -> str:
    """``field 'prefix.name'``, the name escaped and cut short as a message needs."""
    text = repr(name)[1:-1] if isinstance(name, str) else repr(name)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"field '{prefix}{text}'"


def _fail(where: str, value: object, accepted: str) -> ConfigError:
    return ConfigError(f"{where}: got {_shown(value)}; accepted: {accepted}")


def _number(where: str, value: object, kind: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, value, "a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise _fail(where, value, "a finite number")
    if kind is int and not number.is_integer():
        raise _fail(where, value, "a whole number")
    if number < 0:
        raise _fail(where, value, "a number ≥ 0")
    return number


def parse_config(data: Mapping[str, Any]) -> LoadConfig:
    """Check a configuration (either form) and return it with canonical names and units."""
    if not isinstance(data, Mapping):
        raise _fail(
            "configuration", data, "a JSON object with 'scenario', 'parameters', 'safetyLimits'"
        )
    for key in data:
        if key not in _TOP:
            where = _field("", key)
            raise _fail(where, data[key], f"top-level fields {', '.join(_TOP)}")
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
        where = _field("parameters.", key)
        if key not in _PARAMS:
            raise _fail(where, value, ", ".join(sorted(_PARAMS)))
        canonical, convert, kind = _PARAMS[key]
        if canonical in params:
            given = next(k for k in raw_params if _PARAMS.get(k, ("",))[0] == canonical)
            raise _fail(where, value, f"one field for {canonical} ({given!r} gives it already)")
        number = _number(where, value, kind)
        if key == "duration":
            number = number / 1000.0 if json_form else number  # the document's ms
        else:
            number = convert(number)
        problem = param_problem(canonical, number)
        if problem is not None:
            raise _fail(where, value, problem)
        params[canonical] = int(number) if kind is int else number
    limits = _parse_limits(data)
    return LoadConfig(scenario=name, parameters=params, limits=limits)


def _parse_limits(data: Mapping[str, Any]) -> Limits:
    if "safetyLimits" in data and "safety_limits" in data:
        raise _fail("field 'safety_limits'", data["safety_limits"], "one of it and 'safetyLimits'")
    key = "safetyLimits" if "safetyLimits" in data else "safety_limits"
    raw = data.get(key, {})
    if not isinstance(raw, Mapping):
        raise _fail(f"field {key!r}", raw, "an object of safety limits")
    values: dict[str, Any] = {}
    accepted = ", ".join(sorted([*_LIMITS, *_BOOL_LIMITS]))
    for name, value in raw.items():
        where = _field(f"{key}.", name)
        if name in _BOOL_LIMITS:
            if not isinstance(value, bool):
                raise _fail(where, value, "true or false")
            values[_BOOL_LIMITS[name]] = value
        elif name in _LIMITS:
            target, convert = _LIMITS[name]
            if target in values:
                raise _fail(where, value, f"one field for {target} (another gives it already)")
            values[target] = None if value is None else convert(_number(where, value, float))
        else:
            raise _fail(where, value, accepted)
    try:
        return Limits(**values)
    except ConfigError as exc:
        raise ConfigError(f"field {key!r}: {exc}") from None


def _depth(text: str) -> int:
    """How deep arrays and objects nest in JSON ``text`` (brackets in strings ignored)."""
    depth = deepest = 0
    for bracket in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_config(path: str | Path) -> LoadConfig:
    """Read and check a JSON configuration file (UTF-8, a byte order mark allowed).

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    ...     _ = f.write('{"scenario": "api_stress",\\n "parameters": {"users": 5,}}')
    >>> load_config(f.name)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: config file '...' is not valid JSON: ... at line 2, column 28
    >>> os.remove(f.name)
    """
    file = Path(path)
    name = str(file)
    try:
        with file.open("rb") as stream:
            raw = stream.read(_MAX_BYTES + 1)
    except OSError as exc:
        msg = f"config file {name!r} cannot be read: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if len(raw) > _MAX_BYTES:
        msg = f"config file {name!r} is larger than 1 MiB; accepted: a JSON configuration"
        raise ConfigError(msg)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)
        msg = (
            f"config file {name!r} is not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset})"
        )
        raise ConfigError(msg) from None
    if _depth(text) > _MAX_DEPTH:
        msg = (
            f"config file {name!r}: nested deeper than {_MAX_DEPTH} levels; accepted: "
            "an object of 'scenario', 'parameters' and 'safetyLimits'"
        )
        raise ConfigError(msg)

    def whole(digits: str) -> int:
        if len(digits.lstrip("-")) > _MAX_DIGITS:
            msg = (
                f"config file {name!r}: a number of {len(digits)} digits; accepted: "
                f"numbers of at most {_MAX_DIGITS} digits"
            )
            raise ConfigError(msg)
        return int(digits)

    try:
        data = json.loads(text, parse_int=whole)
    except json.JSONDecodeError as exc:
        msg = (
            f"config file {name!r} is not valid JSON: {exc.msg} "
            f"at line {exc.lineno}, column {exc.colno}"
        )
        raise ConfigError(msg) from None
    return parse_config(data)
