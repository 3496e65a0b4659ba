"""The scoring stream's progress line, and Ray Data's own progress block kept out of the console."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pytest

from pipeline.cluster import ray_data_console_to_warnings
from pipeline.scoring.clock import StreamClock
from pipeline.scoring.progress import StreamProgress


def _ticks(times: list[float]):
    ticks = iter(times)
    return lambda: next(ticks)


def _batch(rows: int) -> pa.Table:
    return pa.table({"x": list(range(rows))})


def test_before_the_first_block_the_line_says_the_actors_are_still_starting():
    clock = StreamClock(actors=1, now=_ticks([0.0, 45.0]))
    progress = StreamProgress(clock=clock, total_rows=100, total_shards=1, committed=[])
    assert progress.line() == (
        "scoring: no rows back yet after 45 s "
        "(each actor loads its models, then scores its first block)"
    )


def test_while_ray_cannot_place_work_the_line_names_it_instead():
    waiting = "Ray cannot place 1 needing {CPU 0.5} (actors or tasks) on any live node (...)"
    clock = StreamClock(actors=1, now=_ticks([0.0, 45.0, 50.0, 60.0]))
    progress = StreamProgress(
        clock=clock, total_rows=100, total_shards=1, committed=[], waiting=lambda: waiting
    )
    assert progress.line() == f"scoring: no rows back yet after 45 s ({waiting})"
    list(clock.watch([_batch(10)]))
    assert progress.line() == (
        f"scoring: 10 of 100 rows back (10%), 0 of 1 shards committed; waiting: {waiting}"
    )


def test_the_line_counts_rows_and_shards_and_the_time_left_at_the_rate_after_start_up():
    committed: list[dict] = []
    # Two actors: start at 0, blocks at 10, 12 (each actor's first) and 20 s.
    clock = StreamClock(actors=2, now=_ticks([0.0, 10.0, 12.0, 20.0]))
    progress = StreamProgress(clock=clock, total_rows=1024, total_shards=4, committed=committed)
    assert len(list(clock.watch([_batch(256)] * 3))) == 3
    committed.append({"rows": 256})
    # 256 rows in the 8 s after both actors' first blocks: 32 rows/s, 256 rows left.
    assert progress.line() == (
        "scoring: 768 of 1,024 rows back (75%), 1 of 4 shards committed; "
        "32 rows/s after start-up, about 8 s left"
    )


def test_until_a_block_after_every_actors_first_the_rate_so_far_includes_start_up():
    # Two actors' first blocks at 5 and 6 s; the line at 8 s: 400 rows in 8 s.
    clock = StreamClock(actors=2, now=_ticks([0.0, 5.0, 6.0, 8.0]))
    progress = StreamProgress(clock=clock, total_rows=600, total_shards=2, committed=[])
    list(clock.watch([_batch(200), _batch(200)]))
    assert progress.line() == (
        "scoring: 400 of 600 rows back (67%), 0 of 2 shards committed; "
        "50 rows/s so far, start-up included, about 4 s left"
    )


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


class _Slow:
    """A map actor slow enough for Ray Data's detectors to look at it many times."""

    def __call__(self, batch: dict) -> dict:
        import time

        time.sleep(0.2)
        return batch


class _Kept(logging.Handler):
    """The messages logged to the logger it is added to (Ray Data's loggers do not
    propagate to the root logger that caplog listens on)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_ray_data_issue_warning_shows_once_a_run_not_every_detection(monkeypatch):
    """Ray Data repeats an issue's warning each time its detector runs (every 30 s): an
    actor over Ray Data's memory share per reserved CPU, as a ViT-B-32 CPU actor is,
    warned every 30 s of a run. Here the detector runs on every executor step, and the
    share is tiny (a thousandth of a CPU reserved), so every step finds the issue."""
    import ray.data
    from ray.data import DataContext

    from pipeline.cluster import RAY_DATA_ISSUES, ray_session
    from pipeline.config import RayConfig

    detectors = DataContext.get_current().issue_detectors_config
    monkeypatch.setattr(detectors.high_memory_detector_config, "detection_time_interval_s", 0)
    issues = logging.getLogger(RAY_DATA_ISSUES)

    def run() -> list[str]:
        kept = _Kept()
        issues.addHandler(kept)
        try:
            blocks = ray.data.range(40, override_num_blocks=20)
            mapped = blocks.map_batches(_Slow, concurrency=1, num_cpus=0.001, batch_size=None)
            assert mapped.count() == 40
        finally:
            issues.removeHandler(kept)
        return kept.messages

    with ray_session(RayConfig()):
        once = run()
    memory = [m for m in once if "of memory per worker" in m]
    assert len(memory) == 1 and "MapBatches(_Slow)" in memory[0]
    assert sum(m.startswith("Found ") for m in once) == 1
    # Outside a run, Ray Data's own way: the same warning at every detection.
    assert sum("of memory per worker" in m for m in run()) > 5
