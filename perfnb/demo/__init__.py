"""perfnb's demo app: the collaborative cards-and-chat app perfnb monitors out of the box.

``create_app()`` builds it (perfnb's middleware installed), ``perfnb demo-app``
serves it and ``perfnb demo`` runs the whole job: serve, drive, record, summarise.

>>> import pathlib, tempfile
>>> from perfnb.demo import create_app
>>> app = create_app(db_path=pathlib.Path(tempfile.mkdtemp()) / "demo.sqlite3")
"""

from __future__ import annotations

from perfnb.demo.app import create_app
from perfnb.demo.faults import Faults, FaultState

__all__ = ["FaultState", "Faults", "create_app"]
