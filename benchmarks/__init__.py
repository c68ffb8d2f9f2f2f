"""perfnb's benchmarks: side-by-side comparisons run in one process by ``make bench``."""
