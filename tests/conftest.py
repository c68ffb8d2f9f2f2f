"""Shared test set-up.

This file's folder (``tests/``) is put on ``sys.path`` by pytest, so helper
modules of one test folder can be imported from another as ``server.feed_support``
or ``feedclient_app`` whatever order the folders are collected in.
"""

from __future__ import annotations

import os

# Browser tests drive Debian's chromium; never let a tool try to download its own.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
