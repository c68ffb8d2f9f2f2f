from __future__ import annotations

import doctest
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfnb.collect.servertiming as servertiming
from perfnb.collect import ServerTimingMetric, format_server_timing, parse_server_timing
from perfnb.errors import ConfigError, PerfnbError

M = ServerTimingMetric
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

CASES: list[tuple[str, list[ServerTimingMetric]]] = [
    ("", []),
    ("app", [M("app")]),
    ("app;dur=12.5", [M("app", 12.5)]),
    ('app;dur=12.5;desc="handler time"', [M("app", 12.5, "handler time")]),
    ("cache;desc=hit", [M("cache", 0.0, "hit")]),
    ("a, b;dur=2", [M("a"), M("b", 2.0)]),
    # optional whitespace everywhere the grammar allows it
    ("  a ;  dur = 3 ; desc = x  ,b", [M("a", 3.0, "x"), M("b")]),
    ("a\t;\tdur=1", [M("a", 1.0)]),
    # case-insensitive parameter names, the first duplicate wins
    ("a;DUR=7;dur=9", [M("a", 7.0)]),
    ("a;Desc=one;desc=two", [M("a", 0.0, "one")]),
    ("a;dur=abc;dur=5", [M("a", 0.0)]),
    # dur: leading number as browsers read it, else 0
    ("a;dur=1ms", [M("a", 1.0)]),
    ("a;dur=.5", [M("a", 0.5)]),
    ("a;dur=1.", [M("a", 1.0)]),
    ("a;dur=-2.5", [M("a", -2.5)]),
    ("a;dur=1e3", [M("a", 1000.0)]),
    ("a;dur=1_000", [M("a", 1.0)]),
    ("a;dur=", [M("a")]),
    ("a;dur", [M("a")]),
    ("a;dur=nan", [M("a")]),
    ("a;dur=inf", [M("a")]),
    ("a;dur=1e999", [M("a")]),
    ('a;dur="12"', [M("a", 12.0)]),
    # quoted strings with backslash escapes, commas and semicolons inside
    (r'a;desc="say \"hi\""', [M("a", 0.0, 'say "hi"')]),
    (r'a;desc="back\\slash"', [M("a", 0.0, "back\\slash")]),
    ('a;desc="x, y; z", b', [M("a", 0.0, "x, y; z"), M("b")]),
    ('a;desc=""', [M("a")]),
    # unknown parameters are ignored
    ("a;foo=bar;dur=1", [M("a", 1.0)]),
    # metric names are case-sensitive and duplicates are kept
    ("DB;dur=1, db;dur=2, db;dur=3", [M("DB", 1.0), M("db", 2.0), M("db", 3.0)]),
    # empty list elements
    ("a, , ,b", [M("a"), M("b")]),
    (",,,", []),
    # a malformed metric is skipped, the rest kept
    ("abc def;dur=1, ok;dur=2", [M("ok", 2.0)]),
    ("a=1, b", [M("b")]),
    (";dur=2, b", [M("b")]),
    ('"quoted", b', [M("b")]),
    ("über;dur=1, b", [M("b")]),
    # a malformed parameter is ignored, its metric kept
    ("a;dur=5 junk;desc=x", [M("a", 0.0, "x")]),
    ("a;;dur=2", [M("a", 2.0)]),
    ("a;=3;dur=4", [M("a", 4.0)]),
    ("a;dur=1=2", [M("a")]),
    # an unterminated quoted string runs to the end of the value
    ('a;desc="x, b;dur=1', [M("a")]),
    ('a;desc="x\\', [M("a")]),
    # garbage yields no entries
    ("<html><body>oops</body></html>", []),
    ("\x00\x01\x02", []),
    ("hello world", []),
    ("\r\n", []),
]


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_parse_table(header: str, expected: list[ServerTimingMetric]) -> None:
    assert parse_server_timing(header) == expected


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_general_parser_agrees_with_table(header: str, expected: list[ServerTimingMetric]) -> None:
    out: list[ServerTimingMetric] = []
    servertiming._parse_general(header, out)
    assert out == expected


def test_several_values_are_joined() -> None:
    assert parse_server_timing(["app;dur=1", "db;dur=2, total;dur=3"]) == [
        M("app", 1.0),
        M("db", 2.0),
        M("total", 3.0),
    ]


def test_a_quote_does_not_leak_into_the_next_value() -> None:
    assert parse_server_timing(['a;desc="open', "b;dur=1"]) == [M("a"), M("b", 1.0)]


def test_bytes_and_junk_in_the_iterable() -> None:
    values: list[object] = [b"a;dur=1", bytearray(b"b"), 42, None, "c"]
    assert parse_server_timing(values) == [M("a", 1.0), M("b"), M("c")]  # type: ignore[arg-type]


def test_an_iterable_that_fails_keeps_what_was_read() -> None:
    def values() -> Iterator[str]:
        yield "a;dur=1"
        raise RuntimeError("connection lost")

    assert parse_server_timing(values()) == [M("a", 1.0)]


