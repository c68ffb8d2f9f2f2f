"""Baselines and regressions: per-route latency sketches of one period compared with another.

A *profile* is what a period (or one load run) looked like, route by route: the
number of requests, the errors, a :class:`~perfnb.analysis.sketch.LatencySketch` of
``duration_ms`` and the length of the period (for throughput). :func:`save_baseline`
measures a profile and keeps it under a name in ``<root>/baselines/<name>.json``;
:func:`compare` measures another period or run and sets it beside the baseline:

- **latency**: p50/p95/p99 on each side and their ratios; the effect size is
  Cliff's delta, ``P(now > before) - P(now < before)`` (and the common-language
  effect size ``P(now > before) + ½ P(tie)``), and the test is a one-sided
  Mann–Whitney U test with the tie correction and the normal approximation. Both
  come from the two sketches' bucket counts: values in one bucket count as ties,
  which costs nothing worth having since buckets are 1.5% wide;
- **errors**: the error rate on each side (an error is an ``error_type`` or a
  status ≥ 500), tested with a one-sided pooled two-proportion z-test;
- **throughput**: requests per second on each side, tested as Poisson counts
  (``now | total`` is binomial under equal rates), one-sided, normal approximation.
  Real traffic is burstier than Poisson, so this p-value is optimistic: the ratio
  threshold does the real work there.

A route is flagged as a ``regression`` when a change passes both its threshold in
:class:`Thresholds` and the test at level ``alpha``; ``reason`` says which. Normal
tails come from :func:`math.erfc`; no SciPy.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> before = Profile.of({"/api": rng.lognormal(3.0, 0.3, 2000)}, seconds=60)
>>> after = Profile.of({"/api": rng.lognormal(3.3, 0.3, 2000)}, seconds=60)
>>> row = compare_profiles(before, after).iloc[0]
>>> bool(row["regression"]), round(float(row["p95_ratio"]), 2), row["reason"].split(",")[0]
(True, 1.33, 'p95 1.33× baseline (≥ 1.2×)')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import pandas as pd

from perfnb.analysis.profile import Profile, RouteStats, StoreLike, TimeLike, measure
from perfnb.analysis.ranktests import RankTest, mann_whitney, rate_test, two_proportion_test
from perfnb.analysis.sketch import LatencySketch
from perfnb.errors import ConfigError, StoreError

__all__ = [
    "BASELINE_DIR",
    "COLUMNS",
    "Profile",
    "RankTest",
    "RouteStats",
    "Thresholds",
    "compare",
    "compare_profiles",
    "delete_baseline",
    "list_baselines",
    "load_baseline",
    "mann_whitney",
    "measure",
    "rate_test",
    "save_baseline",
    "two_proportion_test",
]

#: Folder under the store root that holds the baselines.
BASELINE_DIR: Final = "baselines"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_QS: Final = (0.5, 0.95, 0.99)


# -- thresholds -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Thresholds:
    """When a change counts as a regression (each also needs ``p < alpha``).

    - ``p95_ratio``: current p95 at least this × the baseline's;
    - ``error_rate_delta``: error rate at least this much higher (absolute, 0.01 = 1 point);
    - ``throughput_ratio``: throughput at most this × the baseline's (``None``: not judged,
      e.g. for real traffic whose volume follows the users rather than the app);
    - ``alpha``: significance level of the tests;
    - ``min_count``: fewest timed requests on each side before a route is judged.

    >>> Thresholds(p95_ratio=1.5).alpha
    0.01
    >>> Thresholds(alpha=2)
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: alpha: got 2; expected a significance level in (0, 1)
    """

    p95_ratio: float = 1.2
    error_rate_delta: float = 0.01
    throughput_ratio: float | None = 0.8
    alpha: float = 0.01
    min_count: int = 30

    def __post_init__(self) -> None:
        def bad(name: str, value: object, accepted: str) -> ConfigError:
            return ConfigError(f"{name}: got {value!r}; expected {accepted}")

        if not _number(self.p95_ratio) or self.p95_ratio <= 0:
            raise bad("p95_ratio", self.p95_ratio, "a ratio > 0 (1.2 = 20% slower)")
        if not _number(self.error_rate_delta) or not 0 <= self.error_rate_delta <= 1:
            raise bad("error_rate_delta", self.error_rate_delta, "a share in [0, 1]")
        if self.throughput_ratio is not None and (
            not _number(self.throughput_ratio) or self.throughput_ratio <= 0
        ):
            raise bad("throughput_ratio", self.throughput_ratio, "a ratio > 0, or None")
        if not _number(self.alpha) or not 0 < self.alpha < 1:
            raise bad("alpha", self.alpha, "a significance level in (0, 1)")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int):
            raise bad("min_count", self.min_count, "an integer ≥ 1")
        if self.min_count < 1:
            raise bad("min_count", self.min_count, "an integer ≥ 1")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- storage ----------------------------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"name: got {name!r}; expected 1-100 characters of letters, digits, '_', '-' and "
            "'.', starting with a letter or digit (a file name, never a path)"
        )
    return name


def _folder(store: StoreLike) -> str:
    return f"{store.root}/{BASELINE_DIR}"


def _path(store: StoreLike, name: str) -> str:
    return f"{_folder(store)}/{_check_name(name)}.json"


def _exists(store: StoreLike, path: str) -> bool:
    import pyarrow.fs as pafs

    return bool(store.fs.get_file_info(path).type == pafs.FileType.File)


def _write_atomic(store: StoreLike, path: str, data: bytes) -> None:
    folder = path.rsplit("/", 1)[0]
    temp = f"{folder}/.{path.rsplit('/', 1)[1]}.{secrets.token_hex(4)}.tmp"
    store.fs.create_dir(folder, recursive=True)
    try:
        with store.fs.open_output_stream(temp) as stream:
            stream.write(data)
        if store.local:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename must not land before the bytes
            finally:
                os.close(fd)
            os.replace(temp, path)
        else:
            store.fs.move(temp, path)
    except OSError as exc:
        raise StoreError(f"could not write {path!r}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError, FileNotFoundError):
            if _exists(store, temp):
                store.fs.delete_file(temp)


def save_baseline(
    store: StoreLike,
    name: str,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    run_id: str | None = None,
    sources: Sequence[str] | None = ("server",),
    kinds: Sequence[str] | None = ("http",),
    services: Sequence[str] | None = None,
    overwrite: bool = False,
    meta: Mapping[str, str] | None = None,
) -> Profile:
    """Measure a period (or the load run ``run_id``) and keep it as the baseline ``name``.

    Written atomically to ``<root>/baselines/<name>.json``. An existing baseline is
    replaced only with ``overwrite=True``. Names are 1–100 letters, digits, ``_``,
    ``-`` and ``.``, starting with a letter or digit.

    >>> import tempfile
    >>> from perfnb.store import Store
    >>> store = Store(tempfile.mkdtemp())
    >>> save_baseline(store, "v1.2-calm", start="2026-01-01", end="2026-01-02").name
    'v1.2-calm'
    >>> list_baselines(store)
    ['v1.2-calm']
    >>> save_baseline(store, "../etc")
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: name: got '../etc'; expected 1-100 characters of letters, digits, '_', '-' and '.', starting with a letter or digit (a file name, never a path)
    """  # noqa: E501
    path = _path(store, name)
    if not overwrite and _exists(store, path):
        raise StoreError(f"baseline {name!r} exists; pass overwrite=True or delete it first")
    profile = measure(
        store,
        start=start,
        end=end,
        run_id=run_id,
        sources=sources,
        kinds=kinds,
        services=services,
    )
    saved = dataclasses.replace(
        profile,
        name=name,
        created=datetime.now(UTC),
        meta={**profile.meta, **{str(k): str(v) for k, v in (meta or {}).items()}},
    )
    data = json.dumps(saved.to_dict(), separators=(",", ":"), allow_nan=False).encode()
    _write_atomic(store, path, data)
    return saved


def list_baselines(store: StoreLike) -> list[str]:
    """The names of the saved baselines, sorted."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(_folder(store), allow_not_found=True)
    names = []
    for info in store.fs.get_file_info(selector):
        base = info.base_name
        if info.type == pafs.FileType.File and base.endswith(".json"):
            stem = base[: -len(".json")]
            if _NAME.fullmatch(stem):
                names.append(stem)
    return sorted(names)


