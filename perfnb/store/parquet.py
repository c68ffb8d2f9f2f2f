"""Parquet files of the store: how they are named, written and cut into days.

Every file holds the full record schema in the on-disk form of
:mod:`perfnb.store.layout` (which also sets the encodings), with the schema version
in its metadata.

A write is atomic: the table goes to a hidden temporary name in the same
directory (readers only look at ``*.parquet``), is flushed to disk, then gets
its final name without ever replacing an existing file. In object storage, which
has no rename, the file is encoded in memory and uploaded under its final name in
one go (:mod:`perfnb.store.objects`): it appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from perfnb.errors import StoreError
from perfnb.store.layout import WRITE_OPTIONS, disk_schema, to_disk
from perfnb.store.objects import is_object_store, parquet_bytes, put_whole

__all__ = [
    "Names",
    "day_dir",
    "split_by_day",
    "write_atomic",
]

DAY_US: Final = 86_400_000_000
_EPOCH_DAY: Final = date(1970, 1, 1)


def day_dir(day: date) -> str:
    """The partition directory name of ``day`` (``date=YYYY-MM-DD``)."""
    return f"date={day.isoformat()}"


def split_by_day(table: pa.Table) -> list[tuple[date, pa.Table]]:
    """A time-sorted table cut at each UTC midnight it spans, in day order."""
    if table.num_rows == 0:
        return []
    micros = table.column("time").cast(pa.int64()).to_numpy()
    days = micros // DAY_US
    first, last = int(days[0]), int(days[-1])
    if first == last:
        return [(_EPOCH_DAY + timedelta(days=first), table)]
    out = []
    for number in range(first, last + 1):
        begin = int(np.searchsorted(days, number, side="left"))
        end = int(np.searchsorted(days, number, side="right"))
        if end > begin:
            out.append((_EPOCH_DAY + timedelta(days=number), table.slice(begin, end - begin)))
    return out


@dataclass
class Names:
    """Unique file names for one process: prefix, pid, random token and a counter.

    Two processes (or two stores in one process) never produce the same name, so
    concurrent appends to one day cannot collide.

    >>> Names().next("a").startswith("a-")
    True
    """

    def __post_init__(self) -> None:
        self._token = secrets.token_hex(4)
        self._counter = itertools.count()

    def next(self, prefix: str) -> str:
        return f"{prefix}-{os.getpid()}-{self._token}-{next(self._counter):06d}"


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    table: pa.Table,
    fs: pafs.FileSystem,
    directory: str,
    name: str,
    *,
    local: bool,
    metadata: dict[str, str] | None = None,
) -> str | None:
    """Write ``table`` (time-sorted, one day) as ``directory/name.parquet``.

    ``table`` is in the in-memory form (:func:`perfnb.store.layout.table_schema`).
    Returns the path, or ``None`` if that file already exists: never overwrites, as
    an existing file of that name means the rows are already stored (see the append
    log's replay), so nothing is written.
    """
    final = f"{directory}/{name}.parquet"
    temp = f"{directory}/.{name}.{secrets.token_hex(3)}.tmp"
    if fs.get_file_info(final).type != pafs.FileType.NotFound:
        return None
    schema = disk_schema()
    if metadata:
        schema = schema.with_metadata({**schema.metadata, **metadata})
    table = to_disk(table).replace_schema_metadata(schema.metadata)
    if is_object_store(fs):
        # No rename: the file is encoded whole, then uploaded under its final name.
        data = parquet_bytes(table, **WRITE_OPTIONS)
        try:
            put_whole(fs, final, data, fresh=True)
        except OSError as exc:
            raise StoreError(f"could not write {final!r}: {exc}") from exc
        return final
    fs.create_dir(directory, recursive=True)
    try:
        pq.write_table(table, temp, filesystem=fs, **WRITE_OPTIONS)
        if local:
            _fsync_file(temp)
            try:
                # link() fails if the target exists, where rename() would replace it.
                os.link(temp, final)
            except FileExistsError:
                return None
            except OSError:
                os.replace(temp, final)
        else:
            fs.move(temp, final)
    except OSError as exc:
        raise StoreError(f"could not write {final!r}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            fs.delete_file(temp)
    return final


def utc_day(value: datetime) -> date:
    """The UTC calendar day of an aware datetime."""
    return value.astimezone(UTC).date()
