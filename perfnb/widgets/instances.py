"""Which app process a record came from, and the dashboard's filter by process or host.

A server with a fleet directory tags each record with ``tags["instance"]`` =
``"<host>-<pid>-<boot>"`` (see :mod:`perfnb.server.fleet`). A filter entry names
either a whole instance or a host, which stands for every process of that host.
A record without an instance (a single-process app, a client's or a load run's
own view) counts as instance ``""``, chosen by the entry ``""``; an empty filter
keeps every record.

>>> chosen = frozenset({"web_1"})
>>> host_of("web_1-4242-a1b2c3d4e5f6")
'web_1'
>>> [matches(i, chosen) for i in ("web_1-4242-a1b2c3d4e5f6", "web_2-17-ffeeddccbbaa", "")]
[True, False, False]
>>> by_host(["web_1-2-b", "web_1-1-a", "", "web_2-3-c"])
{'': [''], 'web_1': ['web_1-1-a', 'web_1-2-b'], 'web_2': ['web_2-3-c']}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "OTHER_INSTANCE",
    "by_host",
    "host_of",
    "instance_in",
    "instance_of",
    "keep_records",
    "keep_rows",
    "matches",
]

#: What instances past an aggregator's bound are counted as (see ``max_instances``).
OTHER_INSTANCE: Final = "(other)"


def host_of(instance: str) -> str:
    """The ``<host>`` part of ``<host>-<pid>-<boot>``; any other name is its own host."""
    parts = instance.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else instance


def matches(instance: str, chosen: frozenset[str]) -> bool:
    """Whether a record of ``instance`` passes the filter ``chosen`` (empty: everything)."""
    return not chosen or instance in chosen or host_of(instance) in chosen


def instance_in(tags: object) -> str:
    """``tags["instance"]`` of a record's tags (a dict or nothing), ``""`` when none."""
    # the checks are ordered for the common cases (no tags, a dict): this runs per record
    if not tags or (type(tags) is not dict and not isinstance(tags, Mapping)):
        return ""
    value = tags.get("instance")
    return value if isinstance(value, str) else ""


def instance_of(record: Mapping[str, Any]) -> str:
    """``tags["instance"]`` of a record, ``""`` when it names none."""
    return instance_in(record.get("tags"))


def keep_records(records: list[Any], chosen: frozenset[str]) -> list[Any]:
    """The records of ``records`` that pass ``chosen`` (the same list when it is empty)."""
    if not chosen:
        return records
    return [rec for rec in records if matches(instance_of(rec), chosen)]


def keep_rows(frame: Any, chosen: frozenset[str]) -> Any:
    """The rows of a stream frame that pass ``chosen`` (the same frame when it is empty)."""
    if not chosen or frame is None or len(frame) == 0:
        return frame
    if "tags" not in frame.columns:
        return frame if "" in chosen else frame.iloc[0:0]
    mask = [matches(instance_in(tags), chosen) for tags in frame["tags"]]
    return frame[mask]


def by_host(instances: Iterable[str]) -> dict[str, list[str]]:
    """Instances grouped by host, hosts and instances sorted (``""`` is its own host)."""
    out: dict[str, list[str]] = {}
    for instance in sorted(set(instances)):
        out.setdefault(host_of(instance), []).append(instance)
    return dict(sorted(out.items()))
