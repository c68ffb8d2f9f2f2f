"""Serving the browser beacon and putting it on the app's pages.

:class:`BeaconScript` is a pure ASGI wrapper, installed *outside* perfnb's
middleware, that does three things and nothing else:

- serves the built script (``perfnb/server/static/beacon.js``) at ``path``
  (default ``/_perfnb/beacon.js``), cacheable for a year under a versioned URL;
- writes the script tag into the app's full HTML pages (``text/html``, status
  200, not compressed, with a ``</head>``), just before ``</head>``; the tag
  carries the page config (the monitor's control state, the intake's address
  and caps) in a ``data-perfnb`` attribute, so the beacon needs no request to
  learn it. Pages are not touched while monitoring is off;
- answers every request that carried a browser batch (``X-Perfnb-Beacon``) with
  an ``X-Perfnb-Control`` header holding the current control state, so open pages
  learn of an off switch, a new kind selection or frame sampling from responses
  they were getting anyway.

>>> from starlette.applications import Starlette
>>> from perfnb.server import PerfnbMiddleware
>>> inner = PerfnbMiddleware(Starlette(), service="shop")
>>> app = BeaconScript(inner, monitor=inner.monitor)
>>> app.path
'/_perfnb/beacon.js'

Templates that render their own pages (and apps that turn injection off) put the
tag in themselves with :func:`script_tag`.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any, Final, TypedDict, Unpack

from perfnb.errors import ConfigError
from perfnb.server.monitor import Monitor

__all__ = [
    "BEACON_PATH",
    "CONTROL_HEADER",
    "BeaconOptions",
    "BeaconPages",
    "BeaconScript",
    "beacon_source",
    "eligible_headers",
    "script_tag",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the script is served by default.
BEACON_PATH: Final = "/_perfnb/beacon.js"
#: Response header telling a page with the beacon what the monitor now wants.
CONTROL_HEADER: Final = "X-Perfnb-Control"

_STATIC: Final = Path(__file__).parent / "static" / "beacon.js"
_BEACON_HEADER: Final = b"x-perfnb-beacon"
_HEAD_END: Final = re.compile(rb"</head\s*>", re.IGNORECASE)
_PNB: Final = "-pnb"


def beacon_source() -> bytes:
    """The built beacon script shipped inside the package.

    >>> beacon_source().startswith(b"/*! perfnb beacon")
    True
    """
    return _STATIC.read_bytes()


def _control_doc(monitor: Monitor, frames: bool) -> dict[str, object]:
    control = monitor.control
    kinds = None if control.kinds is None else sorted(control.kinds)
    return {"enabled": control.enabled, "kinds": kinds, "frames": frames}


def _check_options(sample: float, memory_every: float, path: str, header_bytes: int) -> None:
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1:
        msg = f"sample: got {sample!r}; expected a number between 0 and 1 (share of page views)"
        raise ConfigError(msg)
    if isinstance(memory_every, bool) or not isinstance(memory_every, int | float):
        msg = f"memory_every: got {memory_every!r}; expected seconds (a number ≥ 0)"
        raise ConfigError(msg)
    if memory_every < 0:
        msg = f"memory_every: got {memory_every!r}; expected seconds (a number ≥ 0)"
        raise ConfigError(msg)
    if isinstance(header_bytes, bool) or not isinstance(header_bytes, int) or header_bytes < 256:
        msg = f"header_bytes: got {header_bytes!r}; expected an integer ≥ 256 (bytes)"
        raise ConfigError(msg)
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "?#\"'<>"):
        msg = f"path: got {path!r}; expected an absolute path such as {BEACON_PATH!r}"
        raise ConfigError(msg)


def script_tag(
    monitor: Monitor,
    *,
    path: str = BEACON_PATH,
    sample: float = 1.0,
    frames: bool = False,
    memory_every: float = 10.0,
    header_bytes: int = 4096,
    version: str | None = None,
) -> str:
    """The ``<script>`` tag that loads the beacon with the page config for ``monitor``.

    ``sample`` is the share of page views that run the beacon (decided once per
    page view in the browser; the monitor's own ``sample`` then thins records on
    arrival). ``frames`` turns frame-rate sampling on. ``memory_every`` is the
    least number of seconds between two heap / DOM-size samples. ``header_bytes``
    caps the ``X-Perfnb-Beacon`` value on the app's requests (at most the
    intake's own cap): reverse proxies refuse long header lines (nginx: 8 KB),
    so the default stays well below. ``version`` versions the script URL
    (defaults to a hash of the shipped script).

    >>> m = Monitor()
    >>> tag = script_tag(m, version="v1")
    >>> tag.startswith('<script src="/_perfnb/beacon.js?v=v1" data-perfnb="{')
    True
    """
    _check_options(sample, memory_every, path, header_bytes)
    limits = monitor.beacon_limits
    config: dict[str, object] = {
        **_control_doc(monitor, frames),
        "sample": sample,
        "prefix": monitor.prefix,
        "endpoint": monitor.prefix.rstrip("/") + "/beacon",
        "header": min(header_bytes, limits.header_bytes),
        "records": limits.records,
        "memory_every": memory_every,
    }
    if version is None:
        version = hashlib.blake2b(beacon_source(), digest_size=6).hexdigest()
    data = html.escape(json.dumps(config, separators=(",", ":")), quote=True)
    # A classic (blocking) script in <head>: it must wrap fetch and XHR before the
    # app's own scripts make their first requests. The versioned URL is cached.
    return f'<script src="{path}?v={version}" data-perfnb="{data}"></script>'


class BeaconOptions(TypedDict, total=False):
    """The options of :class:`BeaconPages` and the wrappers built on it."""

    path: str
    inject: bool
    sample: float
    frames: bool
    memory_every: float
    header_bytes: int
    max_html_bytes: int


class BeaconPages:
    """What the ASGI and WSGI wrappers share: the script, its tag and the control value.

    ``sample``, ``memory_every`` and ``header_bytes`` as for :func:`script_tag`;
    :attr:`frames` may be flipped at run time (open pages learn it from their next
    batch's response). HTML bodies larger than ``max_html_bytes`` are passed on
    untouched rather than held in memory.
    """

    def __init__(
        self,
        *,
        monitor: Monitor,
        path: str = BEACON_PATH,
        inject: bool = True,
        sample: float = 1.0,
        frames: bool = False,
        memory_every: float = 10.0,
        header_bytes: int = 4096,
        max_html_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        _check_options(sample, memory_every, path, header_bytes)
        self.monitor = monitor
        self.path = path
        self.inject = inject
        self.sample = float(sample)
        #: Frame-rate sampling asked of the pages (runs only while this is on).
        self.frames = frames
        self.memory_every = float(memory_every)
        self.header_bytes = header_bytes
        self.max_html_bytes = max_html_bytes
        self._script: bytes | None = None
        self._version = ""

    def _source(self) -> bytes:
        # Read once, on the first request that needs it: nothing at import or build time.
        if self._script is None:
            self._script = beacon_source()
            self._version = hashlib.blake2b(self._script, digest_size=6).hexdigest()
        return self._script

    def tag(self) -> str:
        """The script tag as it is written into pages now."""
        self._source()
        return script_tag(
            self.monitor,
            path=self.path,
            sample=self.sample,
            frames=self.frames,
            memory_every=self.memory_every,
            header_bytes=self.header_bytes,
            version=self._version,
        )

    def control_value(self) -> bytes:
        """The ``X-Perfnb-Control`` value: ``{"enabled", "kinds", "frames"}`` as JSON."""
        doc = _control_doc(self.monitor, self.frames)
        return json.dumps(doc, separators=(",", ":")).encode("ascii")

    def etag_suffix(self) -> bytes:
        """What injected pages add to the app's ETag: it changes whenever the tag does."""
        return (_PNB + hashlib.blake2b(self.tag().encode(), digest_size=4).hexdigest()).encode()

    def rewrite(self, page: bytes) -> bytes | None:
        """``page`` with the tag before ``</head>``; None for fragments and pages that load it."""
        if self.path.encode() in page:
            return None  # the page includes the beacon itself
        found = _HEAD_END.search(page)
        if found is None:
            return None  # a fragment (HTMX, partials), not a page
        return page[: found.start()] + self.tag().encode() + page[found.start() :]

    def script_response(
        self, method: str, query: bytes, if_none_match: bytes | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body answering a request for the script itself."""
        if method not in ("GET", "HEAD"):
            body = b"method not allowed"
            return 405, [*_plain_headers(body), (b"allow", b"GET, HEAD")], body
        script = self._source()
        etag = f'"{self._version}"'.encode()
        versioned = f"v={self._version}".encode() in query
        cache = b"public, max-age=31536000, immutable" if versioned else b"no-cache"
        headers = [(b"etag", etag), (b"cache-control", cache)]
        if if_none_match is not None and etag in if_none_match:
            return 304, headers, b""
        headers += [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"content-length", str(len(script)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        return 200, headers, b"" if method == "HEAD" else script


class BeaconScript(BeaconPages):
    """Pure ASGI wrapper serving the beacon, injecting its tag, answering with control state.

    Install it outermost, around :class:`~perfnb.server.PerfnbMiddleware` (which
    takes the batches out of the requests): ``BeaconScript(PerfnbMiddleware(app,
    monitor=m), monitor=m)``. ``inject=False`` only serves the script (put
    :func:`script_tag` in your templates). The options are :class:`BeaconPages`'.
    WSGI apps use :class:`~perfnb.server.beaconwsgi.BeaconScriptWSGI`.

    >>> from starlette.applications import Starlette
    >>> m = Monitor()
    >>> app = BeaconScript(Starlette(), monitor=m, sample=0.5)
    >>> app.header_bytes
    4096
    >>> app.frames = True
    """

    def __init__(self, app: ASGIApp, *, monitor: Monitor, **options: Unpack[BeaconOptions]) -> None:
        super().__init__(monitor=monitor, **options)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == self.path:
            await self._serve(scope, send)
            return
        carried = False
        for name, _ in scope.get("headers") or ():
            if name == _BEACON_HEADER:
                carried = True
                break
        injecting = self.inject and scope.get("method") == "GET" and self.monitor.enabled
        if not carried and not injecting:
            await self.app(scope, receive, send)
            return
        if injecting:
            scope = self._unconditional(scope)
        if carried:
            send = self._with_control(send)
        if injecting:
            send = _Injector(self, send).send
        await self.app(scope, receive, send)

    def _with_control(self, send: Send) -> Send:
        async def with_control(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = self.control_value()
                headers = [*message.get("headers", ()), (b"x-perfnb-control", value)]
                message = {**message, "headers": headers}
            await send(message)

        return with_control

    def _unconditional(self, scope: Scope) -> Scope:
        """Adjust the request so the app's own caching logic still works with injection.

        The app compares ``If-None-Match`` with its own ETag, but the browser holds
        the ETag of the injected page (``"<app's>-pnb<hash of the tag>"``). When the
        tag is still the same, the app may answer 304; otherwise it must send the
        page again. ``pathsend`` is hidden so bodies pass through this wrapper.
        """
        headers = scope.get("headers") or []
        extensions = scope.get("extensions") or {}
        suffix = None
        changed = False
        out = []
        for name, value in headers:
            if name == b"if-none-match" and _PNB.encode() in value:
                suffix = suffix or self.etag_suffix()
                value = value.replace(suffix + b'"', b'"')
                changed = True
            out.append((name, value))
        if not changed and "http.response.pathsend" not in extensions:
            return scope
        scope = dict(scope)
        scope["headers"] = out
        if "http.response.pathsend" in extensions:
            scope["extensions"] = {
                k: v for k, v in extensions.items() if k != "http.response.pathsend"
            }
        return scope

    async def _serve(self, scope: Scope, send: Send) -> None:
        if_none_match = None
        for name, value in scope.get("headers") or ():
            if name == b"if-none-match":
                if_none_match = value
        status, headers, body = self.script_response(
            scope.get("method", ""), scope.get("query_string", b""), if_none_match
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _plain_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]


def _eligible(message: Message) -> bool:
    """A full HTML page we may rewrite: 200, ``text/html``, not encoded, not a range."""
    return message.get("status") == 200 and eligible_headers(message.get("headers", ()))


def eligible_headers(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a 200 response with these headers is an HTML page the tag may go into."""
    html_type = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-type":
            lowered = value.lower()
            html_type = lowered.startswith(b"text/html") and b"utf-16" not in lowered
        elif lname == b"content-range" or (
            lname == b"content-encoding" and value.strip().lower() != b"identity"
        ):
            return False
    return html_type


class _Injector:
    """Holds an HTML response until its body is complete, then writes the tag into it."""

    __slots__ = ("chunks", "held", "owner", "passing", "size", "upstream")

    def __init__(self, owner: BeaconScript, upstream: Send) -> None:
        self.owner = owner
        self.upstream = upstream
        self.held: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.passing = False

    async def send(self, message: Message) -> None:
        if self.passing:
            await self.upstream(message)
            return
        mtype = message["type"]
        if mtype == "http.response.start":
            if _eligible(message):
                self.held = message
                return
            if message.get("status") == 304:
                message = self._with_etag(message)
            self.passing = True
            await self.upstream(message)
            return
        if self.held is None or mtype != "http.response.body":
            await self._release(more=True)
            await self.upstream(message)
            return
        body = message.get("body", b"")
        self.chunks.append(body)
        self.size += len(body)
        if self.size > self.owner.max_html_bytes:
            await self._release(more=bool(message.get("more_body")))
            return
        if message.get("more_body"):
            return
        page = b"".join(self.chunks)
        start = self.held
        self.held = None
        self.chunks = []
        self.passing = True
        new = self.owner.rewrite(page)
        if new is None:
            await self.upstream(start)
            await self.upstream({"type": "http.response.body", "body": page})
            return
        headers = [
            (name, value)
            for name, value in start.get("headers", ())
            if name.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(len(new)).encode()))
        start = self._with_etag({**start, "headers": headers})
        await self.upstream(start)
        await self.upstream({"type": "http.response.body", "body": new})

    async def _release(self, *, more: bool) -> None:
        """Send what is held unchanged (too large, or an unexpected message).

        ``more`` is the ``more_body`` of the last chunk held.
        """
        self.passing = True
        if self.held is not None:
            held, self.held = self.held, None
            await self.upstream(held)
            chunks, self.chunks = self.chunks, []
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                message = {
                    "type": "http.response.body",
                    "body": chunk,
                    "more_body": more or not last,
                }
                await self.upstream(message)

    def _with_etag(self, message: Message) -> Message:
        headers = list(message.get("headers", ()))
        for i, (name, value) in enumerate(headers):
            if name.lower() == b"etag" and value.endswith(b'"'):
                headers[i] = (name, value[:-1] + self.owner.etag_suffix() + b'"')
                return {**message, "headers": headers}
        return message
