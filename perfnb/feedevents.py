"""What a feed's events mean: records delivered, drops and restarts counted, the token moved.

:class:`FeedEvents` is the part of :class:`perfnb.feedclient.FeedConnection` that
reads ``hello``, ``records`` and ``dropped`` events once they are parsed. The event
id is an opaque resume token, kept as it came. Records and drops are counted per
instance (the event's ``instance``, else the app's boot); an app restart is known
only from ``hello`` (``resumed`` false with a ``previous_boot``). With a store that
keeps resume points, each batch is handed over with its mark first (see
:mod:`perfnb.feedsinks`): the token and the counts move only once it is stored.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from perfnb.errors import RecordError
from perfnb.eventstream import SSEEvent
from perfnb.feedcounts import Totals, missed
from perfnb.feedsinks import Destinations
from perfnb.schema import Record, record_from_json

__all__ = ["Counts", "FeedEvents"]

log = logging.getLogger("perfnb.feedclient")


@dataclass
class Counts:
    """A feed connection's counters (see :class:`perfnb.feedclient.FeedConnection`)."""

    received: int = 0
    dropped: int = 0
    reconnects: int = 0
    streams: int = 0
    invalid: int = 0
    #: Kept for callers of stats(); the server resumes exactly, so always 0.
    duplicates: int = 0
    boot_changes: int = 0
    connect_failures: int = 0
    sink_errors: int = 0
    #: Times the app went away (a stream broke or could not be opened).
    outages: int = 0
    #: Batches the store refused (asked for again from the last stored point).
    store_errors: int = 0


class FeedEvents:
    """The events of one feed, counted; a base of :class:`perfnb.feedclient.FeedConnection`."""

    key: str
    last_event_id: str
    boot: str | None
    _out: Destinations
    _changed: threading.Condition
    _counts: Counts
    #: The store's totals for this feed (earlier connections included).
    _totals: Totals
    #: This connection's own counts per instance.
    _session: Totals
    _instance_info: dict[str, dict[str, Any]]
    _restarts_seen: set[tuple[str, str]]

    @property
    def totals(self) -> Totals:
        """This feed's counts as the store keeps them (earlier connections included)."""
        with self._changed:
            return self._totals

    def instances(self) -> dict[str, dict[str, Any]]:
        """Per instance: what the app said of it (``host``, ``pid``, ...) and this
        connection's ``received``, ``dropped`` and ``boot_changes`` (the instance
        was found restarted without its spool: what it held then is lost)."""
        with self._changed:
            tallies = self._session.instances
            names = [*tallies, *(n for n in self._instance_info if n not in tallies)]
            out: dict[str, dict[str, Any]] = {}
            for name in names:
                about = dict(self._instance_info.get(name, {}))
                tally = tallies.get(name)
                about.update(
                    received=tally.received if tally else 0,
                    dropped=tally.dropped if tally else 0,
                )
                if tally and tally.boot_changes:
                    about["boot_changes"] = tally.boot_changes
                out[name] = about
            return out

    def missed(self) -> str:
        """What this connection missed, in words (``0 missed`` only when true)."""
        with self._changed:
            return missed(self._counts.dropped, self._counts.boot_changes)

    def _handle(self, found: SSEEvent) -> None:
        try:
            doc = json.loads(found.data)
        except ValueError:
            log.warning("feed %s: an event that is not JSON was ignored", self.key)
            return
        if not isinstance(doc, dict):
            return
        if found.event == "hello":
            self._hello(doc)
        elif found.event == "records":
            self._records(doc, found.last_event_id)
        elif found.event == "dropped":
            self._dropped(doc, found.last_event_id)

    def _instance(self, doc: dict[str, Any]) -> str | None:
        name = doc.get("instance")
        if isinstance(name, str | int) and not isinstance(name, bool):
            return str(name)
        return self.boot

    def _hello(self, doc: dict[str, Any]) -> None:
        boot = doc.get("boot")
        previous = doc.get("previous_boot")
        listed = doc.get("instances")
        with self._changed:
            if isinstance(boot, str):
                self.boot = boot
            if isinstance(listed, list):
                for item in listed:
                    if not isinstance(item, dict):
                        continue
                    # Events name a process by its boot where the list gives one
                    # (a fleet's "instance" is then a longer host-pid-boot name).
                    name = item.get("boot", item.get("instance"))
                    if isinstance(name, str | int) and not isinstance(name, bool):
                        about = {k: v for k, v in item.items() if k != "boot"}
                        if about.get("instance") == name:
                            del about["instance"]
                        self._instance_info[str(name)] = about
        # Counted once per (old, new) pair: a stream reopened before anything new
        # arrived hears the same news again.
        pair = (str(previous), str(boot))
        if isinstance(previous, str) and not doc.get("resumed") and pair not in self._restarts_seen:
            self._restarts_seen.add(pair)
            with self._changed:
                self._counts.boot_changes += 1
                self._totals = self._totals.plus(previous, boot_changes=1)
                self._session = self._session.plus(previous, boot_changes=1)
                self._changed.notify_all()
            log.warning(
                "feed %s: the app restarted without its spool (boot %s -> %s); what it "
                "still held after the last event stored is lost and cannot be counted",
                self.key,
                previous,
                boot,
            )

    def _records(self, doc: dict[str, Any], event_id: str) -> None:
        items = doc.get("records")
        if not isinstance(items, list):
            return
        instance = self._instance(doc)
        records: list[Record] = []
        invalid = 0
        for item in items:
            try:
                records.append(record_from_json(item))
            except RecordError:
                invalid += 1
        totals = self._totals.plus(instance, received=len(records), invalid=invalid)
        mark = {"url": self.key, "token": event_id, "totals": totals.to_json()}
        # The store first: if it refuses, nothing moves and the app is asked again.
        sink_errors = self._out.deliver(records, key=self.key, mark=mark)
        with self._changed:
            self._totals = totals
            self._counts.received += len(records)
            self._counts.invalid += invalid
            self._counts.sink_errors += sink_errors
            self._session = self._session.plus(instance, received=len(records))
            self.last_event_id = event_id
            self._changed.notify_all()

    def _dropped(self, doc: dict[str, Any], event_id: str) -> None:
        lost = doc.get("dropped")
        if not isinstance(lost, int) or isinstance(lost, bool) or lost <= 0:
            return
        instance = self._instance(doc)
        totals = self._totals.plus(instance, dropped=lost)
        mark = {"url": self.key, "token": event_id, "totals": totals.to_json()}
        self._out.deliver([], key=self.key, mark=mark)
        with self._changed:
            self._totals = totals
            self._counts.dropped += lost
            self._session = self._session.plus(instance, dropped=lost)
            self.last_event_id = event_id
            self._changed.notify_all()
        log.warning(
            "feed %s: %d records missed%s (numbers %s..%s): the app's buffer overwrote them "
            "before they were read",
            self.key,
            lost,
            f" from instance {instance}" if instance is not None else "",
            doc.get("first_missing"),
            doc.get("last_missing"),
        )
