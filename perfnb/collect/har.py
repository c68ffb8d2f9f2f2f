"""Browser HAR files (HTTP Archive 1.2) as records of perfnb's schema.

A HAR is what a browser's developer tools (or Playwright's ``record_har_path``)
save of a session. :func:`read_har` turns it into records, so a post-mortem can
put a user's captured session beside the store's server-side records.

Each entry of ``log.entries`` becomes one ``source="client"`` record, of kind
``http`` (``websocket`` for Chrome's WebSocket entries, which carry
``_webSocketMessages``):

- ``time``: ``startedDateTime`` in UTC; ``duration_ms``: the entry's ``time``;
- ``ttfb_ms``: ``blocked + dns + connect + send + wait`` of ``timings``, each part
  only when it is known (HAR writes ``-1`` for "does not apply"; ``ssl`` is part
  of ``connect`` already);
- ``method``; ``status``, or 0 with an ``error_type`` for a request that failed
  or was blocked (``connect``, ``timeout``, ``blocked``, ``cancelled`` or
  ``network``, from Chrome's ``_error`` or Playwright's ``_failureText``, which
  is kept in ``error_message``);
- ``request_bytes`` / ``response_bytes``: the body sizes (``bodySize``, when
  known);
- ``server_ms``, ``app_ms``, ``db_ms``: from the response's ``Server-Timing``
  header, as the httpx collector reads it
  (:func:`perfnb.collect.httpx.split_server_time`);
- ``route``: what ``route_for(url)`` gives, else the URL path with id-like
  segments collapsed to ``{id}`` (:func:`perfnb.collect.httpx.default_route`),
  never the query string;
- ``service``: the ``service`` argument, else the URL's ``host[:port]``;
- ``run_id`` from an ``X-Perfnb-Run`` request header (load traffic);
- ``tags``: ``host``, and Chrome's ``_resourceType`` (``resource``) and
  ``_fromCache`` (``cache``) when present.

Each page of ``log.pages`` becomes ``navigation`` records: one per known page
timing, ``name="onContentLoad"`` or ``"onLoad"`` with the milliseconds from the
page's start as ``value`` (``unit="ms"``); the ``onLoad`` record also carries it
as ``duration_ms``. Their route is the route of the page's first document
request.

Nothing secret is kept: no header values (cookies, ``Authorization``), no query
strings, no user or password of a URL, and URLs inside error texts lose their
query strings.

What is refused and what is skipped: a file that is not JSON, or whose ``log``,
``log.entries`` or ``log.pages`` is missing or of the wrong type, raises
:class:`~perfnb.errors.ConfigError` naming the field (``log.entries``). An entry
with a missing or wrong-typed field (``log.entries[3].time``) raises the same
way, unless ``skip_bad=True``: then it is skipped and counted, and one
:class:`~perfnb.errors.PerfnbWarning` gives the count and the first reason.
Entries of URLs that never touch the network (``data:``, ``blob:``,
``about:``, ``chrome-extension:`` …) are always left out, silently.

>>> har = {"log": {"version": "1.2", "entries": [{
...     "startedDateTime": "2026-01-01T10:00:00.000+01:00", "time": 12.5,
...     "request": {"method": "GET", "url": "https://shop.test/cards/42?token=x",
...                 "headers": [], "bodySize": 0},
...     "response": {"status": 200, "bodySize": 512,
...                  "headers": [{"name": "Server-Timing", "value": "app;dur=4"}]},
...     "timings": {"blocked": -1, "dns": -1, "connect": -1, "send": 0.5, "wait": 6}}]}}
>>> (record,) = read_har(har)
>>> record["time"].isoformat(), record["route"], record["status"], record["ttfb_ms"]
('2026-01-01T09:00:00+00:00', '/cards/{id}', 200, 6.5)
>>> record["app_ms"], record["service"]
(4.0, 'shop.test')
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final
from urllib.parse import urlsplit

from perfnb.collect.httpx import default_route, split_server_time
from perfnb.collect.servertiming import parse_server_timing
from perfnb.errors import ConfigError, PerfnbWarning, RecordError
from perfnb.schema import MAX_TAG_VALUE, Record, validate_record

__all__ = ["read_har"]

#: Longest route, method or run id kept (as the httpx collector keeps them).
MAX_ROUTE: Final = 256
#: Longest error message kept.
MAX_ERROR_MESSAGE: Final = 300
#: URL schemes that go over the network; entries of any other are left out.
_NETWORK: Final = frozenset({"http", "https", "ws", "wss"})
_TIMING_PARTS: Final = ("blocked", "dns", "connect", "send", "wait")
_URL: Final = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/?#@]*@)?([^\s?#]*)[^\s]*")
# Chrome's net error names, by what the schema's error_type calls them.
_NET_ERRORS: Final = (
    ("timeout", ("TIMED_OUT", "TIMEOUT")),
    ("blocked", ("BLOCKED",)),
    ("cancelled", ("ABORTED", "CANCELED", "CANCELLED")),
    ("connect", ("CONNECTION_REFUSED", "NAME_NOT_RESOLVED", "ADDRESS_UNREACHABLE",
                 "CONNECTION_FAILED", "CONNECTION_RESET", "CONNECTION_CLOSED",
                 "INTERNET_DISCONNECTED", "NAME_RESOLUTION_FAILED")),
)  # fmt: skip

RouteFor = Callable[[str], str | None]


class _Bad(Exception):
    """One field of the document is missing or of the wrong type; ``str`` names it."""


def _field(obj: Mapping[str, Any], key: str, path: str, kinds: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise _Bad(f"{path}.{key}: missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise _Bad(f"{path}.{key}: got {_show(value)}; expected {_NAMES.get(names, names)}")
    return value


_NAMES: Final = {"dict": "an object", "list": "an array", "str": "a string",
                 "int or float": "a number"}  # fmt: skip


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(obj: Mapping[str, Any], key: str, path: str) -> float | None:
    """A HAR number: ``None`` when absent or negative (HAR's ``-1`` for n/a)."""
    if obj.get(key) is None:
        return None
    value = _field(obj, key, path, (int, float))
    return float(value) if value >= 0 and value == value and value != float("inf") else None


def _time(text: str, path: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _Bad(f"{path}: got {_show(text)}; expected an ISO 8601 time") from None
    if moment.utcoffset() is None:
        raise _Bad(f"{path}: got {_show(text)}; expected a time with a UTC offset")
    return moment.astimezone(UTC)


def _headers(message: Mapping[str, Any], path: str, name: str) -> list[str]:
    """Values of the headers called ``name`` (lower case) in a request or response."""
    headers = message.get("headers")
    if headers is None:
        return []
    if not isinstance(headers, list):
        raise _Bad(f"{path}.headers: got {_show(headers)}; expected an array")
    out = []
    for index, header in enumerate(headers):
        if not isinstance(header, dict):
            raise _Bad(f"{path}.headers[{index}]: got {_show(header)}; expected an object")
        key, value = header.get("name"), header.get("value")
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            out.append(value)
    return out


def _scrub(text: str) -> str:
    """``text`` with URLs cut to scheme, host and path (no user info, no query)."""
    text = _URL.sub(lambda m: m.group(1) + m.group(3), text)
    return text[:MAX_ERROR_MESSAGE]


def _error_type(text: str) -> str:
    upper = text.upper()
    for kind, needles in _NET_ERRORS:
        if any(n in upper for n in needles):
            return kind
    return "network"


def _checked(record: dict[str, Any], path: str) -> Record:
    # Values of the right JSON type can still fall outside the schema (a body
    # size beyond int64): name the entry, like any other bad field.
    try:
        return validate_record(record)
    except RecordError as exc:
        raise _Bad(f"{path}: {exc}") from None


def _host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal, as a URL writes it
    return (host if parts.port is None else f"{host}:{parts.port}")[:MAX_TAG_VALUE]


class _Reader:
    def __init__(self, *, service: str | None, route_for: RouteFor | None) -> None:
        self.service = service
        self.route_for = route_for

    def route(self, url: str) -> str:
        if self.route_for is not None:
            route: object = self.route_for(url)  # a user's function: check what it gives
            if route is not None:
                if not isinstance(route, str):
                    msg = f"route_for: returned {_show(route)} for a URL; expected a str or None"
                    raise ConfigError(msg)
                return route[:MAX_ROUTE]
        return default_route(urlsplit(url).path or "/")

    def entry(self, entry: Any, path: str) -> Record | None:
        if not isinstance(entry, dict):
            raise _Bad(f"{path}: got {_show(entry)}; expected an object")
        started = _time(_field(entry, "startedDateTime", path, str), f"{path}.startedDateTime")
        request = _field(entry, "request", path, dict)
        url = _field(request, "url", f"{path}.request", str)
        scheme = urlsplit(url).scheme.lower()
        if scheme not in _NETWORK:
            return None
        method = _field(request, "method", f"{path}.request", str)
        response = _field(entry, "response", path, dict)
        status = _field(response, "status", f"{path}.response", (int, float))
        if "time" not in entry:
            raise _Bad(f"{path}.time: missing")
        duration = _number(entry, "time", path)
        record: dict[str, Any] = {
            "time": started,
            "source": "client",
            "kind": "http",
            "service": self.service if self.service is not None else _host(url),
            "route": self.route(url),
            "method": method.upper()[:MAX_ROUTE],
            "status": int(status) if 0 < status < 2**15 else 0,
        }
        if duration is not None:
            record["duration_ms"] = round(duration, 3)
        timings = entry.get("timings")
        if timings is not None:
            if not isinstance(timings, dict):
                raise _Bad(f"{path}.timings: got {_show(timings)}; expected an object")
            parts = [_number(timings, k, f"{path}.timings") for k in _TIMING_PARTS]
            known = [p for p in parts if p is not None]
            if known:
                record["ttfb_ms"] = round(sum(known), 3)
        for part, column, message in (
            ("request", "request_bytes", request),
            ("response", "response_bytes", response),
        ):
            size = _number(message, "bodySize", f"{path}.{part}")
            if size is not None:
                record[column] = int(size)
        timing = _headers(response, f"{path}.response", "server-timing")
        if timing:
            server, app, db = split_server_time(parse_server_timing(timing), duration)
            for column, value in (("server_ms", server), ("app_ms", app), ("db_ms", db)):
                if value is not None:
                    record[column] = round(value, 3)
        run = _headers(request, f"{path}.request", "x-perfnb-run")
        if run and run[0]:
            record["run_id"] = run[0][:MAX_ROUTE]
        failure = (
            response.get("_error") or entry.get("_failureText") or response.get("_failureText")
        )
        if record["status"] == 0:
            text = failure if isinstance(failure, str) and failure else "no response"
            record["error_type"] = _error_type(text)
            record["error_message"] = _scrub(text)
        tags = {"host": _host(url)}
        for key, tag in (("_resourceType", "resource"), ("_fromCache", "cache")):
            value = entry.get(key)
            if isinstance(value, str) and value:
                tags[tag] = value[:MAX_TAG_VALUE]
        record["tags"] = tags
        messages = entry.get("_webSocketMessages")
        if isinstance(messages, list):
            record["kind"], record["method"] = "websocket", "WS"
            kinds = [m.get("type") for m in messages if isinstance(m, dict)]
            record["messages_in"] = min(kinds.count("receive"), 2**31 - 1)
            record["messages_out"] = min(kinds.count("send"), 2**31 - 1)
        return _checked(record, path)

    def page(self, page: Any, path: str, url: str | None) -> list[Record]:
        if not isinstance(page, dict):
            raise _Bad(f"{path}: got {_show(page)}; expected an object")
        started = _time(_field(page, "startedDateTime", path, str), f"{path}.startedDateTime")
        timings = page.get("pageTimings")
        if timings is None:
            return []
        if not isinstance(timings, dict):
            raise _Bad(f"{path}.pageTimings: got {_show(timings)}; expected an object")
        out = []
        for name in ("onContentLoad", "onLoad"):
            value = _number(timings, name, f"{path}.pageTimings")
            if value is None:
                continue
            record: dict[str, Any] = {
                "time": started,
                "source": "client",
                "kind": "navigation",
                "name": name,
                "value": round(value, 3),
                "unit": "ms",
            }
            if name == "onLoad":
                record["duration_ms"] = round(value, 3)
            if url is not None:
                record["service"] = self.service if self.service is not None else _host(url)
                record["route"] = self.route(url)
                record["tags"] = {"host": _host(url)}
            elif self.service is not None:
                record["service"] = self.service
            out.append(_checked(record, path))
        return out


def _page_urls(entries: list[Any]) -> dict[str, str]:
    """The URL of each page (by id): its first document request, else its first request."""
    first: dict[str, str] = {}
    documents: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        ref, request = entry.get("pageref"), entry.get("request")
        url = request.get("url") if isinstance(request, dict) else None
        if isinstance(ref, str) and isinstance(url, str):
            first.setdefault(ref, url)
            if entry.get("_resourceType") == "document":
                documents.setdefault(ref, url)
    return first | documents


def _load(source: str | os.PathLike[str] | IO[str] | IO[bytes] | Mapping[str, Any]) -> Any:
    if not isinstance(source, str | os.PathLike) and not hasattr(source, "read"):
        return source  # a parsed document (checked by the caller)
    try:
        if isinstance(source, str | os.PathLike):
            name = os.fspath(source)
            try:
                with open(name, "rb") as handle:
                    return json.load(handle)
            except OSError as exc:
                raise ConfigError(f"HAR: cannot read {name!r}: {exc}") from exc
        return json.load(source)
    except json.JSONDecodeError as exc:
        msg = f"HAR: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        raise ConfigError(msg) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"HAR: not UTF-8 text ({exc.reason})") from None


def read_har(
    source: str | os.PathLike[str] | IO[str] | IO[bytes] | Mapping[str, Any],
    *,
    service: str | None = None,
    route_for: RouteFor | None = None,
    skip_bad: bool = False,
) -> list[Record]:
    """Records of a HAR file (a path, an open file, or the parsed document), in time order.

    See the module documentation for what each entry and page becomes, and for
    what raises and what is skipped. ``route_for(url)`` may return a route
    template for a request URL, or ``None`` for the default (the path with ids
    collapsed). Every record passes :func:`perfnb.schema.validate_record`.

    >>> read_har({"log": {"entries": {}}})
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: HAR: log.entries: got {}; expected an array
    """
    document = _load(source)
    reader = _Reader(service=service, route_for=route_for)
    try:
        if not isinstance(document, Mapping):
            raise _Bad(f"the document: got {_show(document)}; expected an object with 'log'")
        log = _field(document, "log", "HAR", dict)
        entries = _field(log, "entries", "log", list)
        pages = log.get("pages")
        if pages is not None and not isinstance(pages, list):
            raise _Bad(f"log.pages: got {_show(pages)}; expected an array")
    except _Bad as exc:
        raise ConfigError(f"HAR: {str(exc).removeprefix('HAR.')}") from None
    records: list[Record] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        path = f"log.entries[{index}]"
        try:
            record = reader.entry(entry, path)
        except _Bad as exc:
            if not skip_bad:
                raise ConfigError(f"HAR: {exc}") from None
            skipped.append(str(exc))
            continue
        if record is not None:
            records.append(record)
    urls = _page_urls(entries)
    for index, page in enumerate(pages or []):
        path = f"log.pages[{index}]"
        ref = page.get("id") if isinstance(page, dict) else None
        try:
            records.extend(reader.page(page, path, urls.get(ref) if isinstance(ref, str) else None))
        except _Bad as exc:
            if not skip_bad:
                raise ConfigError(f"HAR: {exc}") from None
            skipped.append(str(exc))
    if skipped:
        warnings.warn(
            PerfnbWarning(
                f"read_har: skipped {len(skipped)} bad entries or pages; the first: {skipped[0]}"
            ),
            stacklevel=2,
        )
    records.sort(key=lambda r: r["time"])
    return records