def load_baseline(store: StoreLike, name: str) -> Profile:
    """The baseline saved as ``name`` (:class:`StoreError` when there is none)."""
    path = _path(store, name)
    try:
        with store.fs.open_input_stream(path) as stream:
            raw = stream.read()
    except (FileNotFoundError, OSError):
        known = ", ".join(list_baselines(store)) or "none"
        raise StoreError(f"baseline {name!r}: not found; saved baselines: {known}") from None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"baseline {name!r}: {path} is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise StoreError(f"baseline {name!r}: {path} holds no baseline document")
    try:
        return Profile.from_dict(document)
    except StoreError as exc:
        raise StoreError(f"baseline {name!r}: {exc}") from None


def delete_baseline(store: StoreLike, name: str) -> None:
    """Remove the baseline ``name`` (:class:`StoreError` when there is none)."""
    path = _path(store, name)
    if not _exists(store, path):
        known = ", ".join(list_baselines(store)) or "none"
        raise StoreError(f"baseline {name!r}: not found; saved baselines: {known}")
    store.fs.delete_file(path)


# -- comparing --------------------------------------------------------------------------

#: The columns of :func:`compare`'s frame, in order.
COLUMNS: Final = (
    "route",
    "status",
    "regression",
    "reason",
    "base_count",
    "count",
    "base_p50_ms",
    "p50_ms",
    "base_p95_ms",
    "p95_ms",
    "base_p99_ms",
    "p99_ms",
    "p50_ratio",
    "p95_ratio",
    "p99_ratio",
    "cliffs_delta",
    "prob_slower",
    "latency_p",
    "base_error_rate",
    "error_rate",
    "error_rate_delta",
    "error_p",
    "base_rps",
    "rps",
    "throughput_ratio",
    "throughput_p",
)


