"""Reading input row groups: what the writer's narrow reads fetch from storage."""

from __future__ import annotations

import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.io.reader import read_input_row_groups


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
