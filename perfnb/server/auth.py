"""Who may read the feed and steer the monitor.

The rules, in order:

1. With a token configured (the ``token=`` argument, else the ``PERFNB_TOKEN``
   environment variable read when the monitor is built), a request must carry it
   as ``Authorization: Bearer <token>`` or as ``?token=<token>`` (EventSource in a
   browser cannot set headers). The comparison takes the same time whatever the
   guess.
2. With no token, only loopback clients (127.0.0.0/8, ::1, and IPv4-mapped
   loopback) are served, and only when the request carries no proxy header
   (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``): behind a reverse proxy on
   the same host every client looks like loopback, so a proxied request is
   refused rather than trusted. Set a token when the app sits behind a proxy.

Anything else gets the same bare 401 with an empty body, so a refusal tells the
caller nothing about which rule failed.

>>> is_loopback("127.0.0.1"), is_loopback("::ffff:127.0.0.2"), is_loopback("10.0.0.1")
(True, True, False)
>>> Authoriser(token="s3cret").allows(client="10.0.0.1", authorization="Bearer s3cret",
...                                  query_token=None, proxied=False)
True
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from functools import lru_cache
from typing import Final

__all__ = ["PROXY_HEADERS", "TOKEN_ENV", "Authoriser", "is_loopback"]

#: Environment variable read for the token when none is passed in.
TOKEN_ENV: Final = "PERFNB_TOKEN"

#: Request headers (lower-case, as bytes) that mark a request as forwarded by a proxy.
PROXY_HEADERS: Final = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})


@lru_cache(maxsize=256)
def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a literal IP address) is a loopback address.

    Host names, empty strings and ``None`` (a Unix socket peer, say) are not
    treated as loopback: only a literal address can prove it.
    """
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Authoriser:
    """Applies the token rules; built once per monitor.

    >>> Authoriser(token=None, environ={}).allows(
    ...     client="127.0.0.1", authorization=None, query_token=None, proxied=False)
    True
    """

    __slots__ = ("_token",)

    def __init__(self, *, token: str | None, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        chosen = token if token is not None else env.get(TOKEN_ENV) or None
        self._token: bytes | None = chosen.encode("utf-8") if chosen else None

    @property
    def requires_token(self) -> bool:
        """Whether a token is configured (else only loopback clients are served)."""
        return self._token is not None

    def allows(
        self,
        *,
        client: str | None,
        authorization: str | None,
        query_token: str | None,
        proxied: bool,
    ) -> bool:
        """Whether a request with these credentials may be served."""
        if self._token is None:
            return not proxied and is_loopback(client)
        offered = _bearer(authorization)
        if offered is None:
            offered = query_token
        if offered is None:
            # Compare anyway so a missing token costs the same time as a wrong one.
            hmac.compare_digest(self._token, self._token[::-1])
            return False
        return hmac.compare_digest(self._token, offered.encode("utf-8", "backslashreplace"))


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None