def _ratio(now: float, before: float) -> float:
    if math.isnan(now) or math.isnan(before) or before <= 0:
        return math.nan
    return now / before


def _row(route: str, base: Profile, now: Profile, th: Thresholds) -> dict[str, Any]:
    before, after = base.routes.get(route), now.routes.get(route)
    b_sketch = before.sketch if before else LatencySketch()
    a_sketch = after.sketch if after else LatencySketch()
    bq, aq = b_sketch.quantiles(_QS), a_sketch.quantiles(_QS)
    b_n, a_n = (before.count if before else 0), (after.count if after else 0)
    b_err, a_err = (before.errors if before else 0), (after.errors if after else 0)
    b_rate = b_err / b_n if b_n else math.nan
    a_rate = a_err / a_n if a_n else math.nan
    b_rps, a_rps = base.rps(route), now.rps(route)
    row: dict[str, Any] = {
        "route": route,
        "base_count": b_n,
        "count": a_n,
        "base_p50_ms": bq[0],
        "p50_ms": aq[0],
        "base_p95_ms": bq[1],
        "p95_ms": aq[1],
        "base_p99_ms": bq[2],
        "p99_ms": aq[2],
        "p50_ratio": _ratio(aq[0], bq[0]),
        "p95_ratio": _ratio(aq[1], bq[1]),
        "p99_ratio": _ratio(aq[2], bq[2]),
        "base_error_rate": b_rate,
        "error_rate": a_rate,
        "error_rate_delta": a_rate - b_rate,
        "base_rps": b_rps,
        "rps": a_rps,
        "throughput_ratio": _ratio(a_rps, b_rps),
        "regression": False,
        "reason": "",
    }
    test = mann_whitney(b_sketch, a_sketch)
    row["cliffs_delta"], row["prob_slower"], row["latency_p"] = (
        test.cliffs_delta,
        test.prob_greater,
        test.p_greater,
    )
    row["error_p"] = two_proportion_test(b_err, b_n, a_err, a_n)
    row["throughput_p"] = rate_test(b_n, base.seconds, a_n, now.seconds)
    if before is None:
        row["status"], row["reason"] = "new", "not in the baseline"
        return row
    if after is None:
        row["status"], row["reason"] = "gone", "no requests in the compared period"
        return row
    fewest = min(b_sketch.count, a_sketch.count)
    if fewest < th.min_count:
        row["status"] = "too_few"
        row["reason"] = f"too few timed requests to judge ({fewest} < min_count {th.min_count})"
        return row
    row["status"] = "compared"
    reasons = []
    ratio = row["p95_ratio"]
    if ratio >= th.p95_ratio and test.p_greater < th.alpha:
        reasons.append(
            f"p95 {ratio:.2f}× baseline (≥ {th.p95_ratio:g}×), Mann–Whitney "
            f"p={test.p_greater:.1e}, Cliff's δ={test.cliffs_delta:+.2f}"
        )
    delta = row["error_rate_delta"]
    if delta >= th.error_rate_delta and row["error_p"] < th.alpha:
        reasons.append(
            f"error rate {a_rate:.1%} vs {b_rate:.1%} (+{delta:.1%} ≥ "
            f"{th.error_rate_delta:.1%}), z-test p={row['error_p']:.1e}"
        )
    tp = row["throughput_ratio"]
    if (
        th.throughput_ratio is not None
        and tp <= th.throughput_ratio
        and row["throughput_p"] < th.alpha
    ):
        reasons.append(
            f"throughput {tp:.2f}× baseline (≤ {th.throughput_ratio:g}×), "
            f"Poisson p={row['throughput_p']:.1e}"
        )
    row["regression"] = bool(reasons)
    row["reason"] = "; ".join(reasons)
    return row


