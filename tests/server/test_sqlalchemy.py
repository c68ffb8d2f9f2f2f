"""SQLAlchemy adapter: query time into the request's db span, pool state as db records."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import sqlalchemy
from sqlalchemy.pool import QueuePool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from perfnb.collect.servertiming import parse_server_timing
from perfnb.schema import Record, validate_record
from perfnb.server import PerfnbMiddleware, instrument_engine


def _engine(tmp_path: Any) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'app.db'}", poolclass=QueuePool, pool_size=3
    )


def test_query_time_goes_into_the_request(tmp_path: Any) -> None:
    engine = _engine(tmp_path)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("create table t (x integer)"))
    handle = instrument_engine(engine)

    def query(request: Request) -> Response:  # sync: runs in the thread pool
        with engine.connect() as conn:
            for _ in range(3):
                conn.execute(sqlalchemy.text("select count(*) from t")).scalar()
        return PlainTextResponse("ok")

    records: list[Record] = []
    app = PerfnbMiddleware(Starlette(routes=[Route("/q", query)]), sink=records.append)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await client.get("/q")

    response = asyncio.run(run())
    app.flush()
    metrics = {m.name: m.dur for m in parse_server_timing(response.headers["server-timing"])}
    assert set(metrics) == {"app", "db", "perfnb"}
    assert 0 < metrics["db"] <= metrics["app"]
    (http,) = [r for r in records if r["kind"] == "http"]
    assert http["db_ms"] > 0
    pool = {r["name"]: r for r in records if r["kind"] == "db"}
    assert {"pool_size", "pool_checked_out"} <= set(pool)
    for record in pool.values():
        validate_record(record)
    assert pool["pool_size"]["value"] == 3
    assert pool["pool_checked_out"]["value"] == 1  # the request's own connection
    assert handle.queries == 3
    handle.remove()


def test_failing_query_is_counted_and_outside_requests_is_harmless(tmp_path: Any) -> None:
    engine = _engine(tmp_path)
    handle = instrument_engine(engine)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("select 1"))
        with contextlib.suppress(sqlalchemy.exc.OperationalError):
            conn.execute(sqlalchemy.text("select * from missing_table"))
    assert (handle.queries, handle.errors) == (2, 1)
    handle.remove()
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("select 1"))
    assert handle.queries == 2
