"""The feed of a fleet: one stream of every process's records, resumable per process.

:class:`FleetCursor` has the interface of :class:`~perfnb.server.sse.Cursor`
(``opening``, ``pending``, ``pull``) and reads a fleet directory's journals
(:mod:`perfnb.server.fleet`) instead of one monitor's ring. Its events:

``hello``
    as for one process, plus ``"fleet": true`` and ``"instances"``: every
    journal, ``{"instance", "boot", "host", "pid", "first", "last", "alive"}``.
``records`` and ``dropped``
    as for one process, plus ``"instance"`` (the boot id of the process whose
    numbers ``first..last`` they are).

Every event id is the cursor itself, ``<boot>:<seq>,<boot>:<seq>,…``: the last
number read of every process. Sent back as ``Last-Event-ID`` it resumes each
process exactly where it stopped; a process the id does not name (it began
later) is read from its first record, and one whose journal was removed before
it was read to the end is reported as ``dropped``. A one-process id
``<boot>:<seq>`` is the same format with one entry.

>>> parse_fleet_id("ab:3,cd:9"), parse_fleet_id("nonsense")
({'ab': 3, 'cd': 9}, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfnb.server.fleetread import FleetReader, Journal
from perfnb.server.sse import RETRY_MS, event

if TYPE_CHECKING:
    from perfnb.server.monitor import Monitor

__all__ = ["FleetCursor", "parse_fleet_id"]

#: Longest ``Last-Event-ID`` read (several hundred processes).
_MAX_ID = 32_768
#: How often a waiting fleet stream looks for new records (s): other processes'
#: records wake nobody in this one.
POLL_SECONDS = 0.1


def parse_fleet_id(value: str | None) -> dict[str, int] | None:
    """``"<boot>:<seq>,…"`` as ``{boot: seq}``; ``None`` for anything else."""
    if not value or len(value) > _MAX_ID:
        return None
    out: dict[str, int] = {}
    for part in value.strip().split(","):
        boot, sep, seq = part.rpartition(":")
        if not sep or not boot or not seq.isdigit() or not seq.isascii():
            return None
        out[boot] = int(seq)
    return out


class FleetCursor:
    """One consumer's place in every journal of a fleet directory."""

    poll_seconds: float | None = POLL_SECONDS

    def __init__(self, monitor: Monitor, *, last_event_id: str | None, since: str) -> None:
        assert monitor.fleet is not None
        self._monitor = monitor
        self._reader = FleetReader(monitor.fleet.directory)
        journals = self._reader.journals()
        parsed = parse_fleet_id(last_event_id)
        self.resumed = parsed is not None
        self.sent_records = 0
        self.after: dict[str, int] = {}
        self._at: dict[str, tuple[Path, int] | None] = {}
        self._lost: list[tuple[str, int, int]] = []  # removed journals not read to their end
        if parsed is not None:
            known = {j.boot for j in journals}
            self.after.update(parsed)
            for boot, last in self._reader.gone().items():
                seen = parsed.get(boot)
                if seen is not None and last > seen and boot not in known:
                    self._lost.append((boot, seen + 1, last))
                    self.after[boot] = last
        else:
            for j in journals:
                self.after[j.boot] = j.last if since == "now" else j.first - 1
        self._journals = journals

    def _token(self) -> str:
        return ",".join(f"{boot}:{seq}" for boot, seq in self.after.items())

    def opening(self) -> bytes:
        """The ``retry`` hint, the ``hello`` event and what removed journals lost."""
        monitor = self._monitor
        hello: dict[str, object] = {
            "boot": monitor.boot,
            "service": monitor.service,
            "fleet": True,
            "instances": [j.describe() for j in self._journals],
            "resumed": self.resumed,
        }
        out = f"retry: {RETRY_MS}\n\n".encode() + event("hello", hello)
        for boot, first, last in self._lost:
            out += event(
                "dropped",
                {
                    "instance": boot,
                    "dropped": last - first + 1,
                    "first_missing": first,
                    "last_missing": last,
                },
                event_id=self._token(),
            )
        self._lost = []
        return out

    def _after(self, journal: Journal) -> int:
        # a process the cursor has not met began after it: all of its records are new
        return self.after.setdefault(journal.boot, 0)

    def pending(self) -> bool:
        """Whether any journal holds numbers after the cursor's."""
        self._journals = self._reader.journals()
        return any(j.last > self._after(j) for j in self._journals)

    def pull(self) -> bytes:
        """The next events of one process; ``b""`` when every journal is caught up."""
        limit = self._monitor.limits.batch_records
        for journal in self._journals:
            after = self._after(journal)
            if journal.last <= after:
                continue
            found, at = self._reader.read(
                journal, after=after, limit=limit, at=self._at.get(journal.boot)
            )
            self._at[journal.boot] = at
            out = b""
            for kind, payload in found:
                out += self._event(journal, kind, payload)
            if out:
                return out
        self._journals = self._reader.journals()
        return b""

    def _event(self, journal: Journal, kind: str, payload: Any) -> bytes:
        boot = journal.boot
        if kind == "dropped":
            first, last = payload
            self.after[boot] = last
            doc: dict[str, object] = {
                "instance": boot,
                "dropped": last - first + 1,
                "first_missing": first,
                "last_missing": last,
            }
            return event("dropped", doc, event_id=self._token())
        first, last, wire = payload
        for rec in wire:
            tags = rec.get("tags")
            rec["tags"] = (
                {**tags, "instance": journal.instance} if tags else {"instance": journal.instance}
            )
        self.after[boot] = last
        self.sent_records += len(wire)
        doc = {"instance": boot, "first": first, "last": last, "records": wire}
        return event("records", doc, event_id=self._token())
