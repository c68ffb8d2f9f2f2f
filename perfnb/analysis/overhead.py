"""The cost of watching, live: perfnb's own time as a share of the server's time.

The middleware measures its own in-line cost on every 16th request and, once a
second, records the mean as a ``kind="overhead"`` record (``name="middleware_us"``,
µs per request). Each server request (``source="server"``, ``kind="http"``) is
charged the mean of the next overhead record (the one that sums up its second;
the last one before it for the second still in progress); the share is the sum of
those charges over the sum of the requests' server time (``duration_ms``), per
second, per route, or over the whole frame.

>>> import pandas as pd
>>> t = pd.Timestamp("2026-01-01", tz="UTC")
>>> frame = pd.DataFrame({
...     "time": [t, t, t + pd.Timedelta("900ms")],
...     "source": ["server", "server", "perfnb"],
...     "kind": ["http", "http", "overhead"],
...     "route": ["/a", "/b", None],
...     "duration_ms": [1.0, 3.0, None],
...     "name": [None, None, "middleware_us"],
...     "value": [None, None, 20.0],
... })
>>> overhead_share(frame, by="route")[["route", "perfnb_ms", "share"]]
  route  perfnb_ms     share
0    /a       0.02  0.020000
1    /b       0.02  0.006667
>>> round(overhead_total(frame), 4)
0.01
"""

from __future__ import annotations

from typing import Final, Literal

import pandas as pd

from perfnb.errors import ConfigError

__all__ = ["overhead_share", "overhead_total"]

_BY: Final = ("second", "route", "total")
_COLUMNS: Final = ["requests", "server_ms", "perfnb_ms", "share"]


def _charged(frame: pd.DataFrame, *, tolerance: float) -> pd.DataFrame:
    """Server requests with ``perfnb_ms``: the nearest overhead record's cost per request."""
    need = {"time", "source", "kind"}
    if frame.empty or not need <= set(frame.columns):
        return pd.DataFrame(columns=["time", "route", "duration_ms", "perfnb_ms"])
    source = frame["source"].astype(str)
    kind = frame["kind"].astype(str)
    name = frame["name"].astype(str) if "name" in frame else pd.Series("", index=frame.index)
    costs = frame.loc[
        (source == "perfnb") & (kind == "overhead") & (name == "middleware_us"), ["time", "value"]
    ].dropna()
    requests = frame.loc[(source == "server") & (kind == "http")]
    if "duration_ms" not in requests:
        return pd.DataFrame(columns=["time", "route", "duration_ms", "perfnb_ms"])
    requests = requests[["time", "route", "duration_ms"]].dropna(subset=["duration_ms"])
    if costs.empty or requests.empty:
        return pd.DataFrame(columns=["time", "route", "duration_ms", "perfnb_ms"])
    costs = costs.assign(time=pd.to_datetime(costs["time"], utc=True)).sort_values("time")
    requests = requests.assign(time=pd.to_datetime(requests["time"], utc=True))
    requests = requests.assign(route=requests["route"].astype(str)).sort_values("time")
    # each overhead record sums up the second before it, so a request is charged the
    # next one; requests after the last record (the second in progress) the one before
    costs = costs.rename(columns={"value": "cost_us"})
    within = pd.Timedelta(seconds=tolerance)
    merged = pd.merge_asof(requests, costs, on="time", direction="forward", tolerance=within)
    before = pd.merge_asof(requests, costs, on="time", direction="backward", tolerance=within)
    merged["cost_us"] = merged["cost_us"].fillna(before["cost_us"])
    merged = merged.dropna(subset=["cost_us"])
    merged["perfnb_ms"] = merged["cost_us"].astype(float) / 1000.0
    return merged[["time", "route", "duration_ms", "perfnb_ms"]]


def overhead_share(
    frame: pd.DataFrame,
    *,
    by: Literal["second", "route", "total"] = "second",
    tolerance: float = 2.0,
) -> pd.DataFrame:
    """perfnb's own time over the server's time, per second, per route or in total.

    Columns: the key (``second`` as a UTC timestamp, or ``route``), ``requests``,
    ``server_ms`` (sum of server time), ``perfnb_ms`` (sum charged to perfnb) and
    ``share`` (``perfnb_ms / server_ms``). Requests with no overhead record within
    ``tolerance`` seconds are left out (monitoring was off, or the overhead kind
    is not recorded). Load traffic counts like any other: filter ``run_id`` first
    to leave it out.
    """
    if by not in _BY:
        msg = f"by={by!r}: accepted: {', '.join(map(repr, _BY))}"
        raise ConfigError(msg)
    if not tolerance > 0:
        msg = f"tolerance={tolerance!r}: accepted: a positive number of seconds"
        raise ConfigError(msg)
    charged = _charged(frame, tolerance=tolerance)
    if by == "second":
        key = charged["time"].dt.floor("s") if len(charged) else charged["time"]
        charged = charged.assign(second=key)
        group = "second"
    elif by == "route":
        group = "route"
    else:
        charged = charged.assign(total="all")
        group = "total"
    if charged.empty:
        return pd.DataFrame(columns=[group, *_COLUMNS])
    out = charged.groupby(group, sort=True, observed=True).agg(
        requests=("duration_ms", "size"),
        server_ms=("duration_ms", "sum"),
        perfnb_ms=("perfnb_ms", "sum"),
    )
    out["server_ms"] = out["server_ms"].astype(float)
    out["share"] = out["perfnb_ms"] / out["server_ms"].where(out["server_ms"] > 0)
    return out.reset_index()


def overhead_total(frame: pd.DataFrame, *, tolerance: float = 2.0) -> float:
    """perfnb's share of the server's time over the whole frame (NaN when unknown).

    >>> overhead_total(pd.DataFrame())
    nan
    """
    total = overhead_share(frame, by="total", tolerance=tolerance)
    return float(total["share"].iloc[0]) if len(total) else float("nan")
