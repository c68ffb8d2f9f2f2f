"""A derived index of the daily summaries: one file per month, so a cold read opens one file.

The daily summary files (:mod:`perfnb.store.summaries`) stay the source of truth.
Reading thirty of them costs a fixed ~2 ms each (open, footer, decoding small list
columns), so a month's summaries are also kept together in
``<root>/daily/_index/YYYY-MM.arrow``: an Arrow IPC file (read without decoding)
with one record batch per day and, in its schema metadata, the *stamp* of the
summary file each batch was copied from — its modification time (ns) and size —
and the source files that summary names.

The index is a cache. A reader stats the summary files it needs and uses a batch
only while its stamp matches the file on disk; anything else (no index, a corrupt
or foreign one, a day rewritten since) falls back to the day's summary file, and the
index is rewritten. Rewrites are atomic (temporary file, then rename), so a reader
sees a whole old index or a whole new one; with several writers the last rename wins
and every batch in it still carries the stamp of the file it was copied from, so a
read is never wrong, at worst slower.

A stamp is (mtime, size), as the in-memory cache of :class:`~perfnb.store.history.Days`
uses: a summary rewritten within the file system's clock tick to exactly the same
size would not be told apart. Both are then summaries of the same day built a few
milliseconds apart.

>>> from datetime import date
>>> index_path("/data", date(2026, 4, 30))
'/data/daily/_index/2026-04.arrow'
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from perfnb.store.objects import is_object_store, put_whole
from perfnb.store.summaries import SourceFile, summary_schema

__all__ = [
    "INDEX_DIR",
    "INDEX_VERSION",
    "Entry",
    "Stamp",
    "index_path",
    "read_index",
    "write_index",
]

logger = logging.getLogger("perfnb.store")

INDEX_VERSION: Final = 1
#: Where the index files live, under ``<root>/daily``: not a ``date=`` partition,
#: and its leading underscore makes dataset readers skip it.
INDEX_DIR: Final = "_index"
_KEY: Final = b"perfnb.summary_index"

#: A summary file's modification time (ns) and size: a rewrite changes them.
Stamp = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Entry:
    """One day's summary as the index holds it: rows, the stamp they match, sources."""

    stamp: Stamp
    sources: tuple[SourceFile, ...]
    table: pa.Table


def index_path(root: str, day: date) -> str:
    """The index file holding ``day``'s month."""
    return f"{root}/daily/{INDEX_DIR}/{day:%Y-%m}.arrow"


def read_index(
    fs: pafs.FileSystem, root: str, month: date, wanted: Mapping[date, Stamp]
) -> dict[date, Entry]:
    """The entries of the ``wanted`` days (of ``month``) whose stamps match; others left out.

    A missing, corrupt or foreign index answers ``{}``: the caller reads the days'
    summary files instead.
    """
    if not wanted:
        return {}
    path = index_path(root, month)
    schema = summary_schema()
    try:
        # Read, not mapped: rows kept from a map would crash the process (SIGBUS)
        # if anything truncated the file in place, and copying costs ~2 ms a month.
        with fs.open_input_file(path) as stream:
            reader = ipc.open_file(stream)
            listed = _entries(reader.schema.metadata, reader.num_record_batches)
            if not reader.schema.remove_metadata().equals(schema):
                return {}  # another version's columns: rebuilt from the day files
            out = {}
            for position, (day, stamp, sources) in enumerate(listed):
                if wanted.get(day) == stamp:
                    table = pa.Table.from_batches([reader.get_batch(position)], schema=schema)
                    out[day] = Entry(stamp, sources, table)
            return out
    except FileNotFoundError:
        return {}
    except (OSError, pa.ArrowException, ValueError, TypeError, KeyError) as exc:
        logger.info("ignoring the summary index %r: %s", path, exc)
        return {}


def _entries(
    metadata: Mapping[bytes, bytes] | None, batches: int
) -> list[tuple[date, Stamp, tuple[SourceFile, ...]]]:
    document = json.loads((metadata or {})[_KEY])
    if document.get("version") != INDEX_VERSION:
        raise ValueError(f"version {document.get('version')!r}, expected {INDEX_VERSION}")
    out = []
    for item in document["days"]:
        sources = tuple(SourceFile(str(n), int(s), int(r)) for n, s, r in item["sources"])
        stamp = (int(item["mtime_ns"]), int(item["size"]))
        out.append((date.fromisoformat(item["day"]), stamp, sources))
    if len(out) != batches:
        raise ValueError(f"{len(out)} days listed but {batches} batches stored")
    return out


def write_index(
    fs: pafs.FileSystem, root: str, month: date, entries: Mapping[date, Entry], *, local: bool
) -> bool:
    """Replace ``month``'s index with ``entries`` (deleting it when there are none).

    Never raises: the index is a cache, and failing to write it costs speed only.
    Returns whether the index now holds ``entries``.
    """
    path = index_path(root, month)
    directory = path.rsplit("/", 1)[0]
    if not entries:
        with contextlib.suppress(OSError):
            fs.delete_file(path)
        return True
    days = sorted(entries)
    document = {
        "version": INDEX_VERSION,
        "days": [
            {
                "day": day.isoformat(),
                "mtime_ns": entries[day].stamp[0],
                "size": entries[day].stamp[1],
                "sources": [[s.name, s.size, s.rows] for s in entries[day].sources],
            }
            for day in days
        ],
    }
    schema = summary_schema().with_metadata({_KEY: json.dumps(document).encode()})
    temp = f"{directory}/.index.{secrets.token_hex(4)}.tmp"
    if is_object_store(fs):
        sink = pa.BufferOutputStream()
        try:
            with ipc.new_file(sink, schema) as writer:
                for day in days:
                    writer.write_batch(_one_batch(entries[day].table))
            put_whole(fs, path, sink.getvalue(), fresh=False)  # replaces the old one whole
        except (OSError, pa.ArrowException) as exc:
            logger.warning("could not write the summary index %r: %s", path, exc)
            return False
        return True
    try:
        fs.create_dir(directory, recursive=True)
        with fs.open_output_stream(temp) as sink, ipc.new_file(sink, schema) as writer:
            for day in days:
                writer.write_batch(_one_batch(entries[day].table))
        if local:
            os.replace(temp, path)  # readers see the old index or the new one
        else:
            fs.move(temp, path)
    except (OSError, pa.ArrowException) as exc:
        logger.warning("could not write the summary index %r: %s", path, exc)
        return False
    finally:
        with contextlib.suppress(OSError):
            fs.delete_file(temp)
    return True


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """``table`` as exactly one record batch (batch ``i`` is the ``i``-th day listed)."""
    table = table.replace_schema_metadata(None).combine_chunks()
    batches = table.to_batches()
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=summary_schema())
    return pa.RecordBatch.from_struct_array(table.to_struct_array().combine_chunks())
