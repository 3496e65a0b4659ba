"""Peak memory of the driver and of every Ray worker does not grow with the number of shards.

Private memory is what streaming bounds; blocks in Ray's object store are shared pages,
bounded by Ray Data's backpressure instead.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, jpeg, row, write_shard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

ROWS = 40
PADDING = 512 * 1024
MB = 2**20


def heavy_rows(shard: int) -> list[dict]:
    """Small JPEGs carrying 512 KB of trailing bytes each: decoders stop at the end-of-image
    marker, so decoding stays cheap while every row weighs what a large web image weighs."""
    return [
        row(f"{shard:05d}{i:04d}", jpeg(shard * 1000 + i) + os.urandom(PADDING), f"photo {i}")
        for i in range(ROWS)
    ]


def private(process: psutil.Process) -> int:
    """Resident memory less shared pages: the object store's mapped blocks are Ray's to bound."""
    info = process.memory_info()
    return info.rss - info.shared


class PeakRss:
    """Peak private memory of this process and of each of its descendants (Ray's workers)."""

    def __init__(self) -> None:
        self.driver = 0
        self.workers: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            self.driver = max(self.driver, private(me))
            for child in me.children(recursive=True):
                try:
                    rss = private(child)
                except psutil.Error:
                    continue
                self.workers[child.pid] = max(self.workers.get(child.pid, 0), rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peaks(tmp_path: Path, checkpoint: Path, shards: int) -> tuple[int, int]:
    folder = tmp_path / f"in{shards}"
    for shard in range(shards):
        write_shard(folder / f"{shard:05d}.parquet", heavy_rows(shard), row_group_size=16)
    config = parse_config(config_data(folder, tmp_path / f"out{shards}", checkpoint))
    with PeakRss() as rss:
        result = run(config)
    assert result.failed == []
    assert result.summary["rows"] == shards * ROWS
    return rss.driver, max(rss.workers.values())


def test_peak_memory_does_not_grow_with_the_number_of_shards(tmp_path, tiny_checkpoint):
    few, many = 2, 20
    extra = (many - few) * ROWS * PADDING
    few_driver, few_worker = peaks(tmp_path, tiny_checkpoint, few)
    many_driver, many_worker = peaks(tmp_path, tiny_checkpoint, many)
    print(
        f"peak private memory, {few} vs {many} shards ({extra // MB} MB more input): "
        f"driver {few_driver // MB} vs {many_driver // MB} MB, "
        f"largest worker {few_worker // MB} vs {many_worker // MB} MB"
    )
    assert many_driver - few_driver < extra / 4
    assert many_worker - few_worker < extra / 4
