"""The export formats: cells, writers and readers of CSV, JSON, JSON Lines and Parquet.

:func:`perfnb.store.export.export_store` writes records with a :func:`writer` per
format; :func:`read_export` reads any of them back with the dtypes of
:meth:`Store.read <perfnb.store.Store.read>`.

``csv``
    A header of column names, then one row per record. Safe to open in a
    spreadsheet: a text cell (category, string or tags column) that begins with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or their full-width
    forms) gets a single quote in front (OWASP's rule for CSV injection), so it
    shows as text instead of running as a formula. Text that already begins with
    quotes before such a character gets one more quote, so
    :func:`read_export` can strip exactly one and give the value back. Numbers are
    never touched: a negative duration stays a number, written bare. Floats are
    written as the shortest text that reads back as the same float. ``time`` is
    written as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, tags as JSON text; text cells are
    always quoted, so an empty string (``""``) differs from null (an empty cell).
``json`` / ``jsonl``
    Records in the wire form of :func:`perfnb.schema.record_to_json`: one JSON
    object per record, nulls left out, ``time`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
    ``json`` is one array, ``jsonl`` one object per line. Every value is exact:
    the ``*_ms`` columns (µs-exact float64) and ``value`` are written as the
    shortest decimal that reads back as the same float (an infinite ``value``
    as ``Infinity``, which Python's ``json`` reads but strict JSON parsers such as
    JavaScript's ``JSON.parse`` refuse), integers as integers, tags as objects.
    Each object is a valid record, so an export with ``columns=`` still carries
    ``time``, ``source`` and ``kind``. :func:`read_export` reads it back
    with :func:`perfnb.schema.record_from_json`.
``parquet``
    The store's in-memory form (:func:`perfnb.store.layout.table_schema`: the
    record schema with ``*_ms`` as float64 milliseconds), in time order, with the
    schema version in the metadata; readable by pandas, DuckDB and Spark as is.

>>> neutralise("=SUM(A1)")
"'=SUM(A1)"
"""

from __future__ import annotations

import abc
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from perfnb.errors import ConfigError, RecordError, StoreError
from perfnb.frames import frame_from_arrow
from perfnb.schema import COLUMN_NAMES, COLUMNS, SCHEMA_VERSION, record_from_json
from perfnb.store.layout import table_schema
from perfnb.store.query import check_columns

__all__ = ["FORMATS", "Writer", "format_for", "neutralise", "read_export", "writer"]

#: The export formats, and the file suffixes they are inferred from.
FORMATS: Final = ("csv", "json", "jsonl", "parquet")
_SUFFIXES: Final = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_TYPES: Final = {c.name: c.type for c in COLUMNS}

# Characters that make a spreadsheet read a cell as a formula (OWASP), with the
# full-width forms some spreadsheets normalise to them.
_FORMULA_START: Final = "=+-@\t\r\uff1d\uff0b\uff0d\uff20"
_NEEDS_QUOTE: Final = re.compile(f"'*[{re.escape(_FORMULA_START)}]")
# The same rules for Arrow's RE2 (escapes that both engines read alike).
_CLASS: Final = "=+\\-@\\t\\r\uff1d\uff0b\uff0d\uff20"
_NEEDS_QUOTE_RE2: Final = f"^'*[{_CLASS}]"
_QUOTED_RE2: Final = f"^'+[{_CLASS}]"


def format_for(path: Path, format: str | None) -> str:
    """``format`` checked, or the format the suffix of ``path`` names."""
    if format is not None:
        if format not in FORMATS:
            msg = f"format: got {format!r}; expected one of {', '.join(FORMATS)}"
            raise ConfigError(msg)
        return format
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        msg = (
            f"format: cannot infer it from the suffix of {str(path)!r}; use a suffix among "
            f"{', '.join(_SUFFIXES)} or give format= one of {', '.join(FORMATS)}"
        )
        raise ConfigError(msg)
    return found


# -- cells ------------------------------------------------------------------------------


def neutralise(text: str) -> str:
    """``text`` made safe for a spreadsheet cell: a quote in front of formula-like text.

    >>> neutralise("=SUM(A1)"), neutralise("'=1"), neutralise("fine")
    ("'=SUM(A1)", "''=1", 'fine')
    """
    return "'" + text if _NEEDS_QUOTE.match(text) else text


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _map_dictionary(array: pa.Array, func: Any) -> pa.Array:
    """A dictionary array with ``func`` applied to each distinct value (not each cell)."""
    values = [func(v) for v in array.dictionary.to_pylist()]
    return pa.DictionaryArray.from_arrays(array.indices, pa.array(values, pa.string()))


