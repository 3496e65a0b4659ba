"""Peak resident memory of the driver and of each Ray worker process, per measured step.

Linux keeps each process's peak RSS (VmHWM) and resets it when "5" is written
to /proc/PID/clear_refs, so a step's peak is read after resetting it at the
step's start. Ray's worker processes are those titled `ray::...`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

MB = 1 << 20


def _workers() -> list[int]:
    pids = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and cmdline[0].startswith("ray::"):
            pids.append(process.pid)
    return pids


def _reset(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:  # gone, or not ours
        pass


def _peak(pid: int) -> int:
    """VmHWM in bytes; 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Peaks:
    """The driver's peak and the largest worker's peak over a step, in bytes."""

    driver: int = 0
    worker: int = 0
    workers: int = 0
    seen: set[int] = field(default_factory=set)

    def as_mb(self) -> dict[str, float]:
        return {
            "driver_peak_mb": round(self.driver / MB, 1),
            "worker_peak_mb": round(self.worker / MB, 1),
            "workers": self.workers,
        }


@contextmanager
def peaks() -> Iterator[Peaks]:
    """Measure the peaks of the step run inside; workers that start during it count from
    their start, and those that end during it are read as they are seen at the end."""
    found = Peaks()
    for pid in [os.getpid(), *_workers()]:
        _reset(pid)
    yield found
    workers = _workers()
    found.driver = _peak(os.getpid())
    found.worker = max((_peak(pid) for pid in workers), default=0)
    found.workers = len(workers)
