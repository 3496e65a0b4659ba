"""One run at a time per output root: a lock file that names its owner and age.

A second run on the same output refuses with the owner's host, pid and age. A
lock left by a run that was killed on this host (its pid is gone) is taken
over; one from another host must be removed by hand, as the message says.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from pipeline.config import ConfigError
from pipeline.io.layout import OutputLayout

LOCK = "_lock.json"


class LockedError(ConfigError):
    """Another run holds the output root."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(owner: dict) -> bool:
    return owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1)))


@contextmanager
def output_lock(layout: OutputLayout) -> Iterator[None]:
    path = layout.path(LOCK)
    owner = layout.read_json(path)
    if owner and not _stale(owner):
        age = time.time() - float(owner.get("since_epoch", time.time()))
        raise LockedError(
            f"output {layout.url()} is in use by another run (host {owner.get('host')}, "
            f"pid {owner.get('pid')}, started {owner.get('since')}, {age:.0f}s ago). "
            f"Wait for it to finish; if no run is active, delete {layout.url(LOCK)}"
        )
    token = uuid.uuid4().hex
    layout.fs.makedirs(layout.root, exist_ok=True)
    layout.write_json(
        path,
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(),
            "since_epoch": time.time(),
            "token": token,
        },
    )
    if (layout.read_json(path) or {}).get("token") != token:
        raise LockedError(f"output {layout.url()} was locked by another run at the same moment")
    try:
        yield
    finally:
        current = layout.read_json(path) or {}
        if current.get("token") == token:
            layout.fs.rm(path)
