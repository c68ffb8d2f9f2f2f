"""Compaction: a closed day's files merged into one, without ever losing or doubling a row.

The steps, each safe to be interrupted:

1. the merged table (sorted by time, then laid out as :mod:`perfnb.store.layout`
   says) is written under a hidden temporary name;
2. an *intent* ``_compact.json`` in the day's directory names the merged file and
   the files it replaces;
3. the merged file gets its final name (``c-….parquet``);
4. the replaced files are deleted, then the intent.

Readers list a day through :func:`day_files`: when the intent's merged file
exists they skip the files it replaces, so between steps 3 and 4 every row is
read exactly once. :func:`finish_interrupted` (run when a store opens) completes
step 4 for a merged file that exists and drops an intent whose merged file never
appeared — the old files are then still the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from perfnb.errors import StoreError
from perfnb.store.layout import from_disk, sort_by_time, table_schema
from perfnb.store.parquet import write_atomic

__all__ = [
    "INTENT",
    "CompactResult",
    "compact_day",
    "day_files",
    "finish_interrupted",
    "vanished",
]

INTENT = "_compact.json"


@dataclass(frozen=True, slots=True)
class CompactResult:
    """What :meth:`Store.compact` did to one day."""

    day: date
    files_before: int
    files_after: int
    rows: int
    bytes_before: int
    bytes_after: int


def _read_intent(fs: pafs.FileSystem, path: str) -> dict[str, object] | None:
    try:
        with fs.open_input_stream(path) as stream:
            found = json.loads(stream.read().decode())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def day_files(
    fs: pafs.FileSystem, directory: str, listed: Sequence[pafs.FileInfo] | None = None
) -> list[pafs.FileInfo]:
    """The data files of one day directory, leaving out files a compaction replaced.

    ``listed`` is the directory's listing when the caller has it already.
    """
    for attempt in range(2):
        if listed is not None and not attempt:
            infos = list(listed)
        else:
            try:
                infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
            except OSError:
                return []
        files = [
            i for i in infos if i.base_name.endswith(".parquet") and i.base_name[0] not in "._"
        ]
        if any(i.base_name == INTENT for i in infos):
            path = f"{directory}/{INTENT}"
            intent = _read_intent(fs, path)
            gone = intent is None and fs.get_file_info(path).type == pafs.FileType.NotFound
            if gone and not attempt:
                continue  # the compaction finished since the listing: list again
            names = {i.base_name for i in files}
            if intent and intent.get("target") in names:
                sources = intent.get("sources")
                replaced = set(sources) if isinstance(sources, list) else set()
                files = [i for i in files if i.base_name not in replaced]
        break
    return sorted(files, key=lambda i: i.base_name)


def vanished(fs: pafs.FileSystem, paths: Sequence[str]) -> bool:
    """Whether any of ``paths`` (listed a moment ago) is gone: a compaction or retention ran."""
    try:
        return any(i.type == pafs.FileType.NotFound for i in fs.get_file_info(list(paths)))
    except OSError:
        return False


def writer_alive(intent: Mapping[str, object]) -> bool:
    """Whether the process that wrote ``intent`` (its ``host`` and ``pid``) still runs.

    Another host's process, or this very process, counts as gone: the intent is
    then finished by whoever finds it.
    """
    if intent.get("host") != socket.gethostname():
        return False
    pid = intent.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish_interrupted(fs: pafs.FileSystem, directory: str) -> None:
    """Complete or undo a compaction of ``directory`` that a crash interrupted."""
    path = f"{directory}/{INTENT}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return
    intent = _read_intent(fs, path)
    if intent is not None and writer_alive(intent):
        return
    if intent is None:  # torn while being written: its merged file was never named
        with contextlib.suppress(OSError):
            fs.delete_file(path)
        return
    target = f"{directory}/{intent.get('target')}"
    if fs.get_file_info(target).type == pafs.FileType.File:
        sources = intent.get("sources")
        for name in sources if isinstance(sources, list) else []:
            with contextlib.suppress(OSError):
                fs.delete_file(f"{directory}/{name}")
    with contextlib.suppress(OSError):
        fs.delete_file(path)


def compact_day(
    fs: pafs.FileSystem, directory: str, day: date, name: str, *, local: bool
) -> CompactResult:
    """Merge the files of one day directory into ``name``.parquet (see the module doc)."""
    sources = day_files(fs, directory)
    before = sum(i.size or 0 for i in sources)
    if len(sources) <= 1:
        rows = pq.ParquetFile(sources[0].path, filesystem=fs).metadata.num_rows if sources else 0
        return CompactResult(day, len(sources), len(sources), rows, before, before)
    intent_path = f"{directory}/{INTENT}"
    if fs.get_file_info(intent_path).type != pafs.FileType.NotFound:
        finish_interrupted(fs, directory)
        if fs.get_file_info(intent_path).type != pafs.FileType.NotFound:
            raise StoreError(f"day {day}: another process is compacting it ({intent_path})")
    expected = 0
    parts = []
    for info in sources:
        # Either layout (the first one's float32 milliseconds too) becomes the current one.
        part = from_disk(pq.read_table(info.path, filesystem=fs)).cast(table_schema())
        expected += part.num_rows
        parts.append(part)
    table = sort_by_time(pa.concat_tables(parts)).unify_dictionaries().combine_chunks()
    names = [i.base_name for i in sources]
    intent = {"target": f"{name}.parquet", "sources": names, "pid": os.getpid()}
    intent["host"] = socket.gethostname()
    with fs.open_output_stream(intent_path) as stream:
        stream.write(json.dumps(intent).encode())
    replaces = {"perfnb.replaces": json.dumps(names)}
    try:
        written = write_atomic(table, fs, directory, name, local=local, metadata=replaces)
        if written is None:
            raise StoreError(f"day {day}: the merged file {name}.parquet already exists")
        merged = pq.ParquetFile(written, filesystem=fs).metadata.num_rows
        if merged != expected:
            fs.delete_file(written)
            raise StoreError(f"day {day}: merged {merged} rows, expected {expected}; kept sources")
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(intent_path)
        raise
    for info in sources:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(info.path)
    fs.delete_file(intent_path)
    after = fs.get_file_info(written).size or 0
    return CompactResult(day, len(sources), 1, expected, before, after)
