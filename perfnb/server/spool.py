"""The spool: a monitor's buffer kept across a restart of the app.

A JSON Lines file. The first line is the header::

    {"perfnb_spool": 1, "boot": "3a4a594f81e9", "first": 41, "count": 3, "service": "shop"}

and each further line one record in wire form (:func:`perfnb.schema.record_to_json`),
numbered ``first, first + 1, ...``. The file is written beside its final name and
renamed over it, so a crash leaves the old spool or the new one, never half of one.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "spool")
>>> write_spool(path, boot="ab", first=7, records=[], service="shop")
0
>>> read_spool(path)
('ab', 7, [])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from perfnb.errors import RecordError, StoreError
from perfnb.schema import Record, record_from_json, record_to_json

__all__ = ["SPOOL_FORMAT", "read_spool", "write_spool"]

#: The version in the header's ``perfnb_spool`` field.
SPOOL_FORMAT: Final = 1


def write_spool(
    path: str | os.PathLike[str],
    *,
    boot: str,
    first: int,
    records: Sequence[Record],
    service: str,
) -> int:
    """Write a spool atomically; returns the number of records written."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    header = {
        "perfnb_spool": SPOOL_FORMAT,
        "boot": boot,
        "first": first,
        "count": len(records),
        "service": service,
    }
    try:
        with open(temp, "w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            for rec in records:
                out.write(json.dumps(record_to_json(rec), separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except (OSError, TypeError, ValueError, KeyError, AttributeError) as exc:
        temp.unlink(missing_ok=True)
        msg = f"spool {str(target)!r}: cannot write ({exc})"
        raise StoreError(msg) from exc
    return len(records)


def read_spool(path: str | os.PathLike[str]) -> tuple[str, int, list[Record]]:
    """The boot id, the number of the first record, and the records of a spool.

    A record line that does not parse costs the records before it: sequence
    numbers must stay true, so only what follows the bad line is kept (and
    ``first`` moves past it; readers are told the rest was dropped).
    """
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"spool {str(source)!r}: cannot read ({exc})"
        raise StoreError(msg) from exc
    try:
        header = json.loads(lines[0]) if lines else None
    except (ValueError, RecursionError):
        header = None
    if (
        not isinstance(header, dict)
        or header.get("perfnb_spool") != SPOOL_FORMAT
        or not isinstance(header.get("boot"), str)
        or isinstance(header.get("first"), bool)
        or not isinstance(header.get("first"), int)
        or header["first"] < 1
    ):
        msg = f"spool {str(source)!r}: not a perfnb spool (format {SPOOL_FORMAT})"
        raise StoreError(msg)
    first: int = header["first"]
    records: list[Record] = []
    for line in lines[1:]:
        try:
            records.append(record_from_json(json.loads(line)))
        except (ValueError, RecordError, RecursionError):
            first += len(records) + 1
            records = []
    return header["boot"], first, records
