"""A child process for the index tests: rewrites one day's summary over and over.

    python summary_index_writer.py ROOT DAY ROUNDS VARIANT...

Each round writes the next stored summary file of ``VARIANT...`` (cycling) as the
day's summary, then rewrites the month's index; prints ``done`` at the end.
"""

from __future__ import annotations

import sys
from datetime import date

import pyarrow.fs as pafs

from perfnb.store import Store
from perfnb.store.summaries import read_summary, write_summary


def main() -> None:
    root, day, rounds = sys.argv[1], date.fromisoformat(sys.argv[2]), int(sys.argv[3])
    fs = pafs.LocalFileSystem()
    variants = [read_summary(fs, path) for path in sys.argv[4:]]
    history = Store(root)._history
    for turn in range(rounds):
        table, sources = variants[turn % len(variants)]
        write_summary(fs, history.summary_dir(day), table, day=day, sources=sources, local=True)
        history.save_index([day])
    print("done", flush=True)


if __name__ == "__main__":
    main()
