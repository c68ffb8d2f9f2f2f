"""``perfnb health``: health replayed from a store's detail, shown or written back.

:func:`replay_range` runs the stored detail of a time range through a
:class:`~perfnb.analysis.health.HealthEngine` on a simulated clock (the records'
own times) and returns its transitions and alerts, reading the range a day at a
time and a day in time slices of a bounded number of rows (a month of detail
replays in the memory of one slice); :func:`write_replay` appends
them to the store as perfnb records, each tagged ``replay=<fingerprint of the
config>``, so that running it again writes nothing twice:

- records of a replay with the *same* config already in the range are skipped
  (only the missing ones are written: a wider range fills in, a repeat is a no-op);
- health or alert records of any *other* origin in the range (live health from
  :func:`~perfnb.analysis.watch.watch`, a replay with other thresholds) make it
  refuse: the store is append-only, and two accounts of the same minutes would
  both show on the post-mortem timeline.

>>> from perfnb.store import Store                                   # doctest: +SKIP
>>> out = replay_range(Store("data"), start="2026-11-28T09:00Z",
...                    end="2026-11-28T10:00Z")                       # doctest: +SKIP
>>> [(r["kind"], r["name"], r["tags"]["state"]) for r in out][:1]     # doctest: +SKIP
[('health', 'serverResponse', 'good')]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError, PerfnbError, StoreError
from perfnb.schema import Record, epoch_us, record_to_json
from perfnb.times import to_utc

if TYPE_CHECKING:
    import pandas as pd

    from perfnb.store import Store

__all__ = [
    "REPLAY_TAG",
    "WriteResult",
    "config_fingerprint",
    "main_health",
    "replay_range",
    "write_replay",
]

#: The tag that marks records written by a replay (its value: the config's fingerprint).
REPLAY_TAG: Final = "replay"
# What the engine reads; the rest of a wide record is left on disk.
_COLUMNS: Final = (
    "time",
    "source",
    "kind",
    "service",
    "route",
    "status",
    "error_type",
    "duration_ms",
    "run_id",
    "client",
    "name",
    "value",
)
_OWN_KINDS: Final = ("health", "alert")
_DAY: Final = timedelta(days=1)
_SECONDS: Final = 86_400
# Rows turned into record dicts at a time (a dict per row is the replay's big cost).
_FEED_ROWS: Final = 10_000


class ReplayConflict(PerfnbError):
    """The range already holds health or alert records a replay did not write."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What :func:`write_replay` did: records written, and those already in the store."""

    written: int
    already: int
    fingerprint: str


def config_fingerprint(config: HealthConfig) -> str:
    """A short, stable name for a config's thresholds (same config, same fingerprint).

    >>> config_fingerprint(HealthConfig()) == config_fingerprint(HealthConfig())
    True
    >>> config_fingerprint(HealthConfig(slow_ms=300)) == config_fingerprint(HealthConfig())
    False
    """
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _when(value: datetime | date | str | None, name: str) -> datetime | None:
    return to_utc(value, name=name, assume_utc=True)


def _range(
    start: datetime | date | str | None, end: datetime | date | str | None
) -> tuple[datetime | None, datetime | None]:
    first, last = _when(start, "--from"), _when(end, "--to")
    if first is not None and last is not None and last <= first:
        raise ConfigError(f"--to: got {last.isoformat()}; expected a time after --from ({first})")
    return first, last


def _detail(store: Store, start: datetime | None, end: datetime | None, cfg: HealthConfig) -> Any:
    columns = list(_COLUMNS)
    if cfg.client_key.startswith("tag:"):
        columns.append("tags")
    frame = store.read(start, end, include_load=cfg.include_load, columns=columns)
    if len(frame):
        frame = frame[frame["source"] != "perfnb"]
    if "tags" in frame.columns:
        # pyarrow gives map cells as lists of pairs; the engine reads a client key from a dict
        cells: list[Any] = [dict(t) if t is not None else None for t in frame["tags"]]
        frame = frame.assign(tags=cells)
    return frame


def _spans(
    store: Store, first: datetime | None, last: datetime | None
) -> Iterator[tuple[datetime, datetime]]:
    # The stored days inside [first, last), each cut to the range: one day read at a time.
    for day in store.days():
        lo = datetime.combine(day, dtime.min, UTC)
        hi = lo + _DAY
        lo, hi = max(lo, first) if first else lo, min(hi, last) if last else hi
        if lo < hi:
            yield lo, hi


