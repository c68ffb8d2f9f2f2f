from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfnb
import perfnb._closing
import perfnb.cli
import perfnb.schema
from perfnb.errors import PerfnbError, RecordError
from perfnb.schema import (
    COLUMN_NAMES,
    COLUMNS,
    SCHEMA_VERSION,
    arrow_schema,
    epoch_us,
    record_from_json,
    record_to_json,
    validate_record,
    validate_records,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def full_record() -> dict[str, object]:
    return {
        "time": T0,
        "source": "server",
        "kind": "http",
        "service": "demo",
        "route": "/api/cards/{card_id}",
        "method": "GET",
        "status": 200,
        "duration_ms": 12.5,
        "ttfb_ms": 3.25,
        "request_bytes": 0,
        "response_bytes": 2048,
        "server_ms": 11.0,
        "app_ms": 9.5,
        "db_ms": 4.0,
        "messages_in": 1,
        "messages_out": 2,
        "error_type": "ValueError",
        "error_message": "bad card",
        "run_id": "run-1",
        "client": "c0ffee",
        "name": "rss_bytes",
        "value": 1.5e9,
        "unit": "bytes",
        "tags": {"region": "local"},
    }


def test_every_column_is_documented_with_a_unit_or_a_reason() -> None:
    assert len(set(COLUMN_NAMES)) == len(COLUMNS)
    for column in COLUMNS:
        assert column.doc.strip(), column.name
        if column.name.endswith("_ms"):
            assert column.unit == "ms"
            assert "exact to the µs" in column.doc  # how the store keeps it
        if column.name.endswith("_bytes"):
            assert column.unit == "bytes"


def test_arrow_schema_carries_version_units_and_types() -> None:
    schema = arrow_schema()
    assert schema.names == list(COLUMN_NAMES)
    assert schema.metadata[b"perfnb.schema_version"] == str(SCHEMA_VERSION).encode()
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("duration_ms").metadata[b"unit"] == b"ms"
    assert pa.types.is_dictionary(schema.field("route").type)
    assert not schema.field("time").nullable


def test_a_full_record_validates_and_builds_an_arrow_table() -> None:
    record = validate_record(full_record())
    table = pa.Table.from_pylist([record], schema=arrow_schema())
    row = table.to_pylist()[0]
    assert row["time"] == T0
    assert row["route"] == "/api/cards/{card_id}"
    assert row["tags"] == [("region", "local")]


def test_nulls_are_dropped_and_required_columns_enforced() -> None:
    record = validate_record({"time": T0, "source": "client", "kind": "http", "status": None})
    assert "status" not in record
    with pytest.raises(RecordError, match="'kind' is required"):
        validate_record({"time": T0, "source": "client"})


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("time", datetime(2026, 1, 1), "naive"),
        ("time", "2026-01-01", "timezone-aware datetime"),
        ("status", "200", "expected an integer"),
        ("status", True, "expected an integer"),
        ("status", 70000, "int16"),
        ("duration_ms", "fast", "expected a number"),
        ("duration_ms", float("nan"), "NaN"),
        ("duration_ms", float("inf"), "finite milliseconds"),
        ("server_ms", -1e15, "finite milliseconds"),
        ("route", 12, "expected a string"),
        ("tags", {"a": 1}, "str values"),
        ("tags", {str(i): "x" for i in range(17)}, "at most 16"),
        ("source", "martian", "expected one of"),
        ("kind", "htpp", "expected one of"),
    ],
)
def test_bad_values_name_the_column_and_the_value(column: str, value: object, message: str) -> None:
    record = {"time": T0, "source": "server", "kind": "http", column: value}
    with pytest.raises(RecordError, match=message) as info:
        validate_record(record)
    assert f"'{column}'" in str(info.value)
    assert isinstance(info.value, PerfnbError)


def test_unknown_column_is_refused_by_name() -> None:
    with pytest.raises(RecordError, match="unknown column 'latency'"):
        validate_record({"time": T0, "source": "server", "kind": "http", "latency": 3})


def test_validate_records_names_the_index() -> None:
    good = {"time": T0, "source": "server", "kind": "http"}
    with pytest.raises(RecordError, match="record 1:"):
        validate_records([good, {**good, "status": "x"}])


def test_non_utc_offsets_are_kept_as_the_same_instant() -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    record = validate_record({"time": plus_two, "source": "server", "kind": "http"})
    assert epoch_us(record["time"]) == epoch_us(T0)
    assert record_to_json(record)["time"] == "2026-03-01T12:00:00.123456Z"


def test_wire_form_round_trips_every_column() -> None:
    record = validate_record(full_record())
    assert record_from_json(record_to_json(record)) == record


def test_wire_form_rejects_bad_time() -> None:
    with pytest.raises(RecordError, match="'time'"):
        record_from_json({"time": "yesterday", "source": "server", "kind": "http"})


@pytest.mark.parametrize("module", [perfnb, perfnb._closing, perfnb.schema, perfnb.cli])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


# Values of every kind the schema meets, plain and not: the generated per-shape
# checkers must accept, refuse and copy exactly as the generic path does.
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["server", "client", "http", "db", "nope", "x" * 5000, ""]),
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3),
    st.just({"k": 1}),
    st.just(T0),
    st.just(datetime(2026, 1, 1)),
    st.just(T0.astimezone(timezone(timedelta(hours=-3)))),
)


def _outcome(check: object, record: dict[str, object]) -> object:
    try:
        return ("ok", check(record))  # type: ignore[operator]
    except RecordError as exc:
        return ("error", str(exc))


@given(
    st.lists(st.sampled_from(COLUMN_NAMES), unique=True, max_size=10),
    st.data(),
)
@settings(max_examples=400)
def test_fast_path_agrees_with_the_generic_path(columns: list[str], data: st.DataObject) -> None:
    record: dict[str, object] = {"time": T0, "source": "client", "kind": "http"}
    for column in columns:
        record[column] = data.draw(_VALUES, label=column)
    assert _outcome(validate_record, record) == _outcome(perfnb.schema._validate_generic, record)


def test_fast_path_returns_a_copy_with_its_own_tags() -> None:
    record = full_record()
    for _ in range(2):  # the second call takes the generated checker
        checked = validate_record(record)
        assert checked == record
        assert checked is not record
        assert checked["tags"] is not record["tags"]
