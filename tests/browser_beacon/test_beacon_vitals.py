"""The Web Vitals in the store equal what the web-vitals library reports to a second listener."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from beacon_support import PageLog, demo_started, make_clicks_slow, wait_for

from perfnb.store import Store

pytestmark = pytest.mark.slow

NAMES = ("FCP", "TTFB", "LCP", "CLS", "INP")

# The second listener: the library's own functions from the bundle the page
# loaded (window.perfnb.vitals), each keeping the last value it was given. When
# the page is hidden it sends them to a test endpoint, as any analytics would.
SECOND_LISTENER = """() => {
  const seen = (window.__seen = {});
  for (const on of ["onFCP", "onTTFB", "onLCP", "onCLS", "onINP"]) {
    window.perfnb.vitals[on]((metric) => { seen[metric.name] = metric.value; });
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") {
      navigator.sendBeacon("/_test/report", JSON.stringify(seen));
    }
  });
}"""

# A layout shift that no input caused, so CLS is not zero.
SHIFT = """() => {
  const block = document.createElement("div");
  block.style.height = "120px";
  block.textContent = "late banner";
  document.body.prepend(block);
}"""


def test_stored_vitals_equal_the_librarys_own_report(
    serve_demo: Callable[..., Any],
    open_page: Callable[[], tuple[Any, PageLog]],
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    with store.writer(flush_every=10_000) as writer, serve_demo(sink=writer.append) as served:
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: demo_started(page), timeout=30, what="the demo front end to poll")
        page.evaluate(SECOND_LISTENER)
        page.evaluate(SHIFT)
        make_clicks_slow(page, "#bulk-import")
        page.click("#bulk-import")  # a trusted input: an interaction for INP, final LCP
        wait_for(
            lambda: "LCP" in page.evaluate("() => Object.keys(window.__seen)"),
            timeout=30,
            what="LCP to be final",
        )
        page.goto("about:blank")  # hidden: INP and CLS are reported to both listeners

        def arrived() -> bool:
            names = {r.get("name") for r in served.browser_records("vital")}
            return bool(served.reported) and set(NAMES) <= names

        wait_for(arrived, timeout=30, what="both listeners' reports")
        reported = served.reported[-1]
        writer.flush()

    stored = store.read(sources=["browser"], kinds=["vital"])
    assert set(stored["name"].astype(str)) == set(NAMES)
    assert set(reported) == set(NAMES)
    # Each report supersedes the previous one of the same metric: compare the last.
    latest = stored.sort_values("time", kind="stable").groupby("name", observed=True).last()
    for name in NAMES:
        assert latest.loc[name, "value"] == reported[name], name
        assert latest.loc[name, "route"] == "/"
        assert latest.loc[name, "service"] == "demo"
    assert reported["CLS"] > 0
    assert reported["INP"] > 0
    assert log.errors == []
