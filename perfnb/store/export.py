"""Export stored records to CSV, JSON, JSON Lines or Parquet, and read exports back.

:func:`export_store` (also :meth:`Store.export <perfnb.store.Store.export>`) reads
the store one window at a time — a day, or a slice of a day when the day holds
more than ``window_rows`` stored rows — through :meth:`Store.read`, so a 30-day
export never holds more than one window in memory. Rows come out in time order
(the order of :meth:`Store.read`). The file is written under a temporary name in
the target folder, flushed, then renamed over ``path``: a failed or interrupted
export leaves any earlier file at ``path`` untouched.

The formats are described in :mod:`perfnb.store.exportformats`; in short,
CSV is safe to open in a spreadsheet (formula-like text is neutralised), JSON and
JSON Lines round-trip every column exactly (the wire form of
:func:`perfnb.schema.record_to_json`), Parquet keeps the store's schema.

>>> import tempfile, pathlib
>>> from datetime import datetime, timezone
>>> from perfnb.store import Store
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> store = Store(folder / "store")
>>> _ = store.append([{"time": datetime(2026, 1, 1, tzinfo=timezone.utc), "source": "server",
...                    "kind": "http", "route": "=HYPERLINK(1)", "duration_ms": -2.5}])
>>> result = export_store(store, folder / "out.csv", progress=False)
>>> result.rows, result.format
(1, 'csv')
>>> print((folder / "out.csv").read_text().splitlines()[1][:71])
"2026-01-01T00:00:00.000000Z","server","http",,"'=HYPERLINK(1)",,,-2.5,
>>> read_export(folder / "out.csv")["route"].tolist()
['=HYPERLINK(1)']
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from perfnb.errors import ConfigError, PerfnbError, StoreError
from perfnb.schema import COLUMN_NAMES, COLUMNS
from perfnb.store.exportformats import FORMATS, format_for, neutralise, read_export, writer
from perfnb.store.progress import Progress, progress_reporter
from perfnb.store.query import TimeLike, check_columns, to_utc

if TYPE_CHECKING:
    from perfnb.store.store import Store

__all__ = [
    "FORMATS",
    "ExportResult",
    "export_store",
    "main_export",
    "neutralise",
    "read_export",
]

_REQUIRED: Final = tuple(c.name for c in COLUMNS if c.required)

#: Stored rows read per window: a day holding more is read in equal slices of time.
WINDOW_ROWS: Final = 500_000
_DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What :func:`export_store` wrote: the file, its format, the records and its size.

    >>> ExportResult(Path("out.csv"), "csv", 10, 512).rows
    10
    """

    path: Path
    format: str
    rows: int
    bytes: int


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears at ``path`` only once the block has finished without error."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


# -- reading the store in windows ----------------------------------------------------------


def _windows(
    store: Store, first: datetime | None, last: datetime | None, *, window_rows: int
) -> list[tuple[datetime, datetime, int, int]]:
    """``(start, end, stored_rows, pieces)`` per day in range with files.

    ``stored_rows`` (from the Parquet footers, before any filter) measures the work
    of the day; a day holding more than ``window_rows`` is read in ``pieces`` slices.
    """
    out = []
    for day in store.days():
        begin = datetime.combine(day, datetime.min.time(), UTC)
        lo = begin if first is None else max(begin, first)
        hi = begin + _DAY if last is None else min(begin + _DAY, last)
        if lo >= hi:
            continue
        stored = 0
        for path in store.files(begin, begin + _DAY):
            try:
                stored += pq.read_metadata(path, filesystem=store.fs).num_rows
            except (OSError, pa.ArrowInvalid) as exc:
                raise StoreError(f"cannot read the footer of {path!r}: {exc}") from exc
        if stored:
            out.append((lo, hi, stored, max(1, math.ceil(stored / window_rows))))
    return out


