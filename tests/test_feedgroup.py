"""connect([url, url]): several live apps into one Stream and one Store, resumed from the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from server.feed_support import http_record, monitored_app, serve

from perfnb.feedclient import connect
from perfnb.feedtargets import feed_key
from perfnb.server.monitor import FeedLimits, Monitor
from perfnb.store import Store
from perfnb.stream import Stream

pytestmark = pytest.mark.slow

LIMITS = FeedLimits(keepalive_seconds=0.5, linger_seconds=0.01)


def test_connect_follows_several_apps_and_a_store_resumes_each(tmp_path: Path) -> None:
    one, two = Monitor(service="one", limits=LIMITS), Monitor(service="two", limits=LIMITS)
    for _ in range(20):
        one.record(http_record("/one", service="one"))
    for _ in range(30):
        two.record(http_record("/two", service="two"))
    stream = Stream()
    with serve(monitored_app(one)) as url_one, serve(monitored_app(two)) as url_two:
        group = connect([url_one, url_two], stream=stream, store=tmp_path)
        assert group.wait_for(lambda g: g.received == 50, timeout=15)
        assert group.connected
        stats = group.stats()
        feeds = stats["feeds"]
        assert isinstance(feeds, dict)
        assert {key: feeds[key]["received"] for key in feeds} == {
            feed_key(url_one): 20,
            feed_key(url_two): 30,
        }
        assert (stats["received"], stats["dropped"], group.missed()) == (50, 0, "0 missed")
        group.close()
    assert not group.running
    frame = stream.frame()
    assert frame["service"].astype(str).value_counts().to_dict() == {"two": 30, "one": 20}

    # later, both apps serve again where they were; only what is new comes in
    for _ in range(5):
        one.record(http_record("/one", service="one"))
    port_one, port_two = (int(u.rsplit(":", 1)[1]) for u in (url_one, url_two))
    one._closed = two._closed = False  # the same monitors serve again
    with serve(monitored_app(one), port=port_one), serve(monitored_app(two), port=port_two):
        group = connect([url_one, url_two], store=Store(tmp_path))
        assert group.wait_for(lambda g: g.received >= 5, timeout=15)
        group.close()
    assert group.received == 5
    conn = group.feeds[feed_key(url_one)]
    assert conn.resumed_from is not None
    assert conn.totals.received == 25
    stored = Store(tmp_path).read()
    assert stored["service"].astype(str).value_counts().to_dict() == {"two": 30, "one": 25}
