"""Ray job entry point: `python -m jobs.curate CONFIG [--set key=value ...]`.

Thin by design: the same code path as `winnow run`, so a job submitted to a
cluster behaves exactly like a local run.
"""

import sys

from pipeline.cli import entry

if __name__ == "__main__":
    entry(["run", *sys.argv[1:]])
