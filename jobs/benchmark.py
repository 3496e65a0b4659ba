"""Benchmark job: `python -m jobs.benchmark [--device cuda]`, as `winnow bench`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
