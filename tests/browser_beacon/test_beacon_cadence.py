"""The beacon adds no requests: batches ride on the app's own, and go by sendBeacon on hide."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from beacon_support import PREFIX, PageLog, Served, demo_started, wait_for

pytestmark = pytest.mark.slow

#: The window over which the two pages' requests are compared: long enough for
#: several 2 s polls, the presence heartbeat and the first back-off decisions.
WINDOW_MS = 12_000


def _intake_posts(served: Served) -> int:
    return len(served.own_requests("beacon"))


def test_same_requests_and_cadence_with_and_without_the_beacon(
    serve_demo: Callable[..., Any], open_page: Callable[[], tuple[Any, PageLog]]
) -> None:
    with serve_demo(beacon=True) as on, serve_demo(beacon=False) as off:
        page_on, log_on = open_page()
        page_off, log_off = open_page()
        # Side by side over the same period.
        page_on.goto(on.url + "/", wait_until="commit")
        page_off.goto(off.url + "/", wait_until="commit")
        wait_for(lambda: demo_started(page_on) and demo_started(page_off), timeout=30, what="polls")
        page_on.wait_for_timeout(WINDOW_MS)
        during_on = log_on.app_requests()
        during_off = log_off.app_requests()
        posts_while_visible = _intake_posts(on)
        carried = log_on.carried()
        page_on.close()  # pagehide: the rest of the queue goes by sendBeacon
        wait_for(lambda: _intake_posts(on) > 0, timeout=30, what="the sendBeacon flush")

    assert log_on.errors == []
    assert log_off.errors == []
    # The beacon's only own request while visible is its script.
    loaded = [u for m, u, _, _ in log_on.requests if "/_perfnb/beacon.js" in u]
    assert len(loaded) == 1
    assert posts_while_visible == 0
    assert not [u for _, u, _, _ in log_on.requests if PREFIX in u and "/beacon" not in u]
    # The same requests, in the same order, at the same pace (a poll may fall
    # either side of the end of the window).
    common = min(len(during_on), len(during_off))
    assert during_on[:common] == during_off[:common]
    assert abs(len(during_on) - len(during_off)) <= 1
    polls_on = Counter(p for _, p in during_on)["/api/poll"]
    polls_off = Counter(p for _, p in during_off)["/api/poll"]
    assert polls_on >= 4
    assert abs(polls_on - polls_off) <= 1
    # ...while the batches rode on them.
    assert carried
    assert all(b["v"] == 1 and b["page"] == "/" for b in carried)
    assert sum(len(b["records"]) for b in carried) >= len(carried)
    assert not [h for _, _, h, _ in log_off.requests if h]
    sent = on.own_requests("beacon")
    assert all(r["source"] == "perfnb" for r in sent)  # never counted as the app's traffic
