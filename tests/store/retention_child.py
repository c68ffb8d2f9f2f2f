"""A child process for the retention kill tests: applies retention in lock-step.

    python retention_child.py ROOT TODAY DETAIL_DAYS SUMMARY_DAYS

prints ``ready``, then each step retention takes (``<event> <target>``) and waits
for a line on stdin before the next one, so the parent can SIGKILL it between
any two steps; prints ``finished`` at the end.
"""

from __future__ import annotations

import sys
from datetime import date

from perfnb.store import Store


def step(event: str, target: str) -> None:
    sys.stdout.write(f"{event} {target}\n")
    sys.stdout.flush()
    sys.stdin.readline()


def main() -> None:
    root, today = sys.argv[1], date.fromisoformat(sys.argv[2])
    detail, summary = int(sys.argv[3]), int(sys.argv[4])
    store = Store(root)
    plan = store.retention(detail_days=detail, summary_days=summary, today=today)
    print("ready", flush=True)
    plan.apply(progress=step)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
