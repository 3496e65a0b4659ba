"""A line logged every so often, on a thread of its own, while long work shows nothing else.

Scoring logs each shard as it commits and filtering each failure, but between
those minutes can pass: actors loading their models, a large shard on a slow
model, a pool fit over every scored row, thousands of shards to filter. Ray
Data's own progress output stays in its log file (`cluster`), so each stage
says how far it is itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

Item = TypeVar("Item")

PROGRESS_SECONDS = 30.0


@contextmanager
def logged_every(
    line: Callable[[], str], *, logger: logging.Logger, every: float | None = None
) -> Iterator[None]:
    """Log `line()` at INFO every `every` seconds (`PROGRESS_SECONDS`) until the block ends."""
    stop = threading.Event()
    interval = every or PROGRESS_SECONDS

    def beat() -> None:
        while not stop.wait(interval):
            logger.info(line())

    thread = threading.Thread(target=beat, name="winnow-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass(kw_only=True)
class Tally:
    """Work done one item at a time: how many of how many, and the time left at the rate so far."""

    what: str  # "filters"
    unit: str  # "shard(s) filtered"
    total: int
    done: int = 0
    now: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.now()

    def count(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items, each counted once the caller is done with it."""
        for item in items:
            yield item
            self.done += 1

    def line(self) -> str:
        text = f"{self.what}: {self.done:,} of {self.total:,} {self.unit}"
        if not self.done:
            return text
        per_item = (self.now() - self.started) / self.done
        return f"{text}, about {duration(per_item * (self.total - self.done))} left"


def so_far(what: str) -> Callable[[], str]:
    """A line for work that cannot count its progress: what it is and how long it has run."""
    started = time.monotonic()
    return lambda: f"{what}, {duration(time.monotonic() - started)} so far"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
