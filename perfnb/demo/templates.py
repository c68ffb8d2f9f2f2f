"""The demo app's route templates, and raw paths mapped back onto them.

Client-side records see raw paths (``/api/cards/17``); the app's own records
carry templates (``/api/cards/{card_id}``). Mapping one onto the other lets the
client's and the server's view of a request meet in one summary row.

>>> route_template("/api/cards/17")
'/api/cards/{card_id}'
>>> route_template("/api/cards/export")
'/api/cards/export'
>>> route_template("/elsewhere") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

__all__ = ["SERVICE", "TEMPLATES", "route_template", "template_matcher"]

#: The ``service`` the demo app's records carry (server and client side).
SERVICE: Final = "demo"

#: Every route template the demo app serves (perfnb's feed aside).
TEMPLATES: Final = (
    "/",
    "/static/app.js",
    "/api/health",
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
    "/api/admin/faults",
    "/api/admin/runs",
    "/api/admin/runs/{run_id}",
)


def template_matcher(templates: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching a raw path to a template; the match's ``lastgroup`` is ``t<index>``.

    Literal templates come first so ``/api/cards/export`` is not taken for a card id.
    """
    parts = []
    ordered = sorted(enumerate(templates), key=lambda item: "{" in item[1])
    for i, template in ordered:
        pieces = re.split(r"\{[^}]+\}", template)
        parts.append(f"(?P<t{i}>" + "[^/]+".join(re.escape(p) for p in pieces) + ")")
    return re.compile("|".join(parts)) if parts else None


@lru_cache(maxsize=16)
def _matcher(templates: tuple[str, ...]) -> re.Pattern[str] | None:
    return template_matcher(templates)


def route_template(path: str, templates: Iterable[str] = TEMPLATES) -> str | None:
    """The template ``path`` (query string ignored) belongs to, or ``None``."""
    known = tuple(templates)
    matcher = _matcher(known)
    found = matcher.fullmatch(path.split("?", 1)[0]) if matcher else None
    if found is None or found.lastgroup is None:
        return None
    return known[int(found.lastgroup[1:])]
