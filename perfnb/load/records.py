"""Load results as perfnb records (``source="load"``), all tagged with the run id.

- Every request at low rates: ``kind="http"`` with the usual HTTP columns, the
  Server-Timing split (``server_ms``, ``app_ms``, ``db_ms``) and, in the open
  model, the corrected latency in ``tags["corrected_ms"]``.
- Per second and route, always: ``kind="load"`` records named ``requests``,
  ``errors``, ``p50_ms``, ``p95_ms``, ``p99_ms`` (and ``corrected_p95_ms``,
  ``corrected_p99_ms`` in the open model) with the figure in ``value``. Where
  responses carried Server-Timing, ``server_timing``: ``value`` is how many did,
  and ``tags`` hold their means in ms — ``client_ms`` (the client's time to the
  last byte), ``server_ms``, ``app_ms``, ``db_ms`` — so the time split survives
  at rates where no request is kept. In the open model, ``queue_ms``: the mean
  wait between the intended and the actual send, with ``tags["requests"]``, how
  many it is the mean of. (The means ride in ``tags`` and ``value`` rather than
  in ``duration_ms`` and friends: an aggregate must not count as a request.)
- Run events: ``kind="load"``, ``name="run_start"`` / ``"run_stop"`` with the
  reason and the figures that tripped a stop in ``tags``.

>>> recs = run_event_record("run_start", {"model": "open"}, run_id="r1")
>>> recs["name"], recs["run_id"]
('run_start', 'r1')
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from perfnb.collect.servertiming import parse_server_timing
from perfnb.load.stats import Cell, Detail
from perfnb.schema import Record

__all__ = ["detail_record", "run_event_record", "second_records"]


def _time(epoch_us: int) -> datetime:
    return datetime.fromtimestamp(epoch_us / 1e6, tz=UTC)


def detail_record(detail: Detail, *, run_id: str, service: str = "", worker: int = 0) -> Record:
    """One request as a ``kind="http"`` record."""
    (epoch_us, route, method, status, dur_us, ttfb_us, nbytes, error, message, corr_us, st) = detail
    record: Record = {
        "time": _time(epoch_us),
        "source": "load",
        "kind": "http",
        "route": route,
        "method": method,
        "status": status,
        "duration_ms": dur_us / 1000.0,
        "ttfb_ms": ttfb_us / 1000.0,
        "response_bytes": nbytes,
        "run_id": run_id,
        "tags": {"worker": str(worker)},
    }
    if service:
        record["service"] = service
    if error:
        record["error_type"] = error
        if message:
            record["error_message"] = message[:500]
    if corr_us >= 0:
        record["tags"]["corrected_ms"] = f"{corr_us / 1000.0:.3f}"
    if st:
        metrics = {m.name: m.dur for m in parse_server_timing(st)}
        if "app" in metrics:
            record["app_ms"] = metrics["app"]
        if "db" in metrics:
            record["db_ms"] = metrics["db"]
        server = metrics.get("total", metrics.get("app"))
        if server is not None:
            record["server_ms"] = server
    return record


def second_records(
    second: int,
    route: str,
    method: str,
    cell: Cell,
    *,
    run_id: str,
    service: str = "",
    open_model: bool = False,
) -> Iterator[Record]:
    """The per-second aggregate records of one route."""
    p50, p95, p99 = cell.latency.percentiles((50, 95, 99))
    figures: list[tuple[str, float, str]] = [
        ("requests", float(cell.count), "count"),
        ("errors", float(cell.error_count), "count"),
        ("p50_ms", p50, "ms"),
        ("p95_ms", p95, "ms"),
        ("p99_ms", p99, "ms"),
    ]
    if open_model and cell.corrected.count:
        c95, c99 = cell.corrected.percentiles((95, 99))
        figures += [("corrected_p95_ms", c95, "ms"), ("corrected_p99_ms", c99, "ms")]
    when = datetime.fromtimestamp(second, tz=UTC)
    extra: dict[str, dict[str, str]] = {}
    if cell.timed:
        n = cell.timed
        figures.append(("server_timing", float(n), "count"))
        extra["server_timing"] = {
            "client_ms": _ms(cell.timed_latency_ms / n),
            "server_ms": _ms(cell.server_ms / n),
            "app_ms": _ms(cell.app_ms / n),
            "db_ms": _ms(cell.db_ms / n),
        }
    if open_model and cell.corrected.count and cell.latency.count:
        queue = max(0.0, cell.corrected.mean - cell.latency.mean)
        figures.append(("queue_ms", queue, "ms"))
        extra["queue_ms"] = {"requests": str(cell.corrected.count)}
    for name, value, unit in figures:
        record: Record = {
            "time": when,
            "source": "load",
            "kind": "load",
            "route": route,
            "method": method,
            "name": name,
            "value": value,
            "unit": unit,
            "run_id": run_id,
        }
        if name in extra:
            record["tags"] = extra[name]
        if service:
            record["service"] = service
        yield record


def _ms(value: float) -> str:
    return f"{value:.3f}"


def run_event_record(
    name: str,
    tags: dict[str, str],
    *,
    run_id: str,
    service: str = "",
    value: float | None = None,
) -> Record:
    """A run event (start, stop) record."""
    record: Record = {
        "time": datetime.now(UTC),
        "source": "load",
        "kind": "load",
        "name": name,
        "run_id": run_id,
        "tags": {k[:64]: v[:256] for k, v in list(tags.items())[:16]},
    }
    if value is not None:
        record["value"] = value
        record["unit"] = "s"
    if service:
        record["service"] = service
    return record
