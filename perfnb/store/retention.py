"""Retention: old detail goes once its summary is safe, old summaries go after that.

By default a store keeps 30 days of detail and 183 days (six months) of daily
summaries, counting today: a day is inside a window of ``n`` days while
``(today - day).days < n``. :meth:`Store.retention` makes a :class:`RetentionPlan`
without touching anything (a dry run); :meth:`RetentionPlan.apply` carries it out:

1. each day whose detail is due to go but whose summary is due to stay gets its
   summary written if it is missing or stale, then *verified*: re-read, its counts
   must add up to the detail's rows. A day that fails keeps its detail, and the
   result says why;
2. closed days inside the detail window are compacted (:meth:`Store.compact`);
3. an *intent* (``<root>/_retention.json``, written atomically) lists the files
   and summaries to delete;
4. the files are deleted one by one, then the emptied directories, then the intent.

A kill at any point is safe: before the intent nothing was deleted; after it,
every file it lists was due to go (its rows are in a verified summary, or the
day is past both windows). The next :class:`Store` open finishes an intent whose
process is gone, and running retention again finishes the rest.

Days past both windows lose their detail without a summary being written first:
the summary would be due to go at once, so nothing that is due to be kept is lost.

>>> import tempfile
>>> from perfnb.store import Store
>>> plan = Store(tempfile.mkdtemp()).retention()
>>> plan.delete_detail, plan.bytes_freed
((), 0)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

import pyarrow.fs as pafs

from perfnb.errors import ConfigError, PerfnbError
from perfnb.store.compact import day_files, writer_alive
from perfnb.store.objects import is_object_store, put_whole

if TYPE_CHECKING:
    from perfnb.store.history import Days
    from perfnb.store.store import Store

__all__ = [
    "DEFAULT_DETAIL_DAYS",
    "DEFAULT_SUMMARY_DAYS",
    "INTENT",
    "RetentionPlan",
    "RetentionResult",
    "finish_interrupted",
    "main_retention",
    "plan_retention",
    "retiring_days",
]

DEFAULT_DETAIL_DAYS: Final = 30
DEFAULT_SUMMARY_DAYS: Final = 183
INTENT: Final = "_retention.json"

#: Called with each step as it is taken: ``("summarize" | "compact", day)``,
#: ``("intent", path)``, ``("delete", path)``, ``("done", root)``.
Progress = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :meth:`RetentionPlan.apply` did."""

    deleted_detail: tuple[date, ...]
    deleted_summaries: tuple[date, ...]
    summarized: tuple[date, ...]
    compacted: tuple[date, ...]
    #: Days whose detail was kept although due to go, with the reason.
    blocked: dict[date, str]
    #: Steps that failed without blocking anything (a compaction), with the reason.
    problems: dict[date, str]
    bytes_freed: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "deleted_detail": [d.isoformat() for d in self.deleted_detail],
            "deleted_summaries": [d.isoformat() for d in self.deleted_summaries],
            "summarized": [d.isoformat() for d in self.summarized],
            "compacted": [d.isoformat() for d in self.compacted],
            "blocked": {d.isoformat(): why for d, why in self.blocked.items()},
            "problems": {d.isoformat(): why for d, why in self.problems.items()},
            "bytes_freed": self.bytes_freed,
        }


