"""One run at a time per output root: a lock file that names its owner and age.

The lock is taken by exclusive create, so that of two runs that start at the
same moment exactly one wins: a hard link of a complete file onto the lock's
name on a local disk (it fails if the name exists), a conditional put
(If-None-Match) on S3. A second run refuses with the owner's host, pid and age.
A lock left by a run that was killed on this host (its pid is gone) is taken
over, again by one run only: on a local disk whoever first links the dead
lock aside, on S3 a put that holds only if the lock is still the one read
(If-Match). One from another host must be removed by hand, as the message says.
Storage with neither (GCS, Azure through fsspec) gets the lock written and read
back, which two runs within the same instant can both pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline.config import ConfigError
from pipeline.io.layout import OutputLayout

log = logging.getLogger(__name__)
LOCK = "_lock.json"
# Rounds of read, then create or take over, before a run gives up to a run that keeps
# changing the lock under it.
ATTEMPTS = 5


class LockedError(ConfigError):
    """Another run holds the output root."""


@dataclass(frozen=True)
class Held:
    """The lock as read: its owner (None: no lock) and the version a takeover must match."""

    owner: dict[str, Any] | None
    version: str | None = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LockFile:
    """A lock written and read back: the fallback where storage has no exclusive create."""

    def __init__(self, layout: OutputLayout) -> None:
        self.layout, self.path = layout, layout.path(LOCK)

    def read(self) -> Held:
        try:
            with self.layout.fs.open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return Held(None)
        return Held(json.loads(data), _digest(data))

    def create(self, data: bytes) -> bool:
        """Make the lock holding `data` if there is none: True if this call made it."""
        self.layout.fs.pipe_file(self.path, data)
        return self.read().owner == json.loads(data)

    def replace(self, data: bytes, held: Held) -> bool:
        """Put `data` in place of the lock if it is still `held`: True if this call did."""
        if self.read().version != held.version:
            return False
        return self.create(data)

    def remove(self) -> None:
        with suppress(FileNotFoundError):
            self.layout.fs.rm(self.path)


class LocalLockFile(LockFile):
    def _staged(self, data: bytes) -> str:
        staged = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(staged, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return staged

    def create(self, data: bytes) -> bool:
        staged = self._staged(data)
        try:
            os.link(staged, self.path)  # the file appears whole, or not at all if one exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(staged)

    def replace(self, data: bytes, held: Held) -> bool:
        # The dead lock's name for its takeover is its owner's token: only the first run
        # to link it there goes on, and it checks that what it linked is that dead lock.
        aside = f"{self.path}.{held.owner.get('token', 'none') if held.owner else 'none'}.dead"
        try:
            os.link(self.path, aside)
        except (FileExistsError, FileNotFoundError):
            return False
        try:
            with open(aside, "rb") as handle:
                if _digest(handle.read()) != held.version:
                    return False
            os.replace(self._staged(data), self.path)
            return True
        finally:
            os.unlink(aside)


class ObjectLockFile(LockFile):
    """S3's conditional puts: If-None-Match to create, If-Match on the ETag to take over."""

    def read(self) -> Held:
        try:
            etag = self.layout.fs.info(self.path)["ETag"]
            data = self.layout.fs.cat_file(self.path)
        except FileNotFoundError:
            return Held(None)
        # The ETag read first: if the lock changed before its bytes were read, a takeover
        # conditional on that ETag fails, as it should.
        return Held(json.loads(data), etag)

    def create(self, data: bytes) -> bool:
        try:
            self.layout.fs.pipe_file(self.path, data, mode="create")
            return True
        except FileExistsError:
            return False

    def replace(self, data: bytes, held: Held) -> bool:
        try:
            self.layout.fs.pipe_file(self.path, data, IfMatch=held.version)
            return True
        except (FileNotFoundError, OSError):  # 412: another run changed it first
            return False


def lock_file(layout: OutputLayout) -> LockFile:
    protocols = layout.fs.protocol
    protocols = {protocols} if isinstance(protocols, str) else set(protocols)
    if "file" in protocols:
        return LocalLockFile(layout)
    if "s3" in protocols:
        return ObjectLockFile(layout)
    log.warning(
        "the output lock on %s is written and read back (this storage has no exclusive "
        "create): two runs started within the same instant could both go ahead",
        layout.url(),
    )
    return LockFile(layout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(owner: dict[str, Any]) -> bool:
    return owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1)))


def _refusal(layout: OutputLayout, owner: dict[str, Any]) -> LockedError:
    age = time.time() - float(owner.get("since_epoch", time.time()))
    return LockedError(
        f"output {layout.url()} is in use by another run (host {owner.get('host')}, "
        f"pid {owner.get('pid')}, started {owner.get('since')}, {age:.0f}s ago). "
        f"Wait for it to finish; if no run is active, delete {layout.url(LOCK)}"
    )


@contextmanager
def output_lock(layout: OutputLayout) -> Iterator[None]:
    layout.fs.makedirs(layout.root, exist_ok=True)
    lock = lock_file(layout)
    token = uuid.uuid4().hex
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(),
        "since_epoch": time.time(),
        "token": token,
    }
    data = json.dumps(mine).encode()
    for _ in range(ATTEMPTS):
        held = lock.read()
        if held.owner is None:
            if lock.create(data):
                break
        elif not _stale(held.owner):
            raise _refusal(layout, held.owner)
        elif lock.replace(data, held):
            log.warning(
                "took over the output lock of run pid %s, which is no longer running",
                held.owner.get("pid"),
            )
            break
    else:
        raise LockedError(f"output {layout.url()} was locked by another run at the same moment")
    try:
        yield
    finally:
        if (lock.read().owner or {}).get("token") == token:
            lock.remove()
