"""The off switch, kind selection and sampling: from the server to the page, and obeyed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from beacon_support import PREFIX, PageLog, Served, demo_started, wait_for

pytestmark = pytest.mark.slow


def _intake_posts(served: Served) -> int:
    return len(served.own_requests("beacon"))


def _settle(served: Served, open_page: Callable[[], tuple[Any, PageLog]]) -> None:
    """Let a late sendBeacon, if any were sent, reach the server before checking it was not.

    A closed page hands its beacons to the browser at once; a request from another
    page after that, and a short quiet period, leave time for one to land.
    """
    other, _ = open_page()
    other.goto(served.url + "/api/health")
    other.wait_for_timeout(1000)


def test_a_page_with_monitoring_off_sends_nothing(
    serve_demo: Callable[..., Any], open_page: Callable[[], tuple[Any, PageLog]]
) -> None:
    with serve_demo() as served:
        served.monitor.configure(enabled=False)
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: demo_started(page), timeout=30, what="the demo front end to poll")
        assert page.evaluate("() => document.querySelector('script[data-perfnb]')") is None
        page.close()
        served.monitor.configure(enabled=True)  # so that anything arriving now is recorded
        _settle(served, open_page)
        counters = served.monitor.counters
    assert log.errors == []
    assert not [r for r in log.requests if "/_perfnb/" in r[1] or PREFIX in r[1]]
    assert not [h for _, _, h, _ in log.requests if h]
    assert counters["beacon_batches"] == counters["beacon_batches_bad"] == 0
    assert served.browser_records() == []
    assert _intake_posts(served) == 0


def test_a_page_outside_the_sample_sends_nothing(
    serve_demo: Callable[..., Any], open_page: Callable[[], tuple[Any, PageLog]]
) -> None:
    with serve_demo(sample=0.0) as served:
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: demo_started(page), timeout=30, what="the demo front end to poll")
        assert page.evaluate("() => typeof window.perfnb") == "object"  # loaded, idle
        page.close()
        _settle(served, open_page)
        counters = served.monitor.counters
    assert log.errors == []
    assert not [h for _, _, h, _ in log.requests if h]
    assert counters["beacon_batches"] == counters["beacon_batches_bad"] == 0
    assert served.browser_records() == []
    assert _intake_posts(served) == 0


def _learned(log: PageLog, test: Callable[[dict[str, Any]], bool], count: int) -> bool:
    """The page has received ``count`` control answers passing ``test``."""
    return sum(1 for doc in list(log.controls) if test(doc)) >= count


def _next_poll(page: Any) -> None:
    """Wait until the demo front end has finished one more poll."""
    polls = page.evaluate("() => window.perfnbDemo.state.polls")
    wait_for(
        lambda: page.evaluate("() => window.perfnbDemo.state.polls") > polls,
        timeout=30,
        what="the next poll",
    )


def test_the_kind_selection_reaches_an_open_page(
    serve_demo: Callable[..., Any], open_page: Callable[[], tuple[Any, PageLog]]
) -> None:
    with serve_demo() as served:
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: len(log.carried()) >= 2, timeout=30, what="batched requests", page=page)
        served.monitor.configure(kinds=["http", "render"])
        wait_for(
            lambda: _learned(log, lambda d: d["kinds"] == ["http", "render"], 1),
            timeout=30,
            what="the page to be told the selection",
            page=page,
        )
        _next_poll(page)  # by then the page has read that answer
        settled = len(log.carried())
        page.evaluate(
            """() => { performance.mark("s"); performance.measure("Board", "s");
                       history.pushState(null, "", "/board"); }"""
        )
        wait_for(
            lambda: any(
                r.get("name") == "Board" for b in log.carried()[settled:] for r in b["records"]
            ),
            timeout=30,
            what="the measure made after the selection",
            page=page,
        )
        later = {r["kind"] for b in log.carried()[settled:] for r in b["records"]}
    # No route change, no fetch, no memory sample: only what the monitor keeps.
    assert later == {"render"}
    assert log.errors == []


def test_the_off_switch_reaches_an_open_page(
    serve_demo: Callable[..., Any], open_page: Callable[[], tuple[Any, PageLog]]
) -> None:
    with serve_demo() as served:
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: len(log.carried()) >= 2, timeout=30, what="batched requests", page=page)
        served.monitor.configure(enabled=False)
        wait_for(
            lambda: _learned(log, lambda d: d["enabled"] is False, 1),
            timeout=30,
            what="the page to be told monitoring is off",
            page=page,
        )
        told = len(log.carried())
        polls = page.evaluate("() => window.perfnbDemo.state.polls")
        wait_for(
            lambda: page.evaluate("() => window.perfnbDemo.state.polls") >= polls + 3,
            timeout=30,
            what="three more polls",
        )
        after = len(log.carried())
        served.monitor.configure(enabled=True)  # the page does not learn it: it asks nothing
        page.close()
        _settle(served, open_page)
    # At most one request already on its way when the answer came.
    assert after <= told + 1
    assert _intake_posts(served) == 0
    assert log.errors == []
