"""Arrow tables of the record schema as pandas DataFrames, with perfnb's dtypes.

The live stream and the store's reads both build their frames here, so a frame
has the same dtypes wherever it came from:

==========================  ========================================
Arrow type                  pandas dtype
==========================  ========================================
``timestamp[us, UTC]``      ``datetime64[us, UTC]``
``dictionary<int32, str>``  ``category`` (string categories)
``string``                  the default string dtype
``int16/32/64``             nullable ``Int16`` / ``Int32`` / ``Int64``
``float32/64``              ``float64`` (null is NaN)
``map<string, string>``     ``object``: a ``dict`` or ``None`` per row
==========================  ========================================

>>> from perfnb.schema import arrow_schema
>>> frame_from_arrow(arrow_schema().empty_table()).dtypes["status"]
Int16Dtype()
"""

from __future__ import annotations

from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["frame_from_arrow"]

#: Arrow integer types mapped to pandas' nullable integers (plain numpy ints
#: cannot hold a null, and floats would lose large values).
NULLABLE_INTS: Final[dict[Any, Any]] = {
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
}


def frame_from_arrow(table: pa.Table) -> pd.DataFrame:
    """A pandas DataFrame from an Arrow table of the record schema, with perfnb's dtypes.

    Dictionary columns whose chunks carry different dictionaries are unified
    first, so each becomes one pandas categorical. Float columns come out as
    float64 whatever their width in memory: the live ``*_ms`` columns (float32)
    and the store's (µs integers on disk) then compare and aggregate alike.

    >>> import pyarrow as pa
    >>> table = pa.table({"status": pa.array([200, None], pa.int16())})
    >>> frame_from_arrow(table)["status"].tolist()
    [200, <NA>]
    """
    table = table.unify_dictionaries()
    for index, field in enumerate(table.schema):
        if pa.types.is_float32(field.type):
            wide = table.column(index).cast(pa.float64())
            if field.name.endswith("_ms"):
                # timings are measured to the µs: undo float32's rounding noise
                wide = pc.round(wide, ndigits=3)
            table = table.set_column(index, field.name, wide)
    frame = table.to_pandas(types_mapper=NULLABLE_INTS.get, maps_as_pydicts="strict")
    assert isinstance(frame, pd.DataFrame)
    return frame
