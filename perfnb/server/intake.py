"""Browser batches into the monitor: from the ``X-Perfnb-Beacon`` header or the intake's body.

:class:`BeaconIntake` is the part of :class:`~perfnb.server.monitor.Monitor`
that takes browser batches: it decodes them (:mod:`perfnb.server.beacon`),
records what is valid and counts what is not. Whatever arrives, nothing raises
into the app.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable

from perfnb.errors import RecordError
from perfnb.schema import Record
from perfnb.server import beacon as _beacon

__all__ = ["BeaconIntake"]


class BeaconIntake(abc.ABC):
    """Beacon batches in; the monitor provides the state named here."""

    service: str
    clock: Callable[[], float]
    beacon_limits: _beacon.BeaconLimits
    client_secret: bytes
    last_beacon_error: str
    _pages: _beacon.PageNames
    _lock: threading.Lock
    _counts: dict[str, int]

    @abc.abstractmethod
    def record(self, rec: Record) -> None:
        """Record one record (the monitor's hot path)."""

    def take_beacon_header(
        self,
        value: str | bytes,
        *,
        route: str | None = None,
        client: str | None = None,
        run_id: str | None = None,
    ) -> int:
        """Take a batch from an ``X-Perfnb-Beacon`` header; return how many records it gave.

        Never raises: a bad value is counted (``beacon_batches_bad``) and dropped.
        ``route`` stands in for a batch without ``page``, ``client`` (the peer
        address) for one without ``session``.
        """
        limit = self.beacon_limits.header_bytes
        return self._take(
            lambda: _beacon.decode_header(value, max_bytes=limit),
            route=route,
            client=client,
            run_id=run_id,
        )[0]

    def take_beacon_body(
        self, body: bytes, *, client: str | None = None, run_id: str | None = None
    ) -> int:
        """Take a batch from a ``POST <prefix>/beacon`` body; like :meth:`take_beacon_header`."""
        return self._take_body(body, client=client, run_id=run_id)[0]

    def _take_body(
        self, body: bytes, *, client: str | None = None, run_id: str | None = None
    ) -> tuple[int, str | None]:
        return self._take(lambda: _beacon.decode_body(body), client=client, run_id=run_id)

    def _take(
        self,
        decode: Callable[[], object],
        *,
        route: str | None = None,
        client: str | None,
        run_id: str | None,
    ) -> tuple[int, str | None]:
        """Decode and record one batch: (records recorded, envelope error or None)."""
        try:
            records, errors = _beacon.batch_records(
                decode(),
                service=self.service,
                pages=self._pages,
                secret=self.client_secret,
                now_ms=self.clock() * 1000.0,
                limits=self.beacon_limits,
                client=client,
                route=route,
                run_id=run_id,
            )
        except RecordError as exc:
            return 0, self._bad_batch(str(exc))
        except Exception as exc:  # whatever the input, nothing reaches the app
            return 0, self._bad_batch(f"beacon batch refused ({type(exc).__name__})")
        with self._lock:
            self._counts["beacon_batches"] += 1
            self._counts["beacon_records"] += len(records)
            self._counts["beacon_records_bad"] += len(errors)
            if errors:
                self.last_beacon_error = errors[-1][:300]
        for rec in records:
            self.record(rec)
        return len(records), None

    def _bad_batch(self, message: str) -> str:
        message = message[:300]
        with self._lock:
            self._counts["beacon_batches_bad"] += 1
            self.last_beacon_error = message
        return message
