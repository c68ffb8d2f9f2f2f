"""The browser beacon for WSGI apps (Flask, Django): served, injected, answered with control.

:class:`BeaconScriptWSGI` does for a WSGI app what
:class:`~perfnb.server.beaconjs.BeaconScript` does for an ASGI one: it serves the
script at ``path``, writes its tag before ``</head>`` of full HTML pages (status
200, ``text/html``, not compressed, not a range) while monitoring is on, and adds
``X-Perfnb-Control`` to the response of every request that carried a browser
batch. Install it outermost, around
:class:`~perfnb.server.wsgi.PerfnbWSGIMiddleware`, which takes the batches out of
the requests::

    monitor = Monitor(service="shop")
    app.wsgi_app = BeaconScriptWSGI(
        PerfnbWSGIMiddleware(app.wsgi_app, monitor=monitor), monitor=monitor
    )

Pages are held until complete (up to ``max_html_bytes``; larger ones pass through
untouched), so the tag can go in and ``Content-Length`` be set right; every other
response streams through as the app sends it.

>>> from perfnb.server import Monitor
>>> app = BeaconScriptWSGI(lambda environ, start_response: [], monitor=Monitor())
>>> app.path
'/_perfnb/beacon.js'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Unpack

from perfnb.server.beaconjs import BeaconOptions, BeaconPages, eligible_headers
from perfnb.server.monitor import Monitor

__all__ = ["BeaconScriptWSGI"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_STATUS_TEXT = {200: "200 OK", 304: "304 Not Modified", 405: "405 Method Not Allowed"}


def _text_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]


def _bytes_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]


class BeaconScriptWSGI(BeaconPages):
    """WSGI wrapper serving the beacon, injecting its tag, answering with control state.

    The options are :class:`~perfnb.server.beaconjs.BeaconPages`' (``path``,
    ``inject``, ``sample``, ``frames``, ``memory_every``, ``header_bytes``,
    ``max_html_bytes``).
    """

    def __init__(self, app: WSGIApp, *, monitor: Monitor, **options: Unpack[BeaconOptions]) -> None:
        super().__init__(monitor=monitor, **options)
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.path:
            return self._serve(environ, start_response)
        carried = "HTTP_X_PERFNB_BEACON" in environ
        injecting = self.inject and environ.get("REQUEST_METHOD") == "GET" and self.monitor.enabled
        if not carried and not injecting:
            return self.app(environ, start_response)
        if injecting:
            self._unconditional(environ)
        return _Response(self, environ, start_response, carried=carried, injecting=injecting)

    def _serve(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        match = environ.get("HTTP_IF_NONE_MATCH")
        status, headers, body = self.script_response(
            environ.get("REQUEST_METHOD", ""),
            environ.get("QUERY_STRING", "").encode("latin-1"),
            None if match is None else match.encode("latin-1"),
        )
        start_response(_STATUS_TEXT[status], _text_headers(headers))
        return [body]

    def _unconditional(self, environ: dict[str, Any]) -> None:
        """Strip the tag's ETag suffix from ``If-None-Match`` so the app's own check works.

        The browser holds the injected page's ETag (``"<app's>-pnb<hash>"``); while
        the tag is unchanged the app may answer 304, otherwise it sends the page.
        """
        match = environ.get("HTTP_IF_NONE_MATCH")
        if match and "-pnb" in match:
            suffix = self.etag_suffix().decode("ascii")
            environ["HTTP_IF_NONE_MATCH"] = match.replace(suffix + '"', '"')


class _Response:
    """The app's response as it passes through: a page held and rewritten, or streamed on."""

    def __init__(
        self,
        owner: BeaconScriptWSGI,
        environ: dict[str, Any],
        start_response: StartResponse,
        *,
        carried: bool,
        injecting: bool,
    ) -> None:
        self.owner = owner
        self.upstream = start_response
        self.carried = carried
        self.injecting = injecting
        self.held: tuple[str, list[tuple[str, str]], ExcInfo | None] | None = None
        self.chunks: list[bytes] = []
        self.result = owner.app(environ, self.start_response)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        headers = list(headers)
        if self.carried:
            headers.append(("X-Perfnb-Control", self.owner.control_value().decode("ascii")))
        code = status[:3]
        if self.injecting and code == "200" and eligible_headers(_bytes_headers(headers)):
            self.held = (status, headers, exc_info)
            self.chunks = []
            return self.chunks.append  # the legacy write() of a held page is held too
        if self.injecting and code == "304":
            headers = self._with_etag(headers)
        self.held = None
        return self.upstream(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        body = iter(self.result)
        size = 0
        for chunk in body:
            if self.held is None:
                yield chunk
                yield from body
                return
            self.chunks.append(chunk)
            size += len(chunk)
            if size > self.owner.max_html_bytes:
                yield from self._release()
                yield from body
                return
        if self.held is None:
            return
        page = b"".join(self.chunks)
        status, headers, exc_info = self.held
        self.held = None
        new = self.owner.rewrite(page)
        if new is None:
            self.upstream(status, headers, exc_info)
            yield page
            return
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
        headers.append(("Content-Length", str(len(new))))
        self.upstream(status, self._with_etag(headers), exc_info)
        yield new

    def _release(self) -> Iterator[bytes]:
        """Send the held page unchanged (too large to hold)."""
        assert self.held is not None
        status, headers, exc_info = self.held
        self.held = None
        self.upstream(status, headers, exc_info)
        chunks, self.chunks = self.chunks, []
        yield from chunks

    def _with_etag(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = list(headers)
        for i, (name, value) in enumerate(out):
            if name.lower() == "etag" and value.endswith('"'):
                suffix = self.owner.etag_suffix().decode("ascii")
                out[i] = (name, value[:-1] + suffix + '"')
                break
        return out

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()
