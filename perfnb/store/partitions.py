"""What a store holds, day by day: detail files, rows and bytes, and the daily summaries.

:func:`partitions` is the inventory behind :meth:`Store.partitions
<perfnb.store.store.Store.partitions>`, the retention panel and ``perfnb retention``'s
table. Row counts come from the Parquet footers, so listing a month of detail
reads a few KB per file, never the data.

>>> import tempfile
>>> from perfnb.store import Store
>>> list(partitions(Store(tempfile.mkdtemp())).columns)[:4]
['date', 'detail_files', 'detail_rows', 'detail_bytes']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from perfnb.store.compact import day_files

if TYPE_CHECKING:
    from perfnb.store.store import Store

__all__ = ["COLUMNS", "partitions"]

#: The columns of :func:`partitions`, in order.
COLUMNS = (
    "date",
    "detail_files",
    "detail_rows",
    "detail_bytes",
    "summary",
    "summary_bytes",
)


def _rows(fs: pafs.FileSystem, path: str) -> int:
    with fs.open_input_file(path) as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def partitions(store: Store, *, rows: bool = True) -> pd.DataFrame:
    """One row per day that has detail or a summary, oldest first.

    ``detail_rows`` is null when ``rows=False`` (no footer is read then);
    ``summary`` says whether a daily summary is stored for the day.
    """
    history = store._history
    detail_days = store.days()
    summary_days = set(history.summary_days())
    out: list[dict[str, Any]] = []
    for day in sorted(set(detail_days) | summary_days):
        infos = day_files(store.fs, history.detail_dir(day)) if day in detail_days else []
        summary_bytes = 0
        if day in summary_days:
            info = store.fs.get_file_info(history.summary_path(day))
            summary_bytes = int(info.size or 0)
        out.append(
            {
                "date": day,
                "detail_files": len(infos),
                "detail_rows": sum(_rows(store.fs, i.path) for i in infos) if rows else None,
                "detail_bytes": sum(int(i.size or 0) for i in infos),
                "summary": day in summary_days,
                "summary_bytes": summary_bytes,
            }
        )
    frame = pd.DataFrame(out, columns=list(COLUMNS))
    frame["detail_files"] = frame["detail_files"].astype("int64")
    frame["detail_rows"] = frame["detail_rows"].astype("Int64")
    frame["detail_bytes"] = frame["detail_bytes"].astype("int64")
    frame["summary"] = frame["summary"].astype("bool")
    frame["summary_bytes"] = frame["summary_bytes"].astype("int64")
    return frame
