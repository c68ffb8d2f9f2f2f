"""A child process for the durability tests: appends through a writer until killed.

    python store_child.py ROOT SERVICE LIMIT

prints each acknowledged record number on its own line (after ``append``
returned), and exits after LIMIT records (0: never).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from perfnb.store import Store

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def main() -> None:
    root, service, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(root)
    print(f"recovered {store.recovered}", flush=True)
    writer = store.writer(flush_every=700, flush_seconds=0.05)
    number = 0
    while limit == 0 or number < limit:
        writer.append(
            {
                "time": T0 + timedelta(microseconds=number),
                "source": "server",
                "kind": "http",
                "service": service,
                "route": "/api/x",
                "request_bytes": number,
            }
        )
        sys.stdout.write(f"{number}\n")
        sys.stdout.flush()
        number += 1
    writer.close()


if __name__ == "__main__":
    main()
