"""The demo app's JSON API: guests, cards, chat, presence, smart polling, admin.

Each endpoint is a method of :class:`Api` taking the request and its
:class:`Context` (tenant and signed-in user). :meth:`Api.routes` wraps them with
what every API request goes through: the load-run tenant from ``X-Perfnb-Run``,
the fault switches, and the mapping of bad input to a 400 that names the field.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from perfnb.demo.db import Conflict, Database
from perfnb.demo.faults import FaultError, Faults
from perfnb.errors import ConfigError
from perfnb.server.auth import PROXY_HEADERS, Authoriser
from perfnb.server.recording import RUN_ID_PATTERN

__all__ = ["FAULTY_ROUTES", "RUN_HEADER", "SESSION_COOKIE", "Api", "Context"]

SESSION_COOKIE: Final = "perfnb_demo_session"
RUN_HEADER: Final = "x-perfnb-run"
_RUN_ID: Final = re.compile(RUN_ID_PATTERN)
_PRESENCE: Final = frozenset({"active", "idle", "away"})
#: Largest page of a list endpoint, and most cards in one bulk import.
MAX_PAGE: Final = 200
MAX_BULK: Final = 1000
#: Polling intervals the front end is told to use (ms): busy, and idle or hidden.
POLL_MS: Final = 2000
IDLE_POLL_MS: Final = 5000

Endpoint = Callable[[Request, "Context"], Awaitable[Response]]


class BadRequest(ConfigError):
    """Bad input from a client: answered 400 with the field named."""

    def __init__(self, field: str, value: object, accepted: str) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"{field}: got {shown}; {accepted}")
        self.field = field
        self.accepted = accepted


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows about its request beyond the request itself."""

    tenant: str
    user: dict[str, Any] | None


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadRequest("body", raw[:40].decode("utf-8", "replace"), "expected JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body", data, "expected a JSON object")
    return data