def test_not_iterable_gives_nothing() -> None:
    assert parse_server_timing(3) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header",
    [
        "a;" * 50_000 + " x",
        '"' * 100_000,
        'a;desc="' + '\\"' * 50_000,
        "a;b=" * 30_000,
        ("a" + " " * 10) * 10_000,
        "a;desc=" + "x" * 200_000,
    ],
    ids=["params", "quotes", "escapes", "equals", "spaces", "long-token"],
)
def test_hostile_headers_finish(header: str) -> None:
    # Guards against catastrophic backtracking: pytest-timeout fails this if a pattern
    # goes exponential; the result only has to be a list.
    assert isinstance(parse_server_timing(header), list)


def _check_result(result: list[ServerTimingMetric]) -> None:
    for metric in result:
        assert isinstance(metric, ServerTimingMetric)
        assert servertiming._TOKEN_RE.fullmatch(metric.name)
        assert math.isfinite(metric.dur)
        assert isinstance(metric.desc, str)


@given(st.text())
def test_random_text_never_raises(text: str) -> None:
    _check_result(parse_server_timing(text))


@given(st.binary())
def test_random_bytes_never_raise(data: bytes) -> None:
    _check_result(parse_server_timing(data.decode("latin-1")))
    _check_result(parse_server_timing([data]))  # type: ignore[list-item]


@given(st.lists(st.text(), max_size=5))
def test_random_lists_never_raise(values: list[str]) -> None:
    _check_result(parse_server_timing(values))


# Text close to the grammar exercises the fast paths and their edges.
PIECES = ["a", "Db", "dur", "DUR", "desc", "Desc", "duration", "1.5", "2e1", "-3", "_", "x y"]
PIECES += [";", ";", ",", ",", "=", "=", " ", "\t", '"', '"', "\\", "@", ""]
grammarish = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)


@given(grammarish)
@settings(max_examples=1000)
def test_fast_paths_agree_with_general_parser(text: str) -> None:
    out: list[ServerTimingMetric] = []
    servertiming._parse_general(text, out)
    assert parse_server_timing(text) == out


names = st.text(alphabet=TCHARS, min_size=1, max_size=20)
durations = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
descs = st.text(
    alphabet=st.characters(codec="latin-1", exclude_categories=("Cc",), exclude_characters="\x7f"),
    max_size=30,
)


@given(st.lists(st.tuples(names, durations, descs), max_size=6))
def test_format_then_parse_round_trips(metrics: list[tuple[str, float, str]]) -> None:
    header = format_server_timing(metrics)
    expected = [M(n, float(f"{d:.3f}") + 0.0, s) for n, d, s in metrics]
    assert parse_server_timing(header) == expected


@pytest.mark.parametrize(
    ("metrics", "header"),
    [
        ([], ""),
        ([("app", 1)], "app;dur=1"),
        ([("app", 1.23456)], "app;dur=1.235"),
        ([("app", 2.5000)], "app;dur=2.5"),
        ([("app", -0.0001)], "app;dur=0"),
        ([("app", 0.0)], "app;dur=0"),
        ([("app", 1.0, "")], "app;dur=1"),
        ([("cache", 0.0, "hit")], "cache;dur=0;desc=hit"),
        ([("q", 1.0, 'say "hi"')], r'q;dur=1;desc="say \"hi\""'),
        ([("q", 1.0, "a\\b c")], r'q;dur=1;desc="a\\b c"'),
        ([M("db", 3.25, "2 queries"), M("app", 4)], 'db;dur=3.25;desc="2 queries", app;dur=4'),
        # characters a header cannot carry are replaced, never passed through
        ([("q", 1.0, "x\r\nSet-Cookie: a=b")], 'q;dur=1;desc="x??Set-Cookie: a=b"'),
        ([("q", 1.0, "snow ☃")], 'q;dur=1;desc="snow ?"'),
    ],
)
def test_format_table(metrics: list[tuple[str, float]], header: str) -> None:
    assert format_server_timing(metrics) == header


@pytest.mark.parametrize("name", ["", "my metric", "db;dur=1", "a,b", "ünïcode", 'q"', 3])
def test_format_refuses_names_that_are_not_tokens(name: object) -> None:
    with pytest.raises(ConfigError, match="is not an HTTP token") as info:
        format_server_timing([(name, 1.0)])  # type: ignore[list-item]
    assert repr(name) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PerfnbError)


@pytest.mark.parametrize("dur", [math.nan, math.inf, -math.inf, "1", None, True])
def test_format_refuses_durations_that_are_not_finite_numbers(dur: object) -> None:
    with pytest.raises(ConfigError, match=r"'app': dur .* finite number"):
        format_server_timing([("app", dur)])  # type: ignore[list-item]


def test_format_refuses_a_desc_that_is_not_a_string() -> None:
    with pytest.raises(ConfigError, match="desc 5 is not a string"):
        format_server_timing([("app", 1.0, 5)])  # type: ignore[list-item]


def test_doctests() -> None:
    assert doctest.testmod(servertiming).failed == 0
    import perfnb.collect

    assert doctest.testmod(perfnb.collect).failed == 0
