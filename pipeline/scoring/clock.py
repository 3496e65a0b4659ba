"""How fast scored rows reached the writer: start-up apart from the rate once every actor works.

A run's rate over its whole scoring time includes paying start-up once (each
actor importing torch and loading its models). On a short run that hides the
rate a long one gets, so the clock also times the stream from the moment the
first block of every actor could have arrived (the `actors`-th block) to the
last block, counting only the rows that came after that moment. Those first
blocks took start-up plus their own work; start-up is what is left once their
rows are costed at the steady rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class StreamClock:
    actors: int
    now: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    arrivals: int = 0
    ready: float | None = None
    last: float | None = None
    rows_to_ready: int = 0
    rows_after_ready: int = 0

    def __post_init__(self) -> None:
        self.started = self.now()

    def watch(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Pass the batches through, noting when each one arrives."""
        for batch in batches:
            arrived = self.now()
            self.arrivals += 1
            if self.ready is None:
                self.rows_to_ready += batch.num_rows
                if self.arrivals >= self.actors:
                    self.ready = arrived
            else:
                self.rows_after_ready += batch.num_rows
                self.last = arrived
            yield batch

    @property
    def rows(self) -> int:
        return self.rows_to_ready + self.rows_after_ready

    @property
    def elapsed(self) -> float:
        return self.now() - self.started

    @property
    def first_blocks_seconds(self) -> float | None:
        """Seconds until every actor could have delivered its first block."""
        return None if self.ready is None else self.ready - self.started

    @property
    def startup_seconds(self) -> float | None:
        """The first blocks' time less their rows' work at the steady rate; None untold."""
        steady, first = self.steady_rows_per_second, self.first_blocks_seconds
        if steady is None or first is None:
            return None
        return max(0.0, first - self.rows_to_ready / steady)

    @property
    def steady_rows_per_second(self) -> float | None:
        """Rows/s after start-up; None when too few batches came to tell."""
        if self.ready is None or self.last is None or self.last <= self.ready:
            return None
        return self.rows_after_ready / (self.last - self.ready)
