from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline.io.layout import OutputLayout
from pipeline.io.lock import LOCK, LockedError, output_lock


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
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / LOCK).write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since_epoch": 0})
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