def export_store(
    store: Store,
    path: str | os.PathLike[str],
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    routes: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    include_load: bool = False,
    columns: Sequence[str] | None = None,
    format: str | None = None,
    progress: Progress = None,
    batch_rows: int = 50_000,
    window_rows: int = WINDOW_ROWS,
) -> ExportResult:
    """Write the records :meth:`Store.read` would give for these arguments to ``path``.

    ``format`` is ``csv``, ``json``, ``jsonl`` or ``parquet``, by default inferred
    from the suffix (``.csv``, ``.json``, ``.jsonl``/``.ndjson``, ``.parquet``).
    See the module documentation for what each format holds.

    ``progress``: ``None`` shows progress where someone is watching (an ipywidgets
    bar in a notebook kernel, a bar on stderr when it is a terminal), ``True``
    always shows it (the widget in a kernel, else stderr), ``False`` never, and a
    callable is called as ``progress(done, total)`` with a non-decreasing ``done``
    that ends at ``total``. Both count stored rows scanned (known up front from
    the Parquet footers), so with filters the file holds fewer rows than ``total``.

    Raises :class:`~perfnb.errors.ConfigError` for an unknown format or option,
    :class:`~perfnb.errors.StoreError` for bad times, columns or a path that
    cannot be written.

    >>> import tempfile, pathlib
    >>> from perfnb.store import Store
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> export_store(Store(folder / "s"), folder / "none.jsonl", progress=False).rows
    0
    """
    target = Path(path)
    fmt = format_for(target, format)
    if batch_rows < 1 or window_rows < 1:
        msg = f"batch_rows/window_rows: got {batch_rows}/{window_rows}; expected integers ≥ 1"
        raise ConfigError(msg)
    if target.is_dir():
        raise StoreError(f"path: {str(target)!r} is a directory; expected a file name")
    if not target.parent.is_dir():
        raise StoreError(f"path: the folder {str(target.parent)!r} does not exist")
    first, last = to_utc(start, name="start"), to_utc(end, name="end")
    wanted = check_columns(columns)
    if fmt in ("json", "jsonl"):
        # Every JSON object must be a record on its own, whatever was asked.
        wanted = [c for c in COLUMN_NAMES if c in _REQUIRED or c in wanted]
    windows = _windows(store, first, last, window_rows=window_rows)
    total = sum(stored for _lo, _hi, stored, _pieces in windows)
    report = progress_reporter(progress, total=total, label=f"export {target.name}")
    rows = 0
    try:
        with _atomic(target) as out:
            sink = writer(fmt, out, wanted)
            base = 0
            for lo, hi, stored, pieces in windows:
                step = (hi - lo) / pieces
                for piece in range(pieces):
                    w_lo = lo + step * piece
                    w_hi = hi if piece == pieces - 1 else lo + step * (piece + 1)
                    frame = store.read(
                        w_lo,
                        w_hi,
                        routes=routes,
                        sources=sources,
                        kinds=kinds,
                        services=services,
                        run_ids=run_ids,
                        include_load=include_load,
                        columns=wanted,
                    )
                    count = len(frame)
                    for offset in range(0, count, batch_rows):
                        sink.write(frame.iloc[offset : offset + batch_rows])
                        done = min(offset + batch_rows, count) / count
                        report(min(total, base + int(stored * (piece + done) / pieces)))
                    rows += count
                    report(min(total, base + stored * (piece + 1) // pieces))
                base += stored
            sink.close()
    except OSError as exc:
        raise StoreError(f"path: cannot write {str(target)!r}: {exc}") from exc
    finally:
        report.close()
    return ExportResult(target, fmt, rows, target.stat().st_size)


# -- the command ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnb export",
        description="Export records from a store to CSV (safe for spreadsheets), JSON, "
        "JSON Lines or Parquet. Times are ISO 8601 (a bare date is its midnight UTC).",
    )
    parser.add_argument(
        "--store", required=True, help="the store's folder, or a URI such as s3://bucket/prefix"
    )
    parser.add_argument("--out", required=True, help="the file to write (replaced atomically)")
    parser.add_argument("--from", dest="start", metavar="T", help="first time (inclusive)")
    parser.add_argument("--to", dest="end", metavar="T", help="end time (exclusive)")
    many: dict[str, Any] = {"action": "extend", "nargs": "+", "default": None}
    parser.add_argument("--route", dest="routes", metavar="R", help="route template(s)", **many)
    parser.add_argument("--source", dest="sources", metavar="S", help="source(s)", **many)
    parser.add_argument("--kind", dest="kinds", metavar="K", help="kind(s)", **many)
    parser.add_argument("--service", dest="services", metavar="S", help="service(s)", **many)
    parser.add_argument("--run-id", dest="run_ids", metavar="R", help="load run id(s)", **many)
    parser.add_argument("--column", dest="columns", metavar="C", help="column(s)", **many)
    parser.add_argument(
        "--include-load", action="store_true", help="include load-test records (run_id set)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from the suffix of --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return parser


def _error(text: str) -> int:
    print(f"perfnb export: error: {text}", file=sys.stderr)
    return 2


def main_export(argv: Sequence[str]) -> int:
    """``perfnb export --store DIR --out FILE [filters]``: write records to a file.

    Exits 0 after printing what was written, 2 on bad arguments (the message
    names the argument), 1 when the export fails on the way.

    >>> main_export(["--help"])  # doctest: +ELLIPSIS
    usage: perfnb export ...
    0
    """
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    root = args.store
    if "://" not in root and not (Path(root) / "events").is_dir():
        return _error(f"--store: no perfnb store at {root!r} (no events/ folder in it)")
    out = Path(args.out)
    checks: list[tuple[str, Callable[[], object]]] = [
        ("--from", lambda: to_utc(args.start, name="start")),
        ("--to", lambda: to_utc(args.end, name="end")),
        ("--format", lambda: format_for(out, args.format)),
        ("--column", lambda: check_columns(args.columns)),
    ]
    for option, check in checks:
        try:
            check()
        except PerfnbError as exc:
            return _error(f"{option}: {_detail(exc)}")
    if out.is_dir() or not out.parent.is_dir():
        what = "is a directory" if out.is_dir() else "is in a folder that does not exist"
        return _error(f"--out: {str(out)!r} {what}")
    from perfnb.store.store import Store  # store.py imports this module: import late

    try:
        result = export_store(
            Store(root),
            out,
            start=args.start,
            end=args.end,
            routes=args.routes,
            sources=args.sources,
            kinds=args.kinds,
            services=args.services,
            run_ids=args.run_ids,
            include_load=args.include_load,
            columns=args.columns,
            format=args.format,
            progress=False if args.no_progress else None,
        )
    except PerfnbError as exc:
        print(f"perfnb export: failed: {exc}", file=sys.stderr)
        return 1
    size = f"{result.format}, {result.bytes:,} bytes"
    print(f"exported {result.rows:,} records to {result.path} ({size})")
    return 0


def _detail(exc: PerfnbError) -> str:
    # Errors name the Python argument ("start: ..."); the command names its option.
    text = str(exc)
    head, sep, rest = text.partition(": ")
    return rest if sep and head in ("start", "end", "format", "columns") else text
