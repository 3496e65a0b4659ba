"""The scoring stream's progress line, and Ray Data's own progress block kept out of the console."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pytest

from pipeline.cluster import ray_data_console_to_warnings
from pipeline.scoring.progress import StreamProgress


def _ticks(times: list[float]):
    ticks = iter(times)
    return lambda: next(ticks)


def _batch(rows: int) -> pa.Table:
    return pa.table({"x": list(range(rows))})


def test_before_the_first_block_the_line_says_the_actors_are_still_starting():
    progress = StreamProgress(total_rows=100, total_shards=1, committed=[], now=_ticks([0.0, 45.0]))
    assert progress.line() == (
        "scoring: no rows back yet after 45 s (each actor loads its models before its first block)"
    )


def test_the_line_counts_rows_and_shards_and_the_time_left_at_the_rate_after_start_up():
    committed: list[dict] = []
    # Start at 0, the first block at 10 s (the clock is read at the first only), lines at
    # 30 and 40 s.
    progress = StreamProgress(
        total_rows=1024,
        total_shards=4,
        committed=committed,
        now=_ticks([0.0, 10.0, 30.0, 40.0]),
    )
    assert len(list(progress.watch([_batch(256), _batch(256)]))) == 2
    committed.append({"rows": 256})
    # 256 rows after the first block, in the 20 s since it: 12.8 rows/s, 512 rows left.
    assert progress.line() == (
        "scoring: 512 of 1,024 rows back (50%), 1 of 4 shards committed; "
        "13 rows/s since the first block, about 40 s left"
    )
    # Ten seconds later with no new block: 256 rows in 30 s.
    assert progress.line().endswith("9 rows/s since the first block, about 60 s left")


def test_a_single_block_gives_no_rate_yet():
    progress = StreamProgress(
        total_rows=600, total_shards=2, committed=[], now=_ticks([0.0, 5.0, 35.0])
    )
    list(progress.watch([_batch(200)]))
    assert progress.line() == "scoring: 200 of 600 rows back (33%), 0 of 2 shards committed"


@contextmanager
def root_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


@pytest.fixture
def ray_data_console():
    import ray.data  # noqa: F401

    handler = next(h for h in logging.getLogger("ray.data").handlers if h.name == "console")
    level = handler.level
    yield handler
    handler.setLevel(level)


def test_ray_data_info_lines_stay_out_of_the_console_unless_debugging(
    ray_data_console, monkeypatch
):
    monkeypatch.delenv("RAY_DATA_LOGGING_CONFIG", raising=False)
    ray_data_console.setLevel(logging.INFO)
    with root_level(logging.DEBUG):
        ray_data_console_to_warnings()
    assert ray_data_console.level == logging.INFO  # -v: everything shows
    with root_level(logging.INFO):
        ray_data_console_to_warnings()
    assert ray_data_console.level == logging.WARNING
    # Ray Data's file log still takes everything.
    assert logging.getLogger("ray.data").isEnabledFor(logging.DEBUG)


def test_a_ray_data_logging_config_of_the_users_own_is_left_alone(ray_data_console, monkeypatch):
    monkeypatch.setenv("RAY_DATA_LOGGING_CONFIG", "/etc/ray-data-logging.yaml")
    ray_data_console.setLevel(logging.INFO)
    with root_level(logging.INFO):
        ray_data_console_to_warnings()
    assert ray_data_console.level == logging.INFO
