"""An exact, mergeable log-linear latency histogram at microsecond resolution.

Values are whole microseconds. Below 2,048 µs every value has its own bucket;
above, each power of two is split into 1,024 equal buckets, so any recorded value
is known to within 1/1,024 of itself (three significant digits, as HdrHistogram
gives). Counts are exact; min, max, sum and count are kept exactly beside them.
Histograms from many workers and many seconds merge by adding counts, so run
percentiles are computed from every request, never from averaged percentiles.

>>> h = Histogram()
>>> for us in (1_000, 2_000, 3_000, 4_000):
...     h.record(us)
>>> h.count, h.percentile(50)
(4, 2.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["RELATIVE_PRECISION", "Histogram", "bucket_bounds", "bucket_index"]

_SUB_BITS: Final = 10  # 1,024 buckets per power of two above the linear range
_LINEAR: Final = 1 << (_SUB_BITS + 1)  # 2,048: values below are exact

#: Any percentile is within this fraction of a value that was recorded (or ±0.5 µs).
RELATIVE_PRECISION: Final = 1.0 / (1 << _SUB_BITS)


def bucket_index(value_us: int) -> int:
    """The bucket of a non-negative value in µs.

    >>> bucket_index(1_500), bucket_index(2_048), bucket_index(4_096)
    (1500, 2048, 3072)
    """
    shift = value_us.bit_length() - (_SUB_BITS + 1)
    if shift <= 0:
        return value_us
    return (shift << _SUB_BITS) + (value_us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value (µs, inclusive) that land in bucket ``index``.

    >>> bucket_bounds(3072)
    (4096, 4099)
    """
    if index < _LINEAR:
        return index, index
    shift = (index >> _SUB_BITS) - 1
    sub = index - (shift << _SUB_BITS)
    low = sub << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Latency counts in log-linear buckets; values in µs, percentiles in ms.

    ``record`` is the hot path (a bit length, a shift and a dict update).
    Negative values are clamped to 0 — they only arise from clock steps.

    >>> a, b = Histogram(), Histogram()
    >>> a.record(100); b.record(300)
    >>> a.merge(b).max_us
    300
    """

    __slots__ = ("count", "counts", "max_us", "min_us", "sum_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.sum_us = 0
        self.min_us = 0
        self.max_us = 0

    def record(self, value_us: int, n: int = 1) -> None:
        """Add ``n`` observations of ``value_us`` microseconds."""
        if value_us < 0:
            value_us = 0
        shift = value_us.bit_length() - (_SUB_BITS + 1)
        index = value_us if shift <= 0 else (shift << _SUB_BITS) + (value_us >> shift)
        counts = self.counts
        counts[index] = counts.get(index, 0) + n
        if self.count == 0:
            self.min_us = self.max_us = value_us
        elif value_us > self.max_us:
            self.max_us = value_us
        elif value_us < self.min_us:
            self.min_us = value_us
        self.count += n
        self.sum_us += value_us * n

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts into this histogram and return it (for chaining)."""
        if other.count == 0:
            return self
        counts = self.counts
        for index, n in other.counts.items():
            counts[index] = counts.get(index, 0) + n
        if self.count == 0:
            self.min_us, self.max_us = other.min_us, other.max_us
        else:
            self.min_us = min(self.min_us, other.min_us)
            self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.sum_us += other.sum_us
        return self

    def copy(self) -> Histogram:
        """An independent copy."""
        return Histogram().merge(self)

    @property
    def mean(self) -> float:
        """The exact mean in ms (0.0 when empty)."""
        return self.sum_us / self.count / 1000.0 if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0–100) in ms; 0.0 when empty.

        The rank is the nearest-rank definition (``ceil(q/100 * count)``, numpy's
        ``inverted_cdf``). The answer is the middle of the rank's bucket, clamped
        to the exact min and max, so it is within :data:`RELATIVE_PRECISION` of
        the true value.
        """
        return self.percentiles((q,))[0]

    def percentiles(self, qs: Iterable[float]) -> list[float]:
        """Several percentiles in one pass over the buckets (ms)."""
        wanted = list(qs)
        for q in wanted:
            if not 0.0 <= q <= 100.0:
                msg = f"percentile q={q!r} is out of range; accepted: 0 to 100"
                raise ValueError(msg)
        if self.count == 0:
            return [0.0 for _ in wanted]
        order = sorted(range(len(wanted)), key=lambda i: wanted[i])
        out = [0.0] * len(wanted)
        items = sorted(self.counts.items())
        seen = 0
        pos = 0
        for i in order:
            rank = max(1, _ceil_rank(wanted[i], self.count))
            while seen + items[pos][1] < rank:
                seen += items[pos][1]
                pos += 1
            low, high = bucket_bounds(items[pos][0])
            mid = (low + high) / 2.0
            out[i] = min(max(mid, self.min_us), self.max_us) / 1000.0
        return out

    def to_dict(self) -> dict[str, object]:
        """A JSON- and pickle-friendly form (sparse buckets) for sending between processes."""
        return {
            "counts": [[k, v] for k, v in self.counts.items()],
            "count": self.count,
            "sum_us": self.sum_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Histogram:
        """The inverse of :meth:`to_dict`."""
        h = cls()
        raw = data.get("counts", [])
        if not isinstance(raw, list):
            msg = f"histogram 'counts': got {type(raw).__name__}; expected a list of [index, n]"
            raise ValueError(msg)
        h.counts = {int(k): int(v) for k, v in raw}
        h.count = _as_int(data, "count")
        h.sum_us = _as_int(data, "sum_us")
        h.min_us = _as_int(data, "min_us")
        h.max_us = _as_int(data, "max_us")
        return h

    def __repr__(self) -> str:
        if not self.count:
            return "Histogram(count=0)"
        p50, p99 = self.percentiles((50, 99))
        return f"Histogram(count={self.count}, p50={p50:.3f} ms, p99={p99:.3f} ms)"


def _ceil_rank(q: float, count: int) -> int:
    exact = q * count / 100.0
    rank = int(exact)
    # a rank a hair above an integer because of float error is that integer
    if exact - rank > 1e-9:
        rank += 1
    return rank


def _as_int(data: Mapping[str, object], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int):
        msg = f"histogram {key!r}: got {value!r}; expected an integer"
        raise ValueError(msg)
    return value