def _time_text(array: pa.Array) -> pa.Array:
    """UTC times in the wire form, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    # Arrow prints a naive µs timestamp as "YYYY-MM-DD HH:MM:SS.ffffff"; this is
    # ~10x quicker than strftime, which looks the time zone up for every value.
    text = array.cast(pa.timestamp("us")).cast(pa.string())
    return pc.binary_join_element_wise(
        pc.replace_substring(text, " ", "T", max_replacements=1), "Z", ""
    )


def _tags_text(array: pa.Array) -> list[str | None]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return [None if v is None else dumps(dict(v)) for v in array.to_pylist()]


def _csv_cells(table: pa.Table) -> pa.Table:
    """``table`` with every column as the CSV writer should print it."""
    arrays = []
    for name in table.column_names:
        array, kind = _column(table, name), _TYPES[name]
        if kind == "timestamp":
            array = _time_text(array)
        elif kind == "category":
            # Neutralising is one-to-one, so no two categories can merge.
            array = _map_dictionary(array, lambda v: v if v is None else neutralise(v))
        elif kind == "string":
            risky = pc.match_substring_regex(array, _NEEDS_QUOTE_RE2)
            array = pc.if_else(risky, pc.binary_join_element_wise("'", array, ""), array)
        elif kind == "tags":
            array = pa.array(_tags_text(array), pa.string())  # JSON text starts with "{"
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=table.column_names)


def _json_cells(table: pa.Table) -> tuple[list[list[str | None]], bool]:
    """Per column with values, each row's ``"name":value`` JSON member (``None`` for null).

    Columns null throughout the batch (most, for any one kind) are left out; the
    flag says whether any column left holds a null.
    """
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    out = []
    nulls = False
    for name in table.column_names:
        array, kind = _column(table, name), _TYPES[name]
        if array.null_count == len(array):
            continue
        nulls = nulls or array.null_count > 0
        key = dumps(name) + ":"
        if kind == "timestamp":
            texts = pc.binary_join_element_wise(key + '"', _time_text(array), '"', "")
        elif kind == "category":
            members = {v: key + dumps(v) for v in array.dictionary.to_pylist()}
            texts = _map_dictionary(array, members.get)
            texts = texts.cast(pa.string())
        elif kind == "string":
            out.append([None if v is None else key + dumps(v) for v in array.to_pylist()])
            continue
        elif kind == "tags":
            out.append([None if v is None else key + v for v in _tags_text(array)])
            continue
        else:
            # Arrow prints floats as the shortest text that reads back as the same float.
            texts = array.cast(pa.string())
            if pa.types.is_floating(array.type):
                infinite = pc.fill_null(pc.is_inf(array), False)
                if infinite.true_count:  # as Python's json writes them
                    signed = pc.if_else(pc.greater(array, 0), "Infinity", "-Infinity")
                    texts = pc.if_else(infinite, signed, texts)
            texts = pc.binary_join_element_wise(key, texts, "")
        out.append(texts.to_pylist())
    return out, nulls


# -- writers ------------------------------------------------------------------------------


class Writer(abc.ABC):
    """Writes batches (frames of the exported columns) to one open binary file."""

    def __init__(self, out: IO[bytes], columns: list[str]) -> None:
        self.out = out
        self.columns = columns
        full = table_schema()
        self.schema = pa.schema([full.field(name) for name in columns]).with_metadata(
            {"perfnb.schema_version": str(SCHEMA_VERSION), "perfnb.export": "1"}
        )

    def table(self, batch: pd.DataFrame) -> pa.Table:
        table = pa.Table.from_pandas(batch, schema=self.schema, preserve_index=False)
        return table.replace_schema_metadata(self.schema.metadata)

    @abc.abstractmethod
    def write(self, batch: pd.DataFrame) -> None:
        """Add one batch to the file."""

    def close(self) -> None:  # noqa: B027 - a format with no footer has nothing to finish
        """Finish the file (footers, closing brackets)."""


class _CsvWriter(Writer):
    def __init__(self, out: IO[bytes], columns: list[str]) -> None:
        super().__init__(out, columns)
        # Column names are plain identifiers: a bare header reads best.
        out.write((",".join(columns) + "\n").encode())
        self.csv: pacsv.CSVWriter | None = None

    def write(self, batch: pd.DataFrame) -> None:
        cells = _csv_cells(self.table(batch))
        if self.csv is None:
            # Text is always quoted, so an empty string ("") differs from null ().
            options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
            self.csv = pacsv.CSVWriter(self.out, cells.schema, write_options=options)
        self.csv.write_table(cells)

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()


class _JsonWriter(Writer):
    def __init__(self, out: IO[bytes], columns: list[str], *, lines: bool) -> None:
        super().__init__(out, columns)
        self.lines = lines
        self.first = True
        if not lines:
            out.write(b"[")

    def write(self, batch: pd.DataFrame) -> None:
        cells, nulls = _json_cells(self.table(batch))
        rows = zip(*cells, strict=True)
        if nulls:
            texts = ["{" + ",".join(filter(None, row)) + "}" for row in rows]
        else:
            texts = ["{" + ",".join(row) + "}" for row in rows]
        if not texts:
            return
        if self.lines:
            self.out.write(("\n".join(texts) + "\n").encode())
            return
        lead = "\n" if self.first else ",\n"
        self.first = False
        self.out.write((lead + ",\n".join(texts)).encode())

    def close(self) -> None:
        if not self.lines:
            self.out.write(b"\n]\n")


class _ParquetWriter(Writer):
    def __init__(self, out: IO[bytes], columns: list[str]) -> None:
        super().__init__(out, columns)
        self.parquet = pq.ParquetWriter(out, self.schema, compression="zstd")

    def write(self, batch: pd.DataFrame) -> None:
        self.parquet.write_table(self.table(batch))

    def close(self) -> None:
        self.parquet.close()


def writer(format: str, out: IO[bytes], columns: list[str]) -> Writer:
    """A writer of ``format`` putting batches of ``columns`` into ``out``."""
    if format == "csv":
        return _CsvWriter(out, columns)
    if format == "parquet":
        return _ParquetWriter(out, columns)
    return _JsonWriter(out, columns, lines=format == "jsonl")


# -- reading exports back -----------------------------------------------------------------


def _arrays(columns: list[str], values: dict[str, list[Any]]) -> pa.Table:
    schema = table_schema()
    arrays = []
    for name in columns:
        field = schema.field(name)
        if pa.types.is_dictionary(field.type):
            array = pa.array(values[name], pa.string()).dictionary_encode()
        else:
            array = pa.array(values[name], field.type)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(c) for c in columns]))


def _read_json(path: Path, *, lines: bool) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"path: cannot read {str(path)!r}: {exc}") from exc
    where = "line"
    try:
        if lines:
            objects = [json.loads(line) for line in text.split("\n") if line.strip()]
        else:
            where = "document"
            objects = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{str(path)!r}: not JSON ({where} {exc.lineno}: {exc.msg})") from None
    if not isinstance(objects, list):
        raise StoreError(f"{str(path)!r}: expected a JSON array of records")
    return objects


def _from_json(path: Path, *, lines: bool, columns: list[str]) -> pa.Table:
    values: dict[str, list[Any]] = {name: [] for name in columns}
    for index, obj in enumerate(_read_json(path, lines=lines)):
        try:
            record = record_from_json(obj)
        except RecordError as exc:
            where = f"line {index + 1}" if lines else f"record {index}"
            raise StoreError(f"{str(path)!r}, {where}: {exc}") from None
        for name in columns:
            values[name].append(record.get(name))
    return _arrays(columns, values)


def _csv_type(kind: str) -> pa.DataType:
    if kind == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if kind.startswith(("int", "float")):
        return pa.float64() if kind.startswith("float") else getattr(pa, kind)()
    return pa.string()


def _from_csv(path: Path, *, columns: list[str] | None) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types={name: _csv_type(kind) for name, kind in _TYPES.items()},
        # Null is an empty unquoted cell only; a quoted "" is an empty string.
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        include_columns=columns,
    )
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=convert,
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"{str(path)!r}: cannot read it as a CSV export: {exc}") from exc
    unknown = [c for c in table.column_names if c not in _TYPES]
    if unknown:
        raise StoreError(f"{str(path)!r}: unknown column {unknown[0]!r} in the header")
    arrays = []
    for name in table.column_names:
        array, kind = _column(table, name), _TYPES[name]
        if kind in ("category", "string", "tags"):
            quoted = pc.fill_null(pc.match_substring_regex(array, _QUOTED_RE2), False)
            array = pc.if_else(quoted, pc.utf8_slice_codeunits(array, 1), array)
        if kind == "category":
            array = array.dictionary_encode()
        elif kind == "tags":
            try:
                maps = [None if v is None else json.loads(v) for v in array.to_pylist()]
            except json.JSONDecodeError as exc:
                raise StoreError(f"{str(path)!r}, column 'tags': not JSON: {exc}") from None
            array = pa.array(maps, table_schema().field("tags").type)
        arrays.append(array)
    full = table_schema()
    return pa.Table.from_arrays(
        arrays, schema=pa.schema([full.field(c) for c in table.column_names])
    )


def read_export(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """An export read back as a frame with the dtypes of :meth:`Store.read`.

    Every format gives back exactly what was exported: JSON records are checked
    with :func:`perfnb.schema.record_from_json`, CSV text loses the quote that
    :func:`neutralise` put in front. ``columns`` picks columns; by default a CSV
    or Parquet file gives the columns it holds and JSON every column of the
    schema (JSON leaves nulls out, so it cannot tell).

    >>> import tempfile, pathlib
    >>> empty = pathlib.Path(tempfile.mkdtemp()) / "e.json"
    >>> _ = empty.write_text("[]")
    >>> read_export(empty, columns=["time", "route"]).shape
    (0, 2)
    """
    source = Path(path)
    fmt = format_for(source, format)
    wanted = None if columns is None else check_columns(columns)
    if fmt in ("json", "jsonl"):
        table = _from_json(source, lines=fmt == "jsonl", columns=wanted or list(COLUMN_NAMES))
    elif fmt == "csv":
        table = _from_csv(source, columns=wanted)
    else:
        try:
            table = pq.read_table(source, columns=wanted)
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(f"path: cannot read {str(source)!r} as Parquet: {exc}") from exc
        unknown = [c for c in table.column_names if c not in _TYPES]
        if unknown:
            raise StoreError(f"{str(source)!r}: unknown column {unknown[0]!r}")
        full = table_schema()
        table = table.cast(pa.schema([full.field(c) for c in table.column_names]))
    return frame_from_arrow(table)
