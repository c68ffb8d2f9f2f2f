"""perfnb's own cost as a share of server time: over a stream's frame, and from the real
middleware's own overhead records."""

from __future__ import annotations

import doctest
import importlib
import math
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perfnb.analysis.overhead import overhead_share, overhead_total
from perfnb.errors import ConfigError
from perfnb.schema import Record
from perfnb.server import PerfnbMiddleware
from perfnb.stream import Stream

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _req(at: float, route: str, ms: float) -> Record:
    return {
        "time": T0 + timedelta(seconds=at),
        "source": "server",
        "kind": "http",
        "route": route,
        "method": "GET",
        "status": 200,
        "duration_ms": ms,
    }


def _cost(at: float, us: float) -> Record:
    return {
        "time": T0 + timedelta(seconds=at),
        "source": "perfnb",
        "kind": "overhead",
        "name": "middleware_us",
        "value": us,
        "unit": "us",
        "tags": {"requests": "3"},
    }


def _frame(records: list[Record]) -> object:
    stream = Stream(max_age=10**9, clock=lambda: T0.timestamp() + 10)
    stream.extend(records)
    return stream.frame()


def test_share_per_second_per_route_and_in_total() -> None:
    frame = _frame(
        [
            _req(0.1, "/a", 1.0),
            _req(0.5, "/a", 1.0),
            _req(0.7, "/b", 8.0),
            _cost(0.99, 10.0),
            _req(1.2, "/a", 2.0),
            _cost(1.99, 30.0),
        ]
    )
    per_second = overhead_share(frame, by="second")  # type: ignore[arg-type]
    assert per_second["requests"].tolist() == [3, 1]
    assert per_second["perfnb_ms"].tolist() == pytest.approx([0.03, 0.03])
    assert per_second["share"].tolist() == pytest.approx([0.03 / 10.0, 0.03 / 2.0])
    per_route = overhead_share(frame, by="route").set_index("route")  # type: ignore[arg-type]
    assert per_route.loc["/a", "share"] == pytest.approx((0.01 + 0.01 + 0.03) / 4.0)
    assert per_route.loc["/b", "share"] == pytest.approx(0.01 / 8.0)
    assert overhead_total(frame) == pytest.approx(0.06 / 12.0)  # type: ignore[arg-type]


def test_requests_far_from_any_overhead_record_are_not_charged() -> None:
    # monitoring was off for a while: no overhead records near those requests
    frame = _frame([_req(0.5, "/a", 1.0), _cost(0.9, 10.0), _req(8.0, "/a", 1.0)])
    assert overhead_share(frame, by="total")["requests"].tolist() == [1]  # type: ignore[arg-type]


def test_no_data_gives_empty_tables_and_nan() -> None:
    frame = _frame([_req(0.5, "/a", 1.0)])
    assert overhead_share(frame).empty  # type: ignore[arg-type]
    assert math.isnan(overhead_total(frame))  # type: ignore[arg-type]


def test_bad_options_name_the_field() -> None:
    frame = _frame([])
    with pytest.raises(ConfigError, match="by='minute'"):
        overhead_share(frame, by="minute")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tolerance=0"):
        overhead_share(frame, tolerance=0)  # type: ignore[arg-type]


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hi")


def test_the_real_middlewares_overhead_records_give_a_positive_share() -> None:
    stream = Stream()
    app = PerfnbMiddleware(Starlette(routes=[Route("/hi", _hello)]), sink=stream.push)
    transport = httpx.ASGITransport(app=app)

    async def drive() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            deadline = time.monotonic() + 20.0
            # the middleware writes its overhead record once a second, on the request path
            while time.monotonic() < deadline:
                for _ in range(50):
                    assert (await client.get("/hi")).status_code == 200
                kinds = stream.frame()["kind"].astype(str)
                if (kinds == "overhead").sum() >= 2:
                    return
            raise AssertionError("no overhead records within 20 s")

    import asyncio

    asyncio.run(drive())
    share = overhead_total(stream.frame())
    # how big depends on the machine (a stall inside perfnb's own work on a busy one
    # can outweigh this tiny handler); that there is a finite, positive figure does not
    assert math.isfinite(share)
    assert share > 0
    per_route = overhead_share(stream.frame(), by="route")
    assert per_route["route"].tolist() == ["/hi"]


@pytest.mark.parametrize("module", ["perfnb.analysis.overhead"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
