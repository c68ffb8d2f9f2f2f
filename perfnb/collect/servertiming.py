"""Read and write the W3C ``Server-Timing`` header.

The middleware writes ``app``, ``db`` and friends on every response with
:func:`format_server_timing`; the client side reads the header of any server, in
any language, with :func:`parse_server_timing` and splits the time it observed
into server and network time.

The grammar (W3C Server Timing, on top of RFC 9110 lists)::

    Server-Timing = #metric
    metric        = token *( OWS ";" OWS param )
    param         = token [ OWS "=" OWS ( token / quoted-string ) ]

Parsing is lenient where browsers are and never raises:

- several header values are parsed one after another (as if joined by commas);
- parameter names are case-insensitive and the first occurrence of a parameter
  wins; a parameter that does not fit the grammar is ignored;
- ``dur`` is read like a browser reads a floating-point number (the leading number
  of the value); a missing, invalid or non-finite ``dur`` is 0;
- a metric whose name is not a token (``hello world``) is skipped and the rest of
  the header kept, so garbage yields no entries.

>>> app, db = parse_server_timing('app;dur=12.5;desc="handler", db;dur=3')
>>> app
ServerTimingMetric(name='app', dur=12.5, desc='handler')
>>> db.dur
3.0
>>> format_server_timing([("app", 12.5), ServerTimingMetric("db", 3.25, "2 queries")])
'app;dur=12.5, db;dur=3.25;desc="2 queries"'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final, NamedTuple

from perfnb.errors import ConfigError

__all__ = ["ServerTimingMetric", "format_server_timing", "parse_server_timing"]


class ServerTimingMetric(NamedTuple):
    """One Server-Timing metric: a name, a duration in milliseconds and a description.

    >>> ServerTimingMetric("db", 3.5)
    ServerTimingMetric(name='db', dur=3.5, desc='')
    """

    name: str
    dur: float = 0.0
    desc: str = ""


# RFC 9110 token characters. Possessive quantifiers keep every pattern linear on
# hostile input: nothing here can backtrack into what it has already consumed.
_TCHAR: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN_RE: Final = re.compile(rf"{_TCHAR}+")
_OWS: Final = r"[ \t]*+"
_QUOTED: Final = r'"((?:[^"\\]++|\\.)*+)"'

# The metric name and the whitespace around it.
_HEAD: Final = re.compile(rf"{_OWS}({_TCHAR}++){_OWS}")
# One well-formed parameter, starting at its ";" and ending before the next ";" or ",".
_PARAM: Final = re.compile(
    rf";{_OWS}({_TCHAR}++)(?:{_OWS}={_OWS}(?:({_TCHAR}++)|{_QUOTED}))?{_OWS}(?=[;,]|\Z)",
    re.DOTALL,
)
# What is left of a malformed parameter or metric: up to the next ";"/"," or ","
# outside a quoted string. An unterminated quoted string runs to the end.
_SKIP_PARAM: Final = re.compile(r'(?:[^",;]++|"(?:[^"\\]++|\\.)*+"?)*+', re.DOTALL)
_SKIP_METRIC: Final = re.compile(r'(?:[^",]++|"(?:[^"\\]++|\\.)*+"?)*+,?', re.DOTALL)
_UNESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)
# The leading number of a value, as the HTML rules for floating-point numbers read it.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# A whole header value that follows the grammar (the usual case), and a lexer that
# is only correct on such text: it returns (name, "", "", "") for a metric name and
# ("", key, token, quoted) for a parameter, skipping the whitespace between.
_METRIC_SRC: Final = (
    rf"{_OWS}{_TCHAR}++{_OWS}"
    rf'(?:;{_OWS}{_TCHAR}++(?:{_OWS}={_OWS}(?:{_TCHAR}++|"(?:[^"\\]++|\\.)*+"))?{_OWS})*+'
)
_STRICT: Final = re.compile(rf"{_METRIC_SRC}(?:,{_METRIC_SRC})*+\Z", re.DOTALL)
_LEX: Final = re.compile(
    rf"(?:^|,){_OWS}({_TCHAR}++)|;{_OWS}({_TCHAR}++)(?:{_OWS}={_OWS}(?:({_TCHAR}++)|{_QUOTED}))?",
    re.DOTALL,
)
# The shape nearly every server writes (perfnb's formatter among them): up to four
# `name;dur=<decimal>[;desc=<token or quoted string without escapes>]` metrics.
# One anchored match in C captures every field, so the common header costs no
# scan and no Python loop over lexemes. The digit counts are bounded so that
# float() can never overflow to infinity on this path.
_SIMPLE_MAX: Final = 4
_SIMPLE_ITEM: Final = (
    rf"{_OWS}({_TCHAR}++);dur=(-?[0-9]{{1,15}}+(?:\.[0-9]{{1,15}}+)?+)"
    rf'(?:;desc=(?:({_TCHAR}++)|"([^"\\]*+)"))?+{_OWS}'
)
_SIMPLE: Final = re.compile(
    _SIMPLE_ITEM + f"(?:,{_SIMPLE_ITEM}" * (_SIMPLE_MAX - 1) + ")?+" * (_SIMPLE_MAX - 1)
)
# tuple.__new__ skips the NamedTuple's Python-level __new__: half the cost of
# building a metric.
_new_tuple: Final = tuple.__new__


def _duration(value: str) -> float:
    # float() is a C call and agrees with the HTML rules on every string it accepts,
    # except digit-separating underscores and inf/nan (which give 0 either way).
    if "_" not in value:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return number if math.isfinite(number) else 0.0
    match = _NUMBER.match(value)
    if match is None:
        return 0.0
    number = float(match.group())
    return number if math.isfinite(number) else 0.0


def _parse_wellformed(text: str, out: list[ServerTimingMetric]) -> None:
    """Parse text that :data:`_STRICT` accepted: one ``findall`` lexes it in C.

    This runs on the response path of every instrumented request, hence the
    inlined metric construction.
    """
    metric, new, duration = ServerTimingMetric, _new_tuple, _duration
    name = ""
    dur: str | None = None
    desc: str | None = None
    for head, key, token, quoted in _LEX.findall(text):
        if head:
            if name:
                out.append(new(metric, (name, 0.0 if dur is None else duration(dur), desc or "")))
            name, dur, desc = head, None, None
        elif key == "dur" or key.lower() == "dur":
            if dur is None:
                dur = token or quoted
        elif desc is None and (key == "desc" or key.lower() == "desc"):
            desc = token or (_UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted)
    if name:
        out.append(new(metric, (name, 0.0 if dur is None else duration(dur), desc or "")))


def _parse_general(text: str, out: list[ServerTimingMetric]) -> None:
    pos = 0
    end = len(text)
    while pos < end:
        head = _HEAD.match(text, pos)
        if head is None or (head.end() < end and text[head.end()] not in ";,"):
            # Not a token where the name should be, or junk after the name: skip the
            # whole metric so one bad entry does not take the others with it.
            pos = _SKIP_METRIC.match(text, pos).end()  # type: ignore[union-attr]
            continue
        name = head.group(1)
        pos = head.end()
        dur: str | None = None
        desc: str | None = None
        while pos < end and text[pos] == ";":
            param = _PARAM.match(text, pos)
            if param is None:
                pos = _SKIP_PARAM.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            pos = param.end()
            key = param.group(1).lower()
            if key == "dur":
                if dur is None:
                    dur = _value(param)
            elif key == "desc" and desc is None:
                desc = _value(param)
        out.append(
            _new_tuple(
                ServerTimingMetric, (name, 0.0 if dur is None else _duration(dur), desc or "")
            )
        )
        pos += 1  # past the "," (or past the end)


def _parse_simple(match: re.Match[str], out: list[ServerTimingMetric]) -> None:
    """Metrics from a :data:`_SIMPLE` match: four groups per metric, unused ones None."""
    metric, new = ServerTimingMetric, _new_tuple
    groups = match.groups()
    for index in range(0, 4 * _SIMPLE_MAX, 4):
        name = groups[index]
        if name is None:
            return
        desc = groups[index + 2] or groups[index + 3] or ""
        out.append(new(metric, (name, float(groups[index + 1]), desc)))


def _parse_one(text: str, out: list[ServerTimingMetric]) -> None:
    simple = _SIMPLE.fullmatch(text)
    if simple is not None:
        _parse_simple(simple, out)
    elif _STRICT.match(text) is not None:
        _parse_wellformed(text, out)
    else:
        _parse_general(text, out)


def _value(param: re.Match[str]) -> str:
    token = param.group(2)
    if token is not None:
        return token
    quoted = param.group(3)
    if quoted is None:
        return ""
    return _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted


def parse_server_timing(values: str | Iterable[str]) -> list[ServerTimingMetric]:
    """Parse one or several ``Server-Timing`` header values; never raises.

    ``values`` is a header value or an iterable of them (``response.headers
    .get_list("server-timing")``); byte strings are read as latin-1 and anything
    else is ignored. Durations are in milliseconds, 0 when absent or invalid.

    >>> [(m.name, m.dur, m.desc) for m in parse_server_timing(["cache;desc=hit", "t;DUR=7;dur=9"])]
    [('cache', 0.0, 'hit'), ('t', 7.0, '')]
    >>> parse_server_timing("<html> not a header")
    []
    """
    out: list[ServerTimingMetric] = []
    if isinstance(values, str):
        _parse_one(values, out)
        return out
    items: Iterable[object] = values  # callers pass bytes or junk too; check each one
    try:
        for value in items:
            if isinstance(value, str):
                _parse_one(value, out)
            elif isinstance(value, bytes | bytearray):
                _parse_one(bytes(value).decode("latin-1"), out)
    except Exception:
        # A caller's iterable that fails half way: keep what was read. The parser
        # sits on the response path of instrumented clients and must not raise.
        return out
    return out


# Characters a quoted-string may carry (RFC 9110 qdtext and quoted-pair); anything
# else (CR, LF, NUL, DEL, code points above U+00FF) would break the header.
_NOT_QUOTABLE: Final = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


def _bad_name(name: object) -> ConfigError:
    return ConfigError(
        f"Server-Timing metric name {name!r} is not an HTTP token: "
        "use letters, digits and !#$%&'*+-.^_`|~ only"
    )


def _bad_dur(name: str, dur: object) -> ConfigError:
    return ConfigError(
        f"Server-Timing metric {name!r}: dur {dur!r} is not a finite number of milliseconds"
    )


def _format_desc(desc: str) -> str:
    if _TOKEN_RE.fullmatch(desc):
        return desc
    desc = _NOT_QUOTABLE.sub("?", desc)
    return '"' + desc.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_server_timing(metrics: Iterable[ServerTimingMetric | tuple[str, float]]) -> str:
    """Write metrics as one ``Server-Timing`` header value.

    Each item is a :class:`ServerTimingMetric` or a ``(name, dur)`` /
    ``(name, dur, desc)`` tuple. Durations are written in milliseconds with up to
    three decimals; a description is written bare when it is a token, quoted
    otherwise, with characters a header cannot carry replaced by ``?``.

    Raises :class:`~perfnb.errors.ConfigError` (a ``ValueError``) for a name that is
    not an HTTP token or a duration that is not a finite number.

    >>> format_server_timing([("app", 1.23456), ("cache", 0, "hit")])
    'app;dur=1.235, cache;dur=0;desc=hit'
    >>> format_server_timing([("my metric", 1)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: Server-Timing metric name 'my metric' is not an HTTP token: ...
    """
    parts: list[str] = []
    for metric in metrics:
        name = metric[0]
        # isalnum() answers for the usual names (app, db, total) at C speed.
        if not isinstance(name, str) or not (
            (name.isascii() and name.isalnum()) or _TOKEN_RE.fullmatch(name)
        ):
            raise _bad_name(name)
        dur = metric[1]
        if type(dur) is not float and (isinstance(dur, bool) or not isinstance(dur, int)):
            raise _bad_dur(name, dur)
        if not math.isfinite(dur):
            raise _bad_dur(name, dur)
        number = f"{dur:.3f}".rstrip("0").rstrip(".")
        if number == "-0":
            number = "0"
        if len(metric) > 2 and (desc := metric[2]):
            if not isinstance(desc, str):
                raise ConfigError(f"Server-Timing metric {name!r}: desc {desc!r} is not a string")
            parts.append(f"{name};dur={number};desc={_format_desc(desc)}")
        else:
            parts.append(f"{name};dur={number}")
    return ", ".join(parts)
