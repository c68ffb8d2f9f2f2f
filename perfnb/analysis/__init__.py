"""Analysis: pure functions and incremental engines over records and frames."""
