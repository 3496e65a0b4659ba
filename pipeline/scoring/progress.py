"""The scoring stream's progress line: rows back of the total, shards committed, time left.

Shards are logged as they commit, but on a slow model or with large shards
minutes pass between commits, and an actor's start-up (importing torch, loading
its models) shows nothing at all. The line stands in for Ray Data's own progress
block (nine lines of operator state every 10 s in a log), which stays in Ray
Data's log file unless logging is at debug level (`cluster`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pipeline.heartbeat import duration, logged_every

log = logging.getLogger(__name__)


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

    def logged(self) -> AbstractContextManager[None]:
        """The line logged every so often (`heartbeat`) while the block runs."""
        return logged_every(self.line, logger=log)

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
            text += f"; {rate:,.0f} rows/s since the first block, about {duration(left)} left"
        return text
