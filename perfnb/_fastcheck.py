"""The fast path of :func:`perfnb.schema.validate_record`: checkers generated per key order.

Producers build their records the same way every time, so ``validate_record``
meets a handful of key orders ("shapes"). For each one a checker specialised to
exactly those columns is generated once: it unpacks the values in one step and
tests them with inline comparisons (a few times cheaper than the loop over the
per-column checks). It accepts only plain values that the generic path would
return unchanged; anything else (None, ints in float columns, other tzinfo
classes, bad values) returns None and takes the generic path, which normalises
the record or raises its error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Final

from perfnb.schema import (
    COLUMNS,
    INT_RANGES,
    KINDS,
    MAX_MS,
    MAX_STRING,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    REQUIRED,
    SOURCES,
    Record,
)

__all__ = ["MAX_SHAPES", "shape_checker"]

#: Most shapes given generated checkers; later shapes always take the generic path,
#: so a producer that shuffles its keys cannot grow this without bound.
MAX_SHAPES: Final = 256
_TYPES: Final = {c.name: c.type for c in COLUMNS}
_MS: Final = frozenset(c.name for c in COLUMNS if c.unit == "ms" and c.type.startswith("float"))


def _tags_plain(value: Any) -> bool:
    if value.__class__ is not dict or len(value) > MAX_TAGS:
        return False
    for key, item in value.items():
        if key.__class__ is not str or item.__class__ is not str:
            return False
        if len(key) > MAX_TAG_KEY or len(item) > MAX_TAG_VALUE:
            return False
    return True


def _condition(name: str, var: str) -> str:
    kind = _TYPES[name]
    if kind == "timestamp":
        # datetime.timezone always has an offset; other tzinfo classes may not.
        return f"{var}.__class__ is _datetime and {var}.tzinfo.__class__ is _timezone"
    if name == "source":
        return f"{var}.__class__ is str and {var} in _SOURCES"
    if name == "kind":
        return f"{var}.__class__ is str and {var} in _KINDS"
    if kind in ("category", "string"):
        return f"{var}.__class__ is str and len({var}) <= {MAX_STRING}"
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return f"{var}.__class__ is int and {low} <= {var} <= {high}"
    if name in _MS:
        return f"{var}.__class__ is float and {-MAX_MS!r} < {var} < {MAX_MS!r}"  # no NaN
    if kind in ("float32", "float64"):
        return f"{var}.__class__ is float and {var} == {var}"  # False for NaN only
    return f"_tags_plain({var})"


def _compile(keys: tuple[str, ...]) -> Callable[[Mapping[str, object]], Record | None]:
    names = [f"v{i}" for i in range(len(keys))]
    pairs = list(zip(keys, names, strict=True))
    conditions = " and ".join(_condition(k, v) for k, v in pairs)
    # Tags are copied, as the generic path copies them; everything else is immutable.
    items = ", ".join(f"{k!r}: {f'dict({v})' if _TYPES[k] == 'tags' else v}" for k, v in pairs)
    # Only schema column names reach the generated source (checked by the caller).
    source = (
        "def check(record):\n"
        f"    ({', '.join(names)},) = record.values()\n"
        f"    if {conditions}:\n"
        f"        return {{{items}}}\n"
        "    return None\n"
    )
    namespace: dict[str, Any] = {
        "_datetime": datetime,
        "_timezone": timezone,
        "_SOURCES": SOURCES,
        "_KINDS": KINDS,
        "_tags_plain": _tags_plain,
    }
    exec(compile(source, f"<perfnb record checker {len(keys)} columns>", "exec"), namespace)
    checker: Callable[[Mapping[str, object]], Record | None] = namespace["check"]
    return checker


def shape_checker(
    keys: tuple[str, ...], *, known: int
) -> Callable[[Mapping[str, object]], Record | None] | None:
    """A generated checker for records with exactly these ``keys``, in this order.

    ``None`` when ``known`` shapes already have checkers (at most :data:`MAX_SHAPES`)
    or when a key is unknown or a required column is missing: the generic path
    then names the problem.
    """
    if known >= MAX_SHAPES:
        return None
    if not all(k in _TYPES for k in keys) or not all(k in keys for k in REQUIRED):
        return None
    return _compile(keys)
