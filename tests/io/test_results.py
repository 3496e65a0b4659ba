"""A run's results read back: the few images the report shows, without reading their row
groups whole."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.reader import PIECE_BUFFER
from pipeline.io.results import _images_at


def test_images_come_back_in_the_order_asked_from_any_row_group(tmp_path):
    images = [os.urandom(100) for _ in range(312)]
    path = tmp_path / "00000.parquet"
    with pq.ParquetWriter(path, pa.schema([("jpg", pa.binary())])) as writer:
        for first, rows in ((0, 5), (5, 300), (305, 7)):
            writer.write_table(pa.table({"jpg": images[first : first + rows]}))
    parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=PIECE_BUFFER)
    rows = [306, 2, 150, 2, 304, 999]
    assert _images_at(parquet, "jpg", rows) == [images[r] for r in rows[:-1]] + [None]


PEAK = """
import sys
import pyarrow as pa
import pyarrow.parquet as pq
from pipeline.io.reader import PIECE_BUFFER
from pipeline.io.results import _images_at

parquet = pq.ParquetFile(sys.argv[1], pre_buffer=False, buffer_size=PIECE_BUFFER)
found = _images_at(parquet, "jpg", [int(r) for r in sys.argv[2:]])
print(sum(len(image) for image in found), pa.default_memory_pool().max_memory())
"""


@pytest.mark.slow
def test_an_image_early_in_a_large_row_group_is_read_without_the_rest_of_it(tmp_path):
    """pyarrow's writer puts up to 1Mi rows in one row group; this one holds 240 MB."""
    rows = 6000
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.table({"jpg": [os.urandom(40_000) for _ in range(rows)]}), path)
    size = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), "10", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    read, peak = map(int, done.stdout.split())
    assert read == 2 * 40_000
    assert peak < 0.5 * size
