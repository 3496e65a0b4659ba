"""Ending a process with everything it started, as a scheduler or a dying machine would."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def kill_session(leader: int) -> None:
    """SIGKILL every live process of the session `leader` started; wait until none is left.

    Ray gives its workers process groups of their own, so the session is what holds
    everything a run or a node started.
    """
    deadline = time.monotonic() + 60
    while members := session_members(leader):
        assert time.monotonic() < deadline, f"processes {members} outlived SIGKILL"
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def session_members(leader: int) -> list[int]:
    """Live (not zombie) processes whose session is `leader`'s, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, session = fields[0], int(fields[3])
            if session == leader and state not in ("Z", "X"):
                members.append(int(entry.name))
    return members