_STATUS_ORDER: Final = {"compared": 0, "too_few": 1, "new": 2, "gone": 3}


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def compare_profiles(
    baseline: Profile, current: Profile, *, thresholds: Thresholds | None = None
) -> pd.DataFrame:
    """One row per route of either side: figures, effect size, tests, ``regression``.

    Routes present on one side only get ``status`` ``"new"`` or ``"gone"`` and are
    never flagged; routes with fewer than ``min_count`` timed requests on a side get
    ``"too_few"``. Rows are sorted regressions first, then by p95 ratio. See the
    module docs for the tests; :data:`COLUMNS` lists the columns.
    """
    th = thresholds if thresholds is not None else Thresholds()
    routes = sorted(set(baseline.routes) | set(current.routes))
    frame = pd.DataFrame([_row(r, baseline, current, th) for r in routes], columns=list(COLUMNS))
    if not frame.empty:
        frame["_order"] = frame["status"].map(_STATUS_ORDER)
        frame = frame.sort_values(
            ["regression", "_order", "p95_ratio"],
            ascending=[False, True, False],
            na_position="last",
            kind="stable",
        ).drop(columns="_order")
    frame = frame.reset_index(drop=True)
    frame["regression"] = frame["regression"].astype(bool)
    frame.attrs.update(
        baseline=baseline.name,
        baseline_start=_stamp(baseline.start),
        baseline_end=_stamp(baseline.end),
        baseline_run_id=baseline.run_id,
        start=_stamp(current.start),
        end=_stamp(current.end),
        run_id=current.run_id,
        thresholds=th,
    )
    return frame


def compare(
    store: StoreLike,
    baseline: str | Profile,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    run_id: str | None = None,
    thresholds: Thresholds | None = None,
) -> pd.DataFrame:
    """Compare ``[start, end)`` (or the load run ``run_id``) with a baseline, per route.

    ``baseline`` is a saved name or a :class:`Profile`. The current side is measured
    with the baseline's own filters (sources, kinds, services), so like meets like.
    Returns :func:`compare_profiles`'s frame.

    >>> import tempfile
    >>> from perfnb.store import Store
    >>> store = Store(tempfile.mkdtemp())
    >>> _ = save_baseline(store, "calm", start="2026-01-01", end="2026-01-02")
    >>> compare(store, "calm", start="2026-01-02", end="2026-01-03").empty
    True
    """
    base = load_baseline(store, baseline) if isinstance(baseline, str) else baseline
    current = measure(
        store,
        start=start,
        end=end,
        run_id=run_id,
        sources=base.sources,
        kinds=base.kinds,
        services=base.services,
    )
    return compare_profiles(base, current, thresholds=thresholds)
