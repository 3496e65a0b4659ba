"""Lines logged every so often while long work shows nothing else."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from pipeline.heartbeat import Tally, duration, logged_every, so_far

log = logging.getLogger("tests.heartbeat")


def test_lines_are_logged_every_interval_until_the_block_ends(caplog):
    calls = 0

    def line() -> str:
        nonlocal calls
        calls += 1
        return f"line {calls}"

    with caplog.at_level(logging.INFO, logger=log.name):
        with logged_every(line, logger=log, every=0.05):
            time.sleep(0.4)
        logged = calls
        time.sleep(0.2)
    assert 3 <= logged <= 9
    assert calls == logged  # stopped with the block
    assert [r.message for r in caplog.records][:2] == ["line 1", "line 2"]
    assert not [t for t in threading.enumerate() if t.name == "winnow-progress"]


def test_the_thread_stops_when_the_work_fails():
    with pytest.raises(RuntimeError), logged_every(lambda: "beat", logger=log, every=0.01):
        raise RuntimeError("the work failed")
    assert not [t for t in threading.enumerate() if t.name == "winnow-progress"]


def test_work_that_cannot_count_says_how_long_it_has_run(monkeypatch):
    clock = iter([100.0, 145.0, 400.0])
    monkeypatch.setattr("pipeline.heartbeat.time.monotonic", lambda: next(clock))
    line = so_far("filters: fitting semantic_dedup over the pool of 12 shard(s)")
    assert line() == "filters: fitting semantic_dedup over the pool of 12 shard(s), 45 s so far"
    assert line().endswith(", 5 min so far")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0 s"), (119, "119 s"), (150, "2 min"), (7300, "2.0 h")]
)
def test_durations_read_in_the_unit_that_fits(seconds, text):
    assert duration(seconds) == text


def test_a_tally_counts_items_once_done_with_and_says_the_time_left():
    clock = iter([0.0, 20.0, 50.0])
    tally = Tally(what="export", unit="shard(s) read", total=4, now=lambda: next(clock))
    items = tally.count(["a", "b", "c", "d"])
    assert next(items) == "a"
    assert tally.line() == "export: 0 of 4 shard(s) read"  # "a" is still being read
    assert next(items) == "b"
    # One item in 20 s: three left, about 60 s.
    assert tally.line() == "export: 1 of 4 shard(s) read, about 60 s left"
    assert list(items) == ["c", "d"]
    assert tally.done == 4
    assert tally.line() == "export: 4 of 4 shard(s) read, about 0 s left"