def _per_second(store: Store, lo: datetime, hi: datetime, cfg: HealthConfig) -> Any:
    """Rows of ``[lo, hi)`` (one day at most) per second since ``lo``'s midnight.

    Read batch by batch from the ``time`` column alone: a busy day costs a batch and
    a day of counters, never the day's rows.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from perfnb.store.query import by_layout

    stamp = pa.timestamp("us", tz="UTC")
    condition = (pc.field("time") >= pa.scalar(lo, stamp)) & (
        pc.field("time") < pa.scalar(hi, stamp)
    )
    if not cfg.include_load:
        condition &= pc.field("run_id").is_null()
    midnight = epoch_us(datetime.combine(lo.date(), dtime.min, UTC))
    counts = np.zeros(_SECONDS, dtype=np.int64)
    for schema, paths in by_layout(store.fs, store.files(lo, hi), {}):
        dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=store.fs)
        for batch in dataset.to_batches(columns=["time"], filter=condition):
            micros = batch.column(0).cast(pa.int64()).to_numpy(zero_copy_only=False)
            seconds = np.clip((micros - midnight) // 1_000_000, 0, _SECONDS - 1)
            counts += np.bincount(seconds, minlength=_SECONDS)
    return counts


def _slices(
    store: Store, lo: datetime, hi: datetime, cfg: HealthConfig, rows: int
) -> Iterator[tuple[datetime, datetime]]:
    """``[lo, hi)`` cut at whole seconds into slices of about ``rows`` rows, oldest first.

    A slice holds at most ``rows`` rows unless one second alone holds more.
    """
    import numpy as np

    total = np.cumsum(_per_second(store, lo, hi, cfg))
    midnight = datetime.combine(lo.date(), dtime.min, UTC)
    start = 0  # the first second of the slice being cut
    while start < _SECONDS:
        before = int(total[start - 1]) if start else 0
        end = int(np.searchsorted(total, before + rows, side="right"))
        end = min(max(end, start + 1), _SECONDS)
        if int(total[end - 1]) == int(total[-1]):
            # The last slice reaches the span's end: rows written since the count
            # are read too, as one read of the range would.
            end = _SECONDS
        yield (
            max(lo, midnight + timedelta(seconds=start)),
            min(hi, midnight + timedelta(seconds=end)),
        )
        start = end


def _pieces(
    store: Store, first: datetime | None, last: datetime | None, cfg: HealthConfig, rows: int
) -> Iterator[pd.DataFrame]:
    # Day by day, slice by slice, in time order: the engine sees the records in the
    # order one read of the whole range would give (a stable sort by time, and a
    # day's rows never share a time with another day's).
    for lo, hi in _spans(store, first, last):
        for start, end in _slices(store, lo, hi, cfg, rows):
            frame = _detail(store, start, end, cfg)
            # Record dicts take ~10x the frame's memory: turn a few at a time.
            for offset in range(0, len(frame), _FEED_ROWS):
                yield frame.iloc[offset : offset + _FEED_ROWS]
            del frame


def replay_range(
    store: Store,
    *,
    start: datetime | date | str | None = None,
    end: datetime | date | str | None = None,
    config: HealthConfig | None = None,
    piece_rows: int = 100_000,
) -> list[Record]:
    """Health transitions and alerts replayed from the detail of ``[start, end)``.

    The engine's clock follows the records' times; its own records already in the
    store (``source="perfnb"``) are not read. Nothing is written. Open bounds mean
    the whole store.

    The range is read a day at a time, and a day in time slices of about
    ``piece_rows`` rows, so memory stays bounded however long the range; the
    output is the same as replaying the whole range's records at once.

    >>> replay_range(store, start="2026-11-28", end="2026-11-29")   # doctest: +SKIP
    """
    if isinstance(piece_rows, bool) or not isinstance(piece_rows, int) or piece_rows < 1:
        raise ConfigError(f"piece_rows: got {piece_rows!r}; expected a whole number of rows >= 1")
    cfg = config or HealthConfig()
    first, last = _range(start, end)
    return HealthEngine(cfg).replay_pieces(_pieces(store, first, last, cfg, piece_rows))


def _key(time: Any, kind: Any, name: Any, route: Any, client: Any, state: Any) -> tuple[Any, ...]:
    stamp = time.to_pydatetime() if hasattr(time, "to_pydatetime") else time
    return (epoch_us(stamp), str(kind), str(name), route or "", client or "", state or "")


def _tags(cell: object) -> dict[str, str]:
    if isinstance(cell, dict):
        return {str(k): str(v) for k, v in cell.items()}
    if isinstance(cell, list | tuple):
        return {str(pair[0]): str(pair[1]) for pair in cell if len(pair) == 2}
    return {}


def _existing(
    store: Store, records: list[Record], start: datetime | None, fingerprint: str
) -> tuple[set[tuple[Any, ...]], int, list[str]]:
    # The last window is judged just past the range's end, so look a little beyond it.
    lo = start or min(r["time"] for r in records)
    hi = max(r["time"] for r in records) + timedelta(seconds=1)
    frame: pd.DataFrame = store.read(
        lo,
        hi,
        sources=["perfnb"],
        kinds=list(_OWN_KINDS),
        columns=["time", "kind", "name", "route", "client", "tags"],
    )
    ours: set[tuple[Any, ...]] = set()
    foreign = 0
    origins: set[str] = set()
    for row in frame.itertuples(index=False):
        tags = _tags(row.tags)
        origin = tags.get(REPLAY_TAG)
        if origin == fingerprint:
            route = row.route if isinstance(row.route, str) else ""
            client = row.client if isinstance(row.client, str) else ""
            ours.add(_key(row.time, row.kind, row.name, route, client, tags.get("state")))
        else:
            foreign += 1
            origins.add(f"replay {origin}" if origin else "live")
    return ours, foreign, sorted(origins)


def write_replay(
    store: Store,
    records: list[Record],
    *,
    config: HealthConfig,
    start: datetime | date | str | None = None,
) -> WriteResult:
    """Append replayed ``records`` to ``store``, each once (see the module's rules).

    Raises :class:`ReplayConflict` (nothing written) when the range holds health or
    alert records of another origin.

    >>> write_replay(store, replay_range(store), config=HealthConfig())  # doctest: +SKIP
    WriteResult(written=12, already=0, fingerprint='h-…')
    """
    fingerprint = config_fingerprint(config)
    if not records:
        return WriteResult(0, 0, fingerprint)
    first = _when(start, "--from")
    ours, foreign, origins = _existing(store, records, first, fingerprint)
    if foreign:
        raise ReplayConflict(
            f"the range already holds {foreign} health/alert record(s) from "
            f"{', '.join(origins)} (this replay is {fingerprint}); nothing written: the store "
            "is append-only and two accounts of the same time would both show. Replay "
            "another range, or use the same config as the records already there"
        )
    fresh: list[Record] = []
    for record in records:
        tags = dict(record.get("tags") or {})
        key = _key(
            record["time"],
            record["kind"],
            record.get("name"),
            record.get("route"),
            record.get("client"),
            tags.get("state"),
        )
        if key in ours:
            continue
        tags[REPLAY_TAG] = fingerprint
        fresh.append({**record, "tags": tags})
    if fresh:
        store.append(fresh)
    return WriteResult(len(fresh), len(records) - len(fresh), fingerprint)


def _line(record: Record) -> tuple[str, str, str, str, str, str]:
    tags = record.get("tags") or {}
    where = record.get("route") or record.get("client") or ""
    return (
        record["time"].strftime("%Y-%m-%d %H:%M:%S"),
        record["kind"],
        str(record.get("name", "")),
        tags.get("state", ""),
        str(where),
        tags.get("reason", ""),
    )


def print_table(records: list[Record], out: TextIO) -> None:
    """The transitions and alerts as an aligned text table."""
    head = ("time (UTC)", "kind", "name", "state", "route/client", "reason")
    rows = [head, *(_line(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        print("  ".join([*cells, row[5]]).rstrip(), file=out)


def _config(path: str | None) -> HealthConfig:
    if path is None:
        return HealthConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config: cannot read {path!r} ({exc})") from None
    try:
        return HealthConfig.from_json(text)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


def _store(root: str) -> Store:
    from perfnb.store import Store

    if "://" not in root and not (Path(root) / "events").is_dir():
        raise StoreError(f"--store: no perfnb store at {root!r} (it has no events/ folder)")
    return Store(root)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnb health",
        description=(
            "Replay the stored detail of a time range through perfnb's health engine "
            "(clock = the records' times) and print its state transitions and alerts."
        ),
    )
    parser.add_argument("--store", required=True, help="the store folder")
    parser.add_argument("--from", dest="start", help="start, ISO 8601 (no offset means UTC)")
    parser.add_argument("--to", dest="end", help="end (exclusive), ISO 8601")
    parser.add_argument("--config", help="a JSON file of HealthConfig keys to change")
    parser.add_argument(
        "--write",
        action="store_true",
        help="append the transitions and alerts to the store (never twice)",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    return parser


def main_health(argv: Sequence[str]) -> int:
    """``perfnb health --store DIR [--from T] [--to T] [--config FILE.json] [--write] [--json]``.

    Exit codes: 0 done, 1 ``--write`` refused (the range holds health records of
    another origin), 2 bad arguments, config file or store.
    """
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse has printed why; the CLI wants a code back
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = _config(args.config)
        start, end = _range(args.start, args.end)
        store = _store(args.store)
        records = replay_range(store, start=start, end=end, config=config)
    except PerfnbError as exc:
        print(f"perfnb health: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for record in records:
            print(json.dumps(record_to_json(record), sort_keys=True))
    elif records:
        print_table(records, sys.stdout)
    else:
        print("no health transitions or alerts: no requests, samples or vitals to judge")
    if args.write:
        try:
            result = write_replay(store, records, config=config, start=start)
        except ReplayConflict as exc:
            print(f"perfnb health: --write: {exc}", file=sys.stderr)
            return 1
        print(
            f"wrote {result.written} record(s) to {args.store} ({result.already} already "
            f"there from replay {result.fingerprint})",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main_health(sys.argv[1:]))
