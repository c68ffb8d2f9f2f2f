"""The per-route summary ``perfnb demo`` prints: counts, percentiles, errors, server vs network.

Pure functions from a frame of records (as :meth:`perfnb.store.Store.read`
returns it) to a summary frame and to text.

- ``count``, ``errors`` (share of 5xx and of requests that got no answer) and
  ``server_p50_ms`` (median time inside the app) come from the app's own
  records (``source="server"``);
- ``p50_ms``/``p95_ms``/``p99_ms`` are the latency the client saw when client
  records exist (``source="client"``), else the server's;
- ``network_p50_ms`` is the median of client time minus the server time the
  response announced in ``Server-Timing``: what the network and the client
  stack added.

>>> import pandas as pd
>>> frame = pd.DataFrame({"source": ["server"] * 3, "kind": ["http"] * 3,
...     "route": ["/api/cards"] * 3, "method": ["GET"] * 3, "status": [200, 200, 500],
...     "duration_ms": [2.0, 4.0, 6.0]})
>>> summarise(frame)[["route", "count", "p50_ms", "errors"]].to_dict("records")
[{'route': '/api/cards', 'count': 3, 'p50_ms': 4.0, 'errors': 0.3333333333333333}]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np
import pandas as pd

from perfnb.demo.templates import TEMPLATES, route_template

__all__ = ["SUMMARY_COLUMNS", "format_summary", "summarise"]

SUMMARY_COLUMNS: Final = (
    "route",
    "method",
    "count",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors",
    "server_p50_ms",
    "network_p50_ms",
)


def _to_template(path: object, templates: tuple[str, ...]) -> object:
    if not isinstance(path, str) or path in templates:
        return path
    return route_template(path, templates) or path


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([np.nan] * len(frame), index=frame.index, dtype="float64")


def _quantiles(values: pd.Series) -> tuple[float, float, float]:
    data = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype="float64")
    if data.size == 0:
        return (np.nan, np.nan, np.nan)
    p50, p95, p99 = np.quantile(data, [0.5, 0.95, 0.99])
    return (float(p50), float(p95), float(p99))


def summarise(frame: pd.DataFrame, *, templates: Iterable[str] = TEMPLATES) -> pd.DataFrame:
    """One row per (route, method) the app served, busiest first.

    ``templates`` (default: the demo app's) maps client records that carry raw
    paths (``/api/cards/17``) onto the app's route templates so they join the
    server's rows.
    """
    if frame.empty or "kind" not in frame.columns:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    http = frame[frame["kind"].astype("object") == "http"]
    source = http["source"].astype("object")
    server = http[source == "server"]
    client = http[source == "client"].copy()
    known = tuple(templates)
    if not client.empty:
        client["route"] = pd.Series(
            [_to_template(r, known) for r in client["route"].astype("object")],
            index=client.index,
            dtype="object",
        )
        client["network_ms"] = (
            pd.to_numeric(_column(client, "duration_ms"), errors="coerce")
            - pd.to_numeric(_column(client, "server_ms"), errors="coerce")
        ).clip(lower=0)
    rows = []
    groups = server.groupby(
        [server["route"].astype("object"), server["method"].astype("object")], sort=False
    )
    for (route, method), group in groups:
        status = pd.to_numeric(_column(group, "status"), errors="coerce").fillna(0)
        theirs = client[
            (client["route"].astype("object") == route)
            & (client["method"].astype("object") == method)
        ]
        seen_by = theirs if not theirs.empty else group
        p50, p95, p99 = _quantiles(_column(seen_by, "duration_ms"))
        server_p50 = _quantiles(_column(group, "duration_ms"))[0]
        network = _quantiles(theirs["network_ms"])[0] if not theirs.empty else np.nan
        rows.append(
            {
                "route": route,
                "method": method,
                "count": len(group),
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "errors": float(((status >= 500) | (status == 0)).mean()),
                "server_p50_ms": server_p50,
                "network_p50_ms": network,
            }
        )
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return out.sort_values(["count", "route"], ascending=[False, True], ignore_index=True)


def _ms(value: object) -> str:
    return "-" if not isinstance(value, float) or np.isnan(value) else f"{value:.1f}"


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as an aligned text table.

    >>> print(format_summary(pd.DataFrame([{"route": "/", "method": "GET", "count": 1,
    ...     "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0, "errors": 0.0,
    ...     "server_p50_ms": 0.5, "network_p50_ms": float("nan")}])))
    route  method  count  p50 ms  p95 ms  p99 ms  errors  server p50  network p50
    /      GET         1     1.0     1.0     1.0    0.0%         0.5            -
    """
    header = (
        "route",
        "method",
        "count",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "server p50",
        "network p50",
    )
    body = [
        (
            str(row["route"]),
            str(row["method"]),
            str(row["count"]),
            _ms(row["p50_ms"]),
            _ms(row["p95_ms"]),
            _ms(row["p99_ms"]),
            f"{100 * float(row['errors']):.1f}%",
            _ms(row["server_p50_ms"]),
            _ms(row["network_p50_ms"]),
        )
        for row in summary.to_dict("records")
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for row in [header, *body]:
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
