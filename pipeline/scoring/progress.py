"""A progress line while the stream runs, so that a slow start or a long shard is never silent.

Shards are logged as they commit, but on a slow model or with large shards
minutes pass between commits, and a GPU actor's start-up (importing torch,
loading its models) shows nothing at all. So every `every` seconds the driver
logs how many rows have come back of how many, at what rate, how many shards
are committed and the time left at that rate. It stands in for Ray Data's own
progress block (nine lines of operator state every 10 s in a log), which
`ray_session` keeps to Ray Data's log file unless logging is at debug level.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0


@dataclass(kw_only=True)
class StreamProgress:
    total_rows: int
    total_shards: int
    # Shards committed so far: the sink's list, read as it grows.
    committed: Sized
    now: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    rows: int = 0
    first: tuple[float, int] | None = None  # (when, rows) at the first block

    def __post_init__(self) -> None:
        self.started = self.now()

    def watch(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Pass the batches through, counting their rows."""
        for batch in batches:
            self.rows += batch.num_rows
            if self.first is None:
                self.first = (self.now(), self.rows)
            yield batch

    def line(self) -> str:
        now = self.now()
        if self.first is None:
            return (
                f"scoring: no rows back yet after {now - self.started:,.0f} s "
                "(each actor loads its models before its first block)"
            )
        share = self.rows / self.total_rows if self.total_rows else 1.0
        text = (
            f"scoring: {self.rows:,} of {self.total_rows:,} rows back ({share:.0%}), "
            f"{len(self.committed)} of {self.total_shards} shards committed"
        )
        since, rows_then = self.first
        rate = (self.rows - rows_then) / (now - since) if self.rows > rows_then else 0.0
        if rate > 0:
            left = max(0, self.total_rows - self.rows) / rate
            text += f"; {rate:,.0f} rows/s since the first block, about {_duration(left)} left"
        return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextmanager
def logged_every(line: Callable[[], str], every: float | None = None) -> Iterator[None]:
    """Log `line()` every `every` seconds (`PROGRESS_SECONDS`) on a thread of its own until
    the block ends."""
    stop = threading.Event()
    interval = every or PROGRESS_SECONDS

    def beat() -> None:
        while not stop.wait(interval):
            log.info(line())

    thread = threading.Thread(target=beat, name="winnow-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
