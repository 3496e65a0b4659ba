from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.io.layout import OutputLayout
from pipeline.io.lock import LOCK, LockedError, ObjectLockFile, lock_file, output_lock


def _dead_pid() -> int:
    """The pid of a process that has ended: a run killed on this host."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(dead.stdout)


def test_a_second_run_is_refused_with_owner_and_age(tmp_path):
    layout = OutputLayout(root=str(tmp_path), storage_options={})
    with output_lock(layout):
        owner = json.loads((tmp_path / LOCK).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with (
            pytest.raises(
                LockedError, match=rf"in use by another run \(host .*pid {os.getpid()}.*s ago"
            ),
            output_lock(OutputLayout(root=str(tmp_path), storage_options={})),
        ):
            pass
    assert not (tmp_path / LOCK).exists()


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text(
        json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "since_epoch": 0})
    )
    with output_lock(OutputLayout(root=str(tmp_path), storage_options={})):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_is_respected(tmp_path):
    (tmp_path / LOCK).write_text(
        json.dumps({"host": "elsewhere", "pid": 1, "since": "then", "since_epoch": 0})
    )
    layout = OutputLayout(root=str(tmp_path), storage_options={})
    with pytest.raises(LockedError, match="host elsewhere"), output_lock(layout):
        pass


ROUNDS = 25
RUNS = 6


def _contender(root: str, start: Any, attempted: Any, results: Any) -> None:
    """One run's side of every round: take the lock when all start, hold it until all tried."""
    for round_ in range(ROUNDS):
        layout = OutputLayout(root=f"{root}/{round_}", storage_options={})
        start.wait()
        try:
            with output_lock(layout):
                results.put((round_, "won"))
                attempted.wait()
        except LockedError:
            results.put((round_, "refused"))
            attempted.wait()
        except Exception as error:  # anything else is a failure the test reports
            results.put((round_, repr(error)))
            attempted.wait()


def _race(tmp_path: Path, prepare: Callable[[Path], None]) -> Counter[int]:
    """Winners per round of RUNS processes that go for the same lock at the same moment."""
    context = multiprocessing.get_context("spawn")
    start, attempted = context.Barrier(RUNS, timeout=60), context.Barrier(RUNS, timeout=60)
    results = context.Queue()
    for round_ in range(ROUNDS):
        (tmp_path / str(round_)).mkdir()
        prepare(tmp_path / str(round_))
    runs = [
        context.Process(target=_contender, args=(str(tmp_path), start, attempted, results))
        for _ in range(RUNS)
    ]
    for run in runs:
        run.start()
    outcomes = [results.get(timeout=90) for _ in range(ROUNDS * RUNS)]
    for run in runs:
        run.join(timeout=60)
        assert run.exitcode == 0
    assert {outcome for _, outcome in outcomes} <= {"won", "refused"}, outcomes
    return Counter(round_ for round_, outcome in outcomes if outcome == "won")


def _dead_lock(folder: Path) -> None:
    (folder / LOCK).write_text(
        json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "dead"})
    )


@pytest.mark.slow
def test_runs_started_at_the_same_moment_leave_exactly_one_winner(tmp_path):
    winners = _race(tmp_path, lambda folder: None)
    assert winners == Counter(dict.fromkeys(range(ROUNDS), 1))


@pytest.mark.slow
def test_a_dead_runs_lock_is_taken_over_by_exactly_one_of_the_runs_after_it(tmp_path):
    winners = _race(tmp_path, _dead_lock)
    assert winners == Counter(dict.fromkeys(range(ROUNDS), 1))
    assert not list(tmp_path.rglob("*.dead")) and not list(tmp_path.rglob("*.tmp"))


def test_on_s3_the_lock_is_a_conditional_put(s3):
    _, bucket, options = s3
    layout = OutputLayout(root=f"s3://{bucket}/out", storage_options=options)
    lock = lock_file(layout)
    assert isinstance(lock, ObjectLockFile)
    assert lock.create(b'{"token": "first"}')
    assert not lock.create(b'{"token": "second"}')
    held = lock.read()
    assert held.owner == {"token": "first"}
    lock.layout.fs.pipe_file(lock.path, b'{"token": "changed"}')
    assert not lock.replace(b'{"token": "late"}', held), "a takeover of a lock that changed"
    assert lock.replace(b'{"token": "mine"}', lock.read())
    assert lock.read().owner == {"token": "mine"}


def test_on_s3_a_second_run_is_refused_and_a_dead_runs_lock_taken_over(s3):
    fs, bucket, options = s3
    layout = OutputLayout(root=f"s3://{bucket}/out", storage_options=options)
    with (
        output_lock(layout),
        pytest.raises(LockedError, match="in use by another run"),
        output_lock(layout),
    ):
        pass
    assert not fs.exists(f"{bucket}/out/{LOCK}")
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "dead"}
    fs.pipe_file(f"{bucket}/out/{LOCK}", json.dumps(dead).encode())
    with output_lock(OutputLayout(root=f"s3://{bucket}/out", storage_options=options)):
        assert json.loads(fs.cat_file(f"{bucket}/out/{LOCK}"))["pid"] == os.getpid()
