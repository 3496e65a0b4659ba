"""The stream clock: start-up apart from the rate once every actor delivers."""

from __future__ import annotations

import pyarrow as pa

from pipeline.scoring.clock import StreamClock


def _arrivals(times: list[float]):
    """A clock reading each time in turn: the start, then one per batch."""
    ticks = iter(times)
    return lambda: next(ticks)


def _batches(count: int, rows: int) -> list[pa.Table]:
    return [pa.table({"x": list(range(rows))}) for _ in range(count)]


def test_steady_rate_counts_only_rows_after_every_actor_delivered():
    clock = StreamClock(actors=2, now=_arrivals([0.0, 10.0, 10.5, 20.0, 20.5]))
    assert len(list(clock.watch(_batches(4, 256)))) == 4
    assert clock.first_blocks_seconds == 10.5
    # Each actor's first block was worked on before it arrived: only the last two count.
    assert clock.steady_rows_per_second == 512 / 10.0
    # Those first 512 rows took 10 s of work at that rate: the other 0.5 s was start-up.
    assert clock.startup_seconds == 0.5


def test_too_few_batches_give_no_steady_rate():
    one = StreamClock(actors=2, now=_arrivals([0.0, 4.0]))
    list(one.watch(_batches(1, 8)))
    assert (one.first_blocks_seconds, one.steady_rows_per_second) == (None, None)
    two = StreamClock(actors=2, now=_arrivals([0.0, 4.0, 5.0]))
    list(two.watch(_batches(2, 8)))
    assert (two.first_blocks_seconds, two.steady_rows_per_second) == (5.0, None)
    assert two.startup_seconds is None
