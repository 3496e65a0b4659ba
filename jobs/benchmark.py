"""Benchmark job: `python -m jobs.benchmark [--device cuda]`, as `winnow bench`."""

import sys

from pipeline.cli import entry

if __name__ == "__main__":
    entry(["bench", *sys.argv[1:]])
