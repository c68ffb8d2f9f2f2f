from __future__ import annotations

import doctest

import pyarrow as pa

import perfnb.frames
from perfnb.frames import frame_from_arrow
from perfnb.schema import arrow_schema


def test_chunks_with_different_dictionaries_become_one_categorical() -> None:
    kind = pa.dictionary(pa.int32(), pa.string())
    table = pa.Table.from_batches(
        [
            pa.record_batch([pa.array(["a", "b"]).dictionary_encode()], names=["route"]),
            pa.record_batch([pa.array(["c"]).dictionary_encode()], names=["route"]),
        ]
    )
    assert table.schema.field("route").type == kind
    frame = frame_from_arrow(table)
    assert frame["route"].tolist() == ["a", "b", "c"]
    assert str(frame["route"].dtype) == "category"


def test_empty_table_of_the_schema_has_every_column() -> None:
    frame = frame_from_arrow(arrow_schema().empty_table())
    assert list(frame.columns) == arrow_schema().names


def test_doctests() -> None:
    result = doctest.testmod(perfnb.frames)
    assert result.attempted > 0
    assert result.failed == 0
