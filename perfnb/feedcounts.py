"""What a followed feed brought in and what it missed, per app instance, in words too.

A feed counts records per *instance*: the worker process named by an event's
``instance`` field, or the app's boot (from the ``hello`` event) when the feed
names none. :class:`Totals` are the counts a store keeps with its resume point,
so they add up over every follower that resumed the feed. :func:`missed` is the
one place the word "missed" is chosen: ``0 missed`` only when nothing was.

>>> totals = Totals().plus("w1", received=5).plus("w2", dropped=3)
>>> missed(totals.dropped, totals.boot_changes)
'3 missed'
>>> Totals.from_json(totals.to_json()) == totals
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

__all__ = ["Tally", "Totals", "describe_instances", "missed"]

#: Instances whose totals a resume point keeps (the most recently active ones).
KEEP_INSTANCES: Final = 64


@dataclass(frozen=True)
class Tally:
    """One instance's records: received, dropped by its buffer before they were read,
    and how often it was found restarted without its spool (its loss uncountable)."""

    received: int = 0
    dropped: int = 0
    boot_changes: int = 0


@dataclass(frozen=True)
class Totals:
    """A feed's counts as a store keeps them beside its resume point."""

    received: int = 0
    dropped: int = 0
    invalid: int = 0
    boot_changes: int = 0
    instances: Mapping[str, Tally] = field(default_factory=dict)

    def plus(
        self,
        instance: str | None,
        *,
        received: int = 0,
        dropped: int = 0,
        invalid: int = 0,
        boot_changes: int = 0,
    ) -> Totals:
        """These totals with more counted (for ``instance`` too, when named)."""
        instances = dict(self.instances)
        if instance is not None and (received or dropped or boot_changes):
            held = instances.pop(instance, Tally())
            instances[instance] = Tally(
                held.received + received, held.dropped + dropped, held.boot_changes + boot_changes
            )
            while len(instances) > KEEP_INSTANCES:
                del instances[next(iter(instances))]
        return replace(
            self,
            received=self.received + received,
            dropped=self.dropped + dropped,
            invalid=self.invalid + invalid,
            boot_changes=self.boot_changes + boot_changes,
            instances=instances,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "dropped": self.dropped,
            "invalid": self.invalid,
            "boot_changes": self.boot_changes,
            "instances": {
                name: {"received": t.received, "dropped": t.dropped, "boot_changes": t.boot_changes}
                for name, t in self.instances.items()
            },
        }

    @classmethod
    def from_json(cls, doc: object) -> Totals:
        """Totals from :meth:`to_json`'s form; anything unreadable counts as zero."""
        if not isinstance(doc, Mapping):
            return cls()
        instances: dict[str, Tally] = {}
        raw = doc.get("instances")
        if isinstance(raw, Mapping):
            for name, tally in raw.items():
                if isinstance(tally, Mapping):
                    instances[str(name)] = Tally(
                        _count(tally.get("received")),
                        _count(tally.get("dropped")),
                        _count(tally.get("boot_changes")),
                    )
        return cls(
            received=_count(doc.get("received")),
            dropped=_count(doc.get("dropped")),
            invalid=_count(doc.get("invalid")),
            boot_changes=_count(doc.get("boot_changes")),
            instances=instances,
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def missed(dropped: int, boot_changes: int) -> str:
    """How many records were missed, in words; ``0 missed`` only when that is true.

    An app that restarted without its spool lost what it held then, and nobody
    can count that: the words say so instead of a number.

    >>> missed(0, 0), missed(15, 0)
    ('0 missed', '15 missed')
    >>> missed(0, 1)
    'an uncountable number missed (at least none counted; 1 app restart without a spool)'
    """
    if not boot_changes:
        return f"{dropped} missed"
    counted = "none counted" if not dropped else f"{dropped} counted"
    restarts = "1 app restart" if boot_changes == 1 else f"{boot_changes} app restarts"
    return f"an uncountable number missed (at least {counted}; {restarts} without a spool)"


def describe_instances(instances: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One phrase per instance: its name, host and pid when known, and its counts.

    ``instances`` is :meth:`perfnb.feedclient.FeedConnection.instances`' form.

    >>> describe_instances({"w1": {"host": "h", "pid": 7, "received": 10, "dropped": 2}})
    ['instance w1 (host h, pid 7): 10 records, 2 missed']
    """
    out = []
    for name, about in instances.items():
        where = ", ".join(f"{k} {about[k]}" for k in ("host", "pid") if about.get(k) is not None)
        label = f"instance {name}" + (f" ({where})" if where else "")
        records = _count(about.get("received"))
        lost = missed(_count(about.get("dropped")), _count(about.get("boot_changes")))
        out.append(f"{label}: {records} records, {lost}")
    return out
