"""``python -m perfnb.demo --port P``: the same as ``perfnb demo-app``."""

from __future__ import annotations

import sys

from perfnb.demo.app import main_demo_app

if __name__ == "__main__":
    raise SystemExit(main_demo_app(sys.argv[1:]))