@dataclass(frozen=True)
class RetentionPlan:
    """What retention would do to a store; nothing is touched until :meth:`apply`.

    ``summarize`` maps each day whose detail goes but whose summary stays, and
    whose summary is missing or stale, to the reason: :meth:`apply` writes and
    verifies those summaries before deleting any of their detail.
    """

    today: date
    detail_days: int
    summary_days: int
    delete_detail: tuple[date, ...]
    delete_summaries: tuple[date, ...]
    summarize: dict[date, str]
    compact: tuple[date, ...]
    detail_bytes: int
    summary_bytes: int
    store: Store = field(repr=False, compare=False)

    @property
    def bytes_freed(self) -> int:
        """Bytes the deletions would free (compaction aside)."""
        return self.detail_bytes + self.summary_bytes

    def keeps_summary(self, day: date) -> bool:
        """Whether ``day`` is inside the summary window."""
        return (self.today - day).days < self.summary_days

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the plan."""
        return {
            "root": self.store.root,
            "today": self.today.isoformat(),
            "detail_days": self.detail_days,
            "summary_days": self.summary_days,
            "delete_detail": [d.isoformat() for d in self.delete_detail],
            "delete_summaries": [d.isoformat() for d in self.delete_summaries],
            "summarize": {d.isoformat(): why for d, why in self.summarize.items()},
            "compact": [d.isoformat() for d in self.compact],
            "detail_bytes": self.detail_bytes,
            "summary_bytes": self.summary_bytes,
            "bytes_freed": self.bytes_freed,
        }

    def apply(self, *, progress: Progress | None = None) -> RetentionResult:
        """Carry the plan out (see the module doc for the order of the steps)."""
        report = progress or _quiet
        history = self.store._history
        blocked: dict[date, str] = {}
        problems: dict[date, str] = {}
        summarized: list[date] = []
        doomed: dict[str, list[str]] = {}
        for day in self.delete_detail:
            directory = history.detail_dir(day)
            names = [i.base_name for i in day_files(history.fs, directory)]
            if self.keeps_summary(day):
                reason = _secure_summary(history, day, summarized, report)
                if reason is None and names != [
                    i.base_name for i in day_files(history.fs, directory)
                ]:
                    reason = "its detail changed while retention ran"
                if reason is not None:
                    blocked[day] = reason
                    continue
            doomed[day.isoformat()] = names
        compacted = []
        for day in self.compact:
            try:
                result = self.store.compact(day)
            except (PerfnbError, OSError) as exc:
                problems[day] = f"compaction failed: {exc}"
                continue
            if result.files_after < result.files_before:
                compacted.append(day)
                report("compact", day.isoformat())
        summaries = [d.isoformat() for d in self.delete_summaries]
        freed = 0
        deleted: list[date] = []
        if doomed or summaries:
            intent = {"detail": doomed, "summaries": summaries, "pid": os.getpid()}
            intent["host"] = socket.gethostname()
            path = _write_intent(history.fs, self.store.root, intent, local=history.local)
            report("intent", path)
            freed = _carry_out(history, doomed, summaries, report)
            history.fs.delete_file(path)
            deleted = [date.fromisoformat(d) for d in doomed]
        report("done", self.store.root)
        return RetentionResult(
            deleted_detail=tuple(deleted),
            deleted_summaries=self.delete_summaries if summaries else (),
            summarized=tuple(summarized),
            compacted=tuple(compacted),
            blocked=blocked,
            problems=problems,
            bytes_freed=freed,
        )


def _quiet(_: str, __: str) -> None:
    return None


def _secure_summary(
    history: Days, day: date, summarized: list[date], report: Progress
) -> str | None:
    """Make sure ``day`` has a verified summary; the reason when it cannot."""
    try:
        if history.stale(day) is not None:
            history.summarize(day)
            summarized.append(day)
            report("summarize", day.isoformat())
        reason = history.verify(day)
    except (PerfnbError, OSError) as exc:
        return f"its summary could not be written: {exc}"
    return None if reason is None else f"its summary did not verify: {reason}"


def _check_days(name: str, value: object, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name}: got {value!r}; expected a whole number of days ≥ {least}")
    return value


def plan_retention(
    store: Store,
    *,
    detail_days: int = DEFAULT_DETAIL_DAYS,
    summary_days: int = DEFAULT_SUMMARY_DAYS,
    today: date | None = None,
) -> RetentionPlan:
    """The plan :meth:`Store.retention` returns (see there)."""
    _check_days("detail_days", detail_days, least=1)
    _check_days("summary_days", summary_days, least=1)
    if summary_days < detail_days:
        raise ConfigError(
            f"summary_days: got {summary_days}; expected at least detail_days ({detail_days}),"
            " since a day's summary stands in for its detail once the detail is gone"
        )
    if today is None:
        today = datetime.now(UTC).date()
    elif not isinstance(today, date) or isinstance(today, datetime):
        raise ConfigError(f"today: got {today!r}; expected a date")
    history = store._history
    fs = history.fs
    delete_detail, compact = [], []
    summarize: dict[date, str] = {}
    detail_bytes = 0
    for day in store.days():
        age = (today - day).days
        files = day_files(fs, history.detail_dir(day))
        if age >= detail_days:
            delete_detail.append(day)
            detail_bytes += sum(i.size or 0 for i in files)
            if age < summary_days:
                try:
                    reason = history.stale(day)
                except (PerfnbError, OSError) as exc:
                    reason = f"its summary cannot be read: {exc}"
                if reason is not None:
                    summarize[day] = reason
        elif age > 0 and len(files) > 1:
            compact.append(day)
    delete_summaries, summary_bytes = [], 0
    for day in history.summary_days():
        if (today - day).days >= summary_days:
            delete_summaries.append(day)
            summary_bytes += fs.get_file_info(history.summary_path(day)).size or 0
    return RetentionPlan(
        today=today,
        detail_days=detail_days,
        summary_days=summary_days,
        delete_detail=tuple(delete_detail),
        delete_summaries=tuple(delete_summaries),
        summarize=summarize,
        compact=tuple(compact),
        detail_bytes=detail_bytes,
        summary_bytes=summary_bytes,
        store=store,
    )


# -- the intent ------------------------------------------------------------------------


def _write_intent(fs: pafs.FileSystem, root: str, intent: dict[str, Any], *, local: bool) -> str:
    final = f"{root}/{INTENT}"
    if is_object_store(fs):
        put_whole(fs, final, json.dumps(intent).encode(), fresh=False)  # one PUT: whole or none
        return final
    temp = f"{root}/.retention.{secrets.token_hex(4)}.tmp"
    with fs.open_output_stream(temp) as stream:
        stream.write(json.dumps(intent).encode())
    if local:
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
    else:
        fs.move(temp, final)
    return final


def retiring_days(fs: pafs.FileSystem, root: str) -> frozenset[date] | None:
    """The days whose detail a running (or interrupted) retention is deleting.

    ``None`` when an intent is there but cannot be read: any day may be going then.
    """
    try:
        with fs.open_input_stream(f"{root}/{INTENT}") as stream:
            intent = json.loads(stream.read().decode())
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError):
        return None
    detail = intent.get("detail") if isinstance(intent, dict) else None
    if not isinstance(detail, dict):
        return None
    try:
        return frozenset(date.fromisoformat(text) for text in detail)
    except (TypeError, ValueError):
        return None


def _remove_empty(fs: pafs.FileSystem, directory: str) -> None:
    """Remove ``directory`` if nothing is left in it (a writer may have added a file).

    Object stores have no directories to remove, only the marker pyarrow may leave,
    and removing that deletes everything under the prefix: a file a writer added
    since the listing would go with it. The marker stays; readers ignore it.
    """
    if is_object_store(fs):
        return
    try:
        if fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            return
        fs.delete_dir(directory)
    except OSError:
        return


def _carry_out(
    history: Days, detail: dict[str, list[str]], summaries: list[str], report: Progress
) -> int:
    """Delete what an intent lists; what is already gone is skipped. Returns bytes freed."""
    fs = history.fs
    freed = 0
    for text, names in detail.items():
        directory = history.detail_dir(date.fromisoformat(text))
        for name in names:
            path = f"{directory}/{name}"
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                continue
            fs.delete_file(path)
            freed += info.size or 0
            report("delete", path)
        _remove_empty(fs, directory)
    for text in summaries:
        day = date.fromisoformat(text)
        path = history.summary_path(day)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            fs.delete_file(path)
            freed += info.size or 0
            report("delete", path)
        _remove_empty(fs, history.summary_dir(day))
    if summaries:  # the index would only ignore them; dropping them frees the space
        history.save_index([date.fromisoformat(text) for text in summaries])
    return freed


def finish_interrupted(history: Days) -> bool:
    """Finish a retention a killed process left half done; whether there was one.

    Only files the intent lists are deleted: each was due to go when it was
    written. An intent whose process still runs is left to it.
    """
    fs = history.fs
    path = f"{history.root}/{INTENT}"
    try:
        with fs.open_input_stream(path) as stream:
            intent = json.loads(stream.read().decode())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        intent = None  # written atomically, so unreadable means damaged: act on nothing
    if isinstance(intent, dict) and writer_alive(intent):
        return False
    if isinstance(intent, dict):
        detail = intent.get("detail")
        summaries = intent.get("summaries")
        if isinstance(detail, dict) and isinstance(summaries, list):
            with contextlib.suppress(OSError, ValueError, TypeError):
                _carry_out(history, detail, summaries, _quiet)
    with contextlib.suppress(OSError):
        fs.delete_file(path)
    return True


# -- the command line ------------------------------------------------------------------


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _span(days: tuple[date, ...] | list[date]) -> str:
    if not days:
        return "-"
    return days[0].isoformat() if len(days) == 1 else f"{days[0]} … {days[-1]}"


def _table(plan: RetentionPlan) -> str:
    lines = [
        f"retention of {plan.store.root} (today {plan.today} UTC; keeping {plan.detail_days}"
        f" days of detail, {plan.summary_days} days of summaries)",
        f"{'step':<32}{'days':>6}  {'size':>9}  which",
    ]
    rows = [
        ("delete detail", plan.delete_detail, _size(plan.detail_bytes)),
        ("write summaries first", sorted(plan.summarize), ""),
        ("delete summaries", plan.delete_summaries, _size(plan.summary_bytes)),
        ("compact closed days", plan.compact, ""),
    ]
    for step, days, size in rows:
        lines.append(f"{step:<32}{len(days):>6}  {size:>9}  {_span(list(days))}")
    return "\n".join(lines)


def main_retention(argv: list[str]) -> int:
    """``perfnb retention --store DIR [--dry-run] [--json] [--detail-days N] [--summary-days N]``.

    Prints the plan as a table (or JSON), then carries it out unless ``--dry-run``.
    Exits 0 when done, 1 when some day kept its detail because its summary could not
    be written or verified, 2 on bad arguments or an unreadable store.

    >>> import tempfile
    >>> main_retention(["--store", tempfile.mkdtemp(), "--dry-run", "--json"])  # doctest: +ELLIPSIS
    {...}
    0
    """
    import argparse

    from perfnb.store.store import Store

    parser = argparse.ArgumentParser(
        prog="perfnb retention",
        description="Delete old detail (once its daily summary is verified) and old summaries.",
    )
    parser.add_argument(
        "--store",
        required=True,
        metavar="DIR",
        help="the store's folder or URI (s3://bucket/prefix)",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--detail-days", type=int, default=DEFAULT_DETAIL_DAYS, metavar="N")
    parser.add_argument("--summary-days", type=int, default=DEFAULT_SUMMARY_DAYS, metavar="N")
    parser.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="act as if it were this day (UTC); default: today",
    )
    args = parser.parse_args(argv)
    try:
        store = Store(args.store)
        plan = store.retention(
            detail_days=args.detail_days, summary_days=args.summary_days, today=args.today
        )
        result = None if args.dry_run else plan.apply()
    except PerfnbError as exc:
        print(f"perfnb retention: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out: dict[str, Any] = {"plan": plan.to_dict(), "dry_run": args.dry_run}
        if result is not None:
            out["result"] = result.to_dict()
        print(json.dumps(out, indent=2))
    else:
        print(_table(plan))
        if result is None:
            print("dry run: nothing changed")
        else:
            print(
                f"deleted the detail of {len(result.deleted_detail)} days and"
                f" {len(result.deleted_summaries)} summaries, freeing {_size(result.bytes_freed)};"
                f" wrote {len(result.summarized)} summaries, compacted {len(result.compacted)} days"
            )
            for day, why in {**result.problems, **result.blocked}.items():
                print(f"  {day}: {why}")
    return 1 if result is not None and result.blocked else 0
