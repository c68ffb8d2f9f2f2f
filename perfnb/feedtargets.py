"""Feed URLs: the stream URL of an app, the name a feed is known by, targets files.

A feed is known in a store by its *key*: the stream URL with the scheme and host
in lower case, the default port and any credentials dropped, and the query
without the parameters that only steer one request (``token``, ``since``,
``last_event_id``). Two spellings of one feed share a key; a key never holds a
secret, so it can be logged and written beside the records.

>>> feed_key("HTTP://LocalHost:80/api/performance-metrics?token=s3cret")
'http://localhost/api/performance-metrics/stream'
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from perfnb.errors import ConfigError

__all__ = ["DEFAULT_PREFIX", "feed_key", "feed_stream_url", "read_targets"]

#: The feed's prefix when a URL names only the app (``http://host:port``).
DEFAULT_PREFIX = "/api/performance-metrics"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PER_REQUEST = frozenset({"token", "since", "last_event_id"})


def feed_stream_url(url: str) -> str:
    """The stream URL for a feed URL, an app URL, or a stream URL.

    >>> feed_stream_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/api/performance-metrics/stream'
    >>> feed_stream_url("http://127.0.0.1:8000/perf/")
    'http://127.0.0.1:8000/perf/stream'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"url: got {url!r}; expected http://host:port[/prefix]"
        raise ConfigError(msg)
    path = parts.path.rstrip("/")
    if not path:
        path = DEFAULT_PREFIX
    if not path.endswith("/stream"):
        path += "/stream"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def feed_key(url: str) -> str:
    """The name of the feed at ``url`` (any form :func:`feed_stream_url` takes)."""
    parts = urlsplit(feed_stream_url(url))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        msg = f"url: got {url!r}; its port is not a number from 0 to 65535"
        raise ConfigError(msg) from exc
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host += f":{port}"
    query = sorted((k, v) for k, v in parse_qsl(parts.query) if k not in _PER_REQUEST)
    return urlunsplit((scheme, host, parts.path, urlencode(query), ""))


def read_targets(path: str | os.PathLike[str]) -> list[str]:
    """The feed URLs of a targets file: one a line; blank lines and ``#`` comments skipped.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("# two apps\\nhttp://127.0.0.1:8001\\n\\nhttp://127.0.0.1:8002  # b\\n")
    >>> read_targets(f.name)
    ['http://127.0.0.1:8001', 'http://127.0.0.1:8002']
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"--targets: cannot read {os.fspath(path)!r}: {exc}"
        raise ConfigError(msg) from exc
    urls: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            feed_stream_url(line)
        except ConfigError as exc:
            msg = f"--targets {os.fspath(path)}:{number}: {exc}"
            raise ConfigError(msg) from None
        urls.append(line)
    return urls
