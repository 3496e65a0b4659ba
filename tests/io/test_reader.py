"""Reading input row groups: what narrow reads fetch from storage, and large row groups
read in pieces."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.config import InputConfig
from pipeline.io.layout import parquet_options
from pipeline.io.reader import read_input_row_groups, read_model_inputs
from pipeline.io.shards import discover
from pipeline.schema import CAPTION, IMAGE, ROW


class CountingStore(MemoryFileSystem):
    """An in-memory object store that counts the bytes its reads return."""

    protocol = "counting"
    fetched = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("counting://"))

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        CountingStore.fetched += len(data)
        return data


def test_a_narrow_read_from_object_storage_fetches_its_columns_not_the_images():
    fsspec.register_implementation("counting", CountingStore, clobber=True)
    rows = 60
    table = pa.table(
        {
            "key": [f"{i:04d}" for i in range(rows)],
            "jpg": [os.urandom(300_000) for _ in range(rows)],
            "caption": [f"caption {i}" for i in range(rows)],
        }
    )
    store = CountingStore()
    with store.open("/in/00000.parquet", "wb") as handle:
        pq.write_table(table, handle, row_group_size=10)
    size = store.size("/in/00000.parquet")
    CountingStore.fetched = 0
    read = read_input_row_groups(
        "counting:///in/00000.parquet",
        [1, 2],
        columns=["key", "caption", "not-in-this-shard"],
        storage_options={},
        exact=True,
    )
    assert read.column_names == ["key", "caption"]
    assert read["key"].to_pylist() == [f"{i:04d}" for i in range(10, 30)]
    assert read["caption"].to_pylist() == [f"caption {i}" for i in range(10, 30)]
    # The footer and two columns of 20 rows, not the 6 MB of images between them.
    assert 0 < CountingStore.fetched < size / 20


class FlakyStore(MemoryFileSystem):
    """An in-memory object store whose connection drops once, at one read of a file."""

    protocol = "flaky"
    reads = 0
    drop_at = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("flaky://"))

    def _open(self, path, mode="rb", **kwargs):
        if mode != "rb":
            return super()._open(path, mode, **kwargs)
        return FlakyFile(self.store[self._strip_protocol(path)].getvalue())


class FlakyFile(io.BytesIO):
    def read(self, size=-1):
        FlakyStore.reads += 1
        if FlakyStore.reads == FlakyStore.drop_at:
            raise ConnectionError("connection reset by peer")
        return super().read(size)


def one_row_group(rows: int) -> pa.Table:
    return pa.table(
        {
            "jpg": [os.urandom(2_000) for _ in range(rows)],
            "caption": [f"caption {i}" for i in range(rows)],
        }
    )


def test_a_row_group_larger_than_a_read_comes_in_pieces_resuming_after_a_dropped_connection(
    monkeypatch, caplog
):
    fsspec.register_implementation("flaky", FlakyStore, clobber=True)
    monkeypatch.setattr("pipeline.io.reader.PIECE_BUFFER", 64 * 1024)  # many reads of a column
    monkeypatch.setattr("pipeline.io.retry.time.sleep", lambda seconds: None)
    table = one_row_group(1000)
    store = FlakyStore()
    with store.open("/in/00000.parquet", "wb") as handle:
        # One row group (pyarrow's default), in pages of about 64 KB: many reads of it.
        pq.write_table(table, handle, data_page_size=2**16, write_batch_size=16)
    shard = discover(["flaky:///in/00000.parquet"], {}).shards[0]
    (task,) = shard.read_tasks(rows=256)
    assert (task["rows"], task["piece"]) == (1000, 256)
    source = InputConfig(path="flaky:///in")
    FlakyStore.reads, FlakyStore.drop_at = 0, 0
    assert sum(piece.num_rows for piece in read_model_inputs(task, source)) == 1000
    whole = FlakyStore.reads  # the reads of one pass
    FlakyStore.reads, FlakyStore.drop_at = 0, whole // 2
    pieces, reads = [], []
    for piece in read_model_inputs(task, source):
        pieces.append(piece)
        reads.append(FlakyStore.reads)
    assert reads[0] < whole // 2 < reads[-1]  # the connection dropped after pieces were given
    assert "retry 1/3" in caplog.text
    assert [piece.num_rows for piece in pieces][:3] == [256, 256, 256]
    read = pa.concat_tables(pieces)
    assert read[ROW].to_pylist() == list(range(1000))
    assert read[IMAGE].to_pylist() == table["jpg"].to_pylist()
    assert read[CAPTION].to_pylist() == [c.encode() for c in table["caption"].to_pylist()]


PEAK = """
import sys
import pyarrow as pa
from pipeline.config import InputConfig
from pipeline.io.reader import read_model_inputs
from pipeline.io.shards import discover

(shard,) = discover([sys.argv[1]], {}).shards
(task,) = shard.read_tasks(rows=100)
rows = sum(piece.num_rows for piece in read_model_inputs(task, InputConfig(path=sys.argv[1])))
print(rows, pa.default_memory_pool().max_memory())
"""


@pytest.mark.slow
def test_reading_a_large_row_group_in_pieces_holds_a_fraction_of_it(tmp_path):
    """Whole, the 240 MB row group below took 410 MB of Arrow memory to read; in pieces of
    100 rows 139 MB, most of it the dictionary page pyarrow's writer makes of the first
    1,024 images."""
    rows = 6000
    path = tmp_path / "00000.parquet"
    images = [os.urandom(40_000) for _ in range(rows)]
    pq.write_table(pa.table({"jpg": images, "caption": [f"c{i}" for i in range(rows)]}), path)
    size = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True
    )
    read, peak = map(int, done.stdout.split())
    assert read == rows
    assert peak < 0.75 * size


def test_a_row_group_winnow_writes_is_read_in_pieces_without_holding_it_whole(tmp_path):
    """Winnow's own files with image bytes (kept in scored output, in filtered output, and
    staged from WebDataset tars) in pages of a few rows, with no dictionary of images.
    pyarrow's defaults, for contrast, make a page and a dictionary page of 1,024 images."""
    rows = 1024
    table = pa.table({"jpg": [os.urandom(40_000) for _ in range(rows)], "caption": ["c"] * rows})
    ours, default = tmp_path / "ours" / "00000.parquet", tmp_path / "default" / "00000.parquet"
    for path in (ours, default):
        path.parent.mkdir()
    pq.write_table(table, ours, **parquet_options(table.schema))
    pq.write_table(table, default)
    size = pq.ParquetFile(ours).metadata.row_group(0).total_byte_size

    def peak(path) -> int:
        done = subprocess.run(
            [sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True
        )
        read, most = map(int, done.stdout.split())
        assert read == rows
        return most

    assert peak(ours) < 0.75 * size  # 0.58 here
    assert peak(default) > 1.5 * size  # 2.4 here
