"""Where the machine's CPU went while a job ran: its model actors, its readers, its
driver, Ray's own processes, and whatever else the machine was doing.

On a CPU, the benchmark's end-to-end rate falls short of the model-only one by
the CPU the towers did not get; on a GPU, an actor's process at one core is
bound by its host work. Sampling every process's CPU time once a second tells
who got it instead, on the machine the job ran on: a local Ray's processes are
this process's descendants, named by Ray after what they run.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

# What each kind's processes are called (Ray titles a worker after what it runs).
KINDS = {
    "model actors": ("ClipScorer",),
    "read + tokenize": ("read_stage", "tokenize_stage", "header_stage"),
}
DRIVER = "driver"
RAY = "Ray's own"
ELSE = "not this job"


@dataclass(kw_only=True)
class CpuUse:
    """Cores used on average, by kind, over `seconds`; `idle` is what nobody used."""

    cores: int
    seconds: float
    by_kind: dict[str, float] = field(default_factory=dict)
    idle: float = 0.0

    def describe(self) -> str:
        used = ", ".join(f"{kind} {cores:.2f}" for kind, cores in self.by_kind.items())
        return (
            f"CPU over the job's {self.seconds:.0f} s, in cores of {self.cores}: {used}, "
            f"idle {self.idle:.2f}"
        )


def kind_of(title: str, pid: int, driver: int) -> str:
    if pid == driver:
        return DRIVER
    for kind, marks in KINDS.items():
        if any(mark in title for mark in marks):
            return kind
    return RAY


class CpuSampler:
    """Samples this process and its descendants every `interval` s, by kind."""

    def __init__(self, *, interval: float = 1.0) -> None:
        self.interval = interval
        self.driver = os.getpid()
        self.seen: dict[int, float] = {}  # pid: its CPU seconds at the last sample
        self.used: Counter[str] = Counter()
        self.stop = threading.Event()

    def _processes(self) -> Iterator[psutil.Process]:
        me = psutil.Process(self.driver)
        yield me
        yield from me.children(recursive=True)

    def sample(self, *, first: bool = False) -> None:
        """Credit each process's CPU time since the last sample to its kind.

        The first sample only notes where each process stands; a process first
        seen later is new since then, all of its time this job's.
        """
        for process in self._processes():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    title = " ".join(process.cmdline())
            except psutil.Error:  # gone since it was listed
                continue
            now = times.user + times.system
            if not first:
                before = self.seen.get(process.pid, 0.0)
                self.used[kind_of(title, process.pid, self.driver)] += now - before
            self.seen[process.pid] = now

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


def _busy() -> float:
    """CPU seconds the machine spent on anything (Linux counts guest time in user time)."""
    times = psutil.cpu_times()._asdict()
    spare = ("idle", "iowait", "guest", "guest_nice")
    return sum(seconds for name, seconds in times.items() if name not in spare)


@contextmanager
def cpu_use(*, interval: float = 1.0) -> Iterator[CpuUse]:
    """Account the CPU used while the block runs; the result is filled in when it ends.

    A process that ends between two samples loses its last `interval` to `not this job`.
    """
    sampler = CpuSampler(interval=interval)
    result = CpuUse(cores=psutil.cpu_count() or 1, seconds=0.0)
    started, busy = time.monotonic(), _busy()
    sampler.sample(first=True)
    thread = threading.Thread(target=sampler.run, name="cpu-use", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        sampler.stop.set()
        thread.join()
        sampler.sample()
        result.seconds = time.monotonic() - started
        machine = (_busy() - busy) / result.seconds
        order = [*KINDS, DRIVER, RAY]
        result.by_kind = {k: sampler.used[k] / result.seconds for k in order}
        result.by_kind[ELSE] = max(0.0, machine - sum(result.by_kind.values()))
        result.idle = max(0.0, result.cores - machine)
