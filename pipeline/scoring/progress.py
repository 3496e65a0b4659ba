"""The scoring stream's progress line: rows back of the total, shards committed, time left.

Shards are logged as they commit, but on a slow model or with large shards
minutes pass between commits, and an actor's start-up (importing torch, loading
its models) shows nothing at all. The line stands in for Ray Data's own progress
block (nine lines of operator state every 10 s in a log), which stays in Ray
Data's log file unless logging is at debug level (`cluster`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sized
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pipeline.heartbeat import duration, logged_every
from pipeline.scoring.clock import StreamClock

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class StreamProgress:
    """Reads the stream's clock, which notes every block as it arrives."""

    clock: StreamClock
    total_rows: int
    total_shards: int
    # Shards committed so far: the sink's list, read as it grows.
    committed: Sized
    # What Ray waits for and cannot place, if anything (`watch`).
    waiting: Callable[[], str | None] = lambda: None

    def logged(self) -> AbstractContextManager[None]:
        """The line logged every so often (`heartbeat`) while the block runs."""
        return logged_every(self.line, logger=log)

    def line(self) -> str:
        clock, waiting = self.clock, self.waiting()
        if not clock.arrivals:
            why = waiting or "each actor loads its models, then scores its first block"
            return f"scoring: no rows back yet after {clock.elapsed:,.0f} s ({why})"
        rows = clock.rows
        share = rows / self.total_rows if self.total_rows else 1.0
        text = (
            f"scoring: {rows:,} of {self.total_rows:,} rows back ({share:.0%}), "
            f"{len(self.committed)} of {self.total_shards} shards committed"
        )
        if waiting:
            return f"{text}; waiting: {waiting}"
        left = max(0, self.total_rows - rows)
        rate, since = clock.steady_rows_per_second, "after start-up"
        if not rate:
            # Until a block comes after every actor's first (a few blocks in all, on a small
            # run), the rate so far, start-up included: an estimate on the long side.
            rate, since = rows / clock.elapsed, "so far, start-up included"
        return f"{text}; {rate:,.0f} rows/s {since}, about {duration(left / rate)} left"
