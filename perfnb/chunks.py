"""Records turned into Arrow chunks for the live stream's frames.

A :class:`~perfnb.stream.Stream` converts what arrived since its last frame into one
:class:`Chunk` and keeps merged chunks, so a frame over many records costs one
conversion per record, not one per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from perfnb.schema import Record

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Chunk", "merge", "to_table"]


@dataclass(slots=True)
class Chunk:
    """Records already converted to Arrow: seq numbers ``first .. first + len - 1``."""

    first: int
    table: pa.Table
    times: npt.NDArray[np.int64]

    @property
    def end(self) -> int:
        return self.first + len(self.times)

    def drop_before(self, seq: int) -> Chunk:
        skip = seq - self.first
        if skip <= 0:
            return self
        return Chunk(seq, self.table.slice(skip), self.times[skip:])


def to_table(records: list[Record], times: list[int], schema: pa.Schema) -> pa.Table:
    """Records as a table of ``schema``; ``times`` are their ``time`` in epoch µs."""
    stamps = pa.array(np.asarray(times, dtype=np.int64)).cast(schema.field("time").type)
    # Columns no record has are all null: one C pass over the keys finds them, and
    # each absent column then costs nothing per record.
    present = set().union(*records)
    names = [f.name for f in schema if f.name in present and f.name not in ("time", "tags")]
    columns: dict[str, pa.Array] = {}
    if names and set(map(type, records)) == {dict}:
        # One pass in C over the dicts for every present column at once, plain
        # strings first; they are dictionary-encoded as whole columns below.
        struct = pa.struct([pa.field(n, _plain(schema.field(n).type)) for n in names])
        whole = pa.array(records, type=struct)
        columns = dict(zip(names, whole.flatten(), strict=True))
    else:
        # Other mappings (producers with validate=False): one pass per column.
        for name in names:
            columns[name] = pa.array(
                [r.get(name) for r in records], type=_plain(schema.field(name).type)
            )
    if "tags" in present:
        field = schema.field("tags")
        columns["tags"] = pa.array([r.get("tags") for r in records], type=field.type)
    arrays = []
    for field in schema:
        name = field.name
        if name == "time":
            arrays.append(stamps)
            continue
        array = columns.get(name)
        if array is None:
            arrays.append(pa.nulls(len(records), field.type))
        elif pa.types.is_dictionary(field.type):
            arrays.append(array.dictionary_encode())
        else:
            arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


def _plain(kind: pa.DataType) -> pa.DataType:
    return pa.string() if pa.types.is_dictionary(kind) else kind


def merge(older: Chunk, newer: Chunk) -> Chunk:
    table = pa.concat_tables([older.table, newer.table]).unify_dictionaries().combine_chunks()
    return Chunk(older.first, table, np.concatenate([older.times, newer.times]))