def _text(data: Mapping[str, Any], name: str, *, max_len: int, required: bool) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(name, None, f"a string of 1 to {max_len} characters is required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise BadRequest(name, value, f"expected a string of 1 to {max_len} characters")
    return value


def _int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(name, raw, f"expected an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise BadRequest(name, raw, f"expected an integer from {low} to {high}")
    return value


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(name, raw, "expected an integer id") from None


def run_id_of(value: str, *, field: str) -> str:
    """Check a load-run id (tenant key): 1–64 of letters, digits, ``.``, ``_``, ``:``, ``-``."""
    if not _RUN_ID.fullmatch(value):
        raise BadRequest(field, value, "expected 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


#: Route templates the request-path faults may hit (the ``routes`` switch checks these).
FAULTY_ROUTES: Final = (
    "/api/guests",
    "/api/login",
    "/api/logout",
    "/api/cards",
    "/api/cards/bulk",
    "/api/cards/export",
    "/api/cards/{card_id}",
    "/api/conversations",
    "/api/conversations/{conversation_id}/messages",
    "/api/presence",
    "/api/poll",
)


class Api:
    """The endpoints, bound to one database, one set of fault switches and one authoriser."""

    def __init__(self, *, db: Database, faults: Faults, admin: Authoriser) -> None:
        self.db = db
        self.faults = faults
        self.admin = admin

    # -- wiring ---------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for every API endpoint."""

        def api(path: str, endpoint: Endpoint, methods: list[str], **how: bool) -> Route:
            return Route(path, self._wrap(path, endpoint, **how), methods=methods)

        return [
            api("/api/health", self.health, ["GET"], faulty=False, login=False),
            api("/api/guests", self.create_guest, ["POST"], login=False),
            api("/api/login", self.login, ["POST"], login=False),
            api("/api/logout", self.logout, ["POST"], login=False),
            api("/api/cards", self.list_cards, ["GET"]),
            api("/api/cards", self.create_card, ["POST"]),
            api("/api/cards/bulk", self.bulk_import, ["POST"]),
            api("/api/cards/export", self.export_cards, ["GET"]),
            api("/api/cards/{card_id}", self.get_card, ["GET"]),
            api("/api/cards/{card_id}", self.update_card, ["PUT"]),
            api("/api/cards/{card_id}", self.delete_card, ["DELETE"]),
            api("/api/conversations", self.list_conversations, ["GET"]),
            api("/api/conversations", self.create_conversation, ["POST"]),
            api("/api/conversations/{conversation_id}/messages", self.list_messages, ["GET"]),
            api("/api/conversations/{conversation_id}/messages", self.post_message, ["POST"]),
            api("/api/presence", self.set_presence, ["POST"]),
            api("/api/presence", self.list_presence, ["GET"]),
            api("/api/poll", self.poll, ["GET"]),
            api("/api/admin/faults", self.get_faults, ["GET"], admin=True),
            api("/api/admin/faults", self.set_faults, ["POST"], admin=True),
            api("/api/admin/faults", self.reset_faults, ["DELETE"], admin=True),
            api("/api/admin/runs", self.list_runs, ["GET"], admin=True),
            api("/api/admin/runs/{run_id}", self.delete_run, ["DELETE"], admin=True),
        ]

    def _wrap(
        self,
        template: str,
        endpoint: Endpoint,
        *,
        faulty: bool = True,
        login: bool = True,
        admin: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        if admin:
            faulty = login = False

        async def handler(request: Request) -> Response:
            marked = self.faults.serving(template if faulty else "")
            try:
                return await serve(request)
            finally:
                self.faults.served(marked)

        async def serve(request: Request) -> Response:
            if admin and not self._admin_allowed(request):
                return Response(status_code=401)  # bare, like the feed: reveals nothing
            tenant = ""  # real traffic; a load run gets its own tenant
            raw_run = request.headers.get(RUN_HEADER)
            if raw_run is not None:
                try:
                    tenant = run_id_of(raw_run, field="X-Perfnb-Run")
                except BadRequest as exc:
                    return _error(400, str(exc), field=exc.field)
            state = self.faults.state
            if faulty and state.applies_to(template):
                self.faults.leak()
                if state.timeout_ms > 0:
                    await asyncio.sleep(state.timeout_ms / 1000.0)
                if self.faults.should_fail():
                    return _error(500, "injected fault", fault="error_rate")
            try:
                user = None
                if login:
                    user = await self._session_user(request, tenant)
                    if user is None:
                        return _error(401, "sign in first: POST /api/guests or /api/login")
                return await endpoint(request, Context(tenant=tenant, user=user))
            except BadRequest as exc:
                return _error(400, str(exc), field=exc.field)

        handler.__name__ = getattr(endpoint, "__name__", "handler")
        return handler

    def _admin_allowed(self, request: Request) -> bool:
        auth = request.headers.get("authorization")
        proxied = any(name.encode() in PROXY_HEADERS for name in request.headers)
        return self.admin.allows(
            client=request.client.host if request.client else None,
            authorization=auth,
            query_token=request.query_params.get("token"),
            proxied=proxied,
        )

    async def _session_user(self, request: Request, tenant: str) -> dict[str, Any] | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > 128:
            return None
        return await self.db.call(self.db.session_user, tenant, token)

    @staticmethod
    def _signed_in(response: Response, token: str) -> Response:
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", path="/")
        return response

    # -- health, guests, sessions ---------------------------------------------

    async def health(self, request: Request, ctx: Context) -> Response:
        """``GET /api/health``: up, and which faults are on."""
        state = self.faults.as_json()
        active = {k: v for k, v in state.items() if v and k not in ("routes", "leaked_bytes")}
        return JSONResponse({"status": "ok", "faults": active})

    async def create_guest(self, request: Request, ctx: Context) -> Response:
        """``POST /api/guests`` ``{"name"?}``: a guest account, signed in at once."""
        data = await _body(request)
        name = _text(data, "name", max_len=40, required=False) or "guest"
        user, code, token = await self.db.call(self.db.create_guest, ctx.tenant, name)
        return self._signed_in(JSONResponse({"user": user, "code": code}, status_code=201), token)

    async def login(self, request: Request, ctx: Context) -> Response:
        """``POST /api/login`` ``{"user_id", "code"}``: a new session for a guest."""
        data = await _body(request)
        user_id = _text(data, "user_id", max_len=64, required=True) or ""
        code = _text(data, "code", max_len=64, required=True) or ""
        found = await self.db.call(self.db.login, ctx.tenant, user_id, code)
        if found is None:
            return _error(401, "unknown user_id or wrong code")
        user, token = found
        return self._signed_in(JSONResponse({"user": user}), token)

    async def logout(self, request: Request, ctx: Context) -> Response:
        """``POST /api/logout``: end the session (204 even without one)."""
        token = request.cookies.get(SESSION_COOKIE)
        if token and len(token) <= 128:
            await self.db.call(self.db.logout, ctx.tenant, token)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- cards ----------------------------------------------------------------

    async def list_cards(self, request: Request, ctx: Context) -> Response:
        """``GET /api/cards?limit=&after=``: a page of cards in id order."""
        limit = _int_param(request, "limit", default=50, low=1, high=MAX_PAGE)
        after = _int_param(request, "after", default=0, low=0, high=2**62)
        cards = await self.db.call(self.db.list_cards, ctx.tenant, limit=limit, after=after)
        nxt = cards[-1]["id"] if len(cards) == limit else None
        return JSONResponse({"cards": cards, "next": nxt})

    async def create_card(self, request: Request, ctx: Context) -> Response:
        """``POST /api/cards`` ``{"title", "body"?}``."""
        assert ctx.user is not None  # login=True routes always have one
        data = await _body(request)
        title = _text(data, "title", max_len=200, required=True) or ""
        body = _body_text(data)
        card = await self.db.call(self.db.create_card, ctx.tenant, ctx.user["id"], title, body)
        return JSONResponse(card, status_code=201)

    async def bulk_import(self, request: Request, ctx: Context) -> Response:
        """``POST /api/cards/bulk`` ``{"cards": [{"title", "body"?}, ...]}``."""
        assert ctx.user is not None
        data = await _body(request)
        items = data.get("cards")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK:
            raise BadRequest("cards", items, f"expected a list of 1 to {MAX_BULK} cards")
        rows: list[tuple[str, str]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(f"cards[{i}]", item, "expected an object with a title")
            try:
                title = _text(item, "title", max_len=200, required=True) or ""
                rows.append((title, _body_text(item)))
            except BadRequest as exc:
                raise BadRequest(
                    f"cards[{i}].{exc.field}", item.get(exc.field), exc.accepted
                ) from None
        cards = await self.db.call(self.db.bulk_create, ctx.tenant, ctx.user["id"], rows)
        return JSONResponse(
            {"created": len(cards), "ids": [c["id"] for c in cards]}, status_code=201
        )

    async def export_cards(self, request: Request, ctx: Context) -> Response:
        """``GET /api/cards/export?format=json|csv``: every card at once."""
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise BadRequest("format", fmt, "expected 'json' or 'csv'")
        cards = await self.db.call(self.db.export_cards, ctx.tenant)
        if fmt == "json":
            return JSONResponse({"count": len(cards), "cards": cards})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(cards[0]) if cards else ["id"])
        writer.writeheader()
        writer.writerows(cards)
        return Response(out.getvalue(), media_type="text/csv")

    async def get_card(self, request: Request, ctx: Context) -> Response:
        """``GET /api/cards/{card_id}``."""
        card_id = _path_id(request, "card_id")
        card = await self.db.call(self.db.get_card, ctx.tenant, card_id)
        return JSONResponse(card) if card else _error(404, f"no card {card_id}")

    async def update_card(self, request: Request, ctx: Context) -> Response:
        """``PUT /api/cards/{card_id}`` ``{"title"?, "body"?, "version"?}``; 409 when stale."""
        card_id = _path_id(request, "card_id")
        data = await _body(request)
        title = _text(data, "title", max_len=200, required=False)
        body = _body_text(data) if "body" in data else None
        version = data.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise BadRequest("version", version, "expected the integer version you edited")
        try:
            card = await self.db.call(
                self.db.update_card, ctx.tenant, card_id, title=title, body=body, version=version
            )
        except Conflict as exc:
            return _error(409, "the card changed since you read it", current=exc.current)
        return JSONResponse(card) if card else _error(404, f"no card {card_id}")

    async def delete_card(self, request: Request, ctx: Context) -> Response:
        """``DELETE /api/cards/{card_id}``."""
        card_id = _path_id(request, "card_id")
        if await self.db.call(self.db.delete_card, ctx.tenant, card_id):
            return Response(status_code=204)
        return _error(404, f"no card {card_id}")

    # -- conversations, messages, presence ----------------------------------------

    async def list_conversations(self, request: Request, ctx: Context) -> Response:
        """``GET /api/conversations?limit=``: newest first."""
        limit = _int_param(request, "limit", default=50, low=1, high=MAX_PAGE)
        convs = await self.db.call(self.db.list_conversations, ctx.tenant, limit=limit)
        return JSONResponse({"conversations": convs})

    async def create_conversation(self, request: Request, ctx: Context) -> Response:
        """``POST /api/conversations`` ``{"title"}``."""
        assert ctx.user is not None
        title = _text(await _body(request), "title", max_len=200, required=True) or ""
        conv = await self.db.call(self.db.create_conversation, ctx.tenant, ctx.user["id"], title)
        return JSONResponse(conv, status_code=201)

    async def list_messages(self, request: Request, ctx: Context) -> Response:
        """``GET /api/conversations/{conversation_id}/messages?after=&limit=``."""
        conv = _path_id(request, "conversation_id")
        limit = _int_param(request, "limit", default=100, low=1, high=MAX_PAGE)
        after = _int_param(request, "after", default=0, low=0, high=2**62)
        msgs = await self.db.call(self.db.list_messages, ctx.tenant, conv, limit=limit, after=after)
        if msgs is None:
            return _error(404, f"no conversation {conv}")
        return JSONResponse({"messages": msgs})

    async def post_message(self, request: Request, ctx: Context) -> Response:
        """``POST /api/conversations/{conversation_id}/messages`` ``{"body"}``."""
        assert ctx.user is not None
        conv = _path_id(request, "conversation_id")
        body = _text(await _body(request), "body", max_len=4000, required=True) or ""
        msg = await self.db.call(self.db.post_message, ctx.tenant, conv, ctx.user["id"], body)
        if msg is None:
            return _error(404, f"no conversation {conv}")
        return JSONResponse(msg, status_code=201)

    async def set_presence(self, request: Request, ctx: Context) -> Response:
        """``POST /api/presence`` ``{"status": active|idle|away, "location"?}``."""
        assert ctx.user is not None
        data = await _body(request)
        status = data.get("status", "active")
        if status not in _PRESENCE:
            raise BadRequest("status", status, f"expected one of {sorted(_PRESENCE)}")
        location = data.get("location", "")
        if not isinstance(location, str) or len(location) > 200:
            raise BadRequest("location", location, "expected a string of at most 200 characters")
        seen = await self.db.call(
            self.db.set_presence, ctx.tenant, ctx.user["id"], status, location
        )
        return JSONResponse(seen)

    async def list_presence(self, request: Request, ctx: Context) -> Response:
        """``GET /api/presence``: who is around."""
        return JSONResponse({"users": await self.db.call(self.db.list_presence, ctx.tenant)})

    async def poll(self, request: Request, ctx: Context) -> Response:
        """``GET /api/poll?since=``: changes after a cursor, and how to poll next.

        The answer carries ``runaway`` (the polling-runaway fault) so the front end
        can pick it up at run time, and the intervals it should keep to.
        """
        since: int | None = None
        if "since" in request.query_params:
            since = _int_param(request, "since", default=0, low=0, high=2**62)
        limit = _int_param(request, "limit", default=200, low=1, high=1000)
        out = await self.db.call(self.db.changes, ctx.tenant, since, limit=limit)
        out.update(
            runaway=self.faults.state.polling_runaway,
            interval_ms=POLL_MS,
            idle_interval_ms=IDLE_POLL_MS,
        )
        return JSONResponse(out)

    # -- admin ----------------------------------------------------------------

    async def get_faults(self, request: Request, ctx: Context) -> Response:
        """``GET /api/admin/faults``."""
        return JSONResponse(self.faults.as_json())

    async def set_faults(self, request: Request, ctx: Context) -> Response:
        """``POST /api/admin/faults`` with some switches: 400 naming the bad one."""
        try:
            return JSONResponse(self.faults.update(await _body(request)))
        except FaultError as exc:
            return _error(400, str(exc), field=exc.field)

    async def reset_faults(self, request: Request, ctx: Context) -> Response:
        """``DELETE /api/admin/faults``: every switch off, leaked memory freed."""
        return JSONResponse(self.faults.reset())

    async def list_runs(self, request: Request, ctx: Context) -> Response:
        """``GET /api/admin/runs``: load-run tenants still holding data."""
        return JSONResponse({"runs": await self.db.call(self.db.tenants)})

    async def delete_run(self, request: Request, ctx: Context) -> Response:
        """``DELETE /api/admin/runs/{run_id}``: remove a load run's tenant."""
        run_id = run_id_of(request.path_params["run_id"], field="run_id")
        removed = await self.db.call(self.db.delete_tenant, run_id)
        return JSONResponse({"run_id": run_id, "removed": removed})


def _body_text(data: Mapping[str, Any]) -> str:
    value = data.get("body", "")
    if not isinstance(value, str) or len(value) > 100_000:
        raise BadRequest("body", value, "expected a string of at most 100000 characters")
    return value
