"""What reads fetch from a real S3 endpoint (moto's server on 127.0.0.1): the bytes they
read and no read-ahead past them."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs.core

from pipeline.config import InputConfig
from pipeline.io.reader import read_input_pieces, read_model_inputs
from pipeline.io.shards import discover

ROWS = 600


class Fetched:
    """Counts the bytes s3fs's open files fetch, by wrapping the real range request."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real = s3fs.core.S3File._fetch_range

        def counted(file: s3fs.core.S3File, start: int, end: int) -> bytes:
            data = real(file, start, end)
            self.bytes += len(data)
            return data

        monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counted)


def web_shard(rows: int) -> pa.Table:
    return pa.table(
        {
            "key": [f"{i:09d}" for i in range(rows)],
            "jpg": [os.urandom(50_000) for _ in range(rows)],
            "caption": [f"a photo of thing number {i}" for i in range(rows)],
            "status": ["success"] * rows,
        }
    )


def put(s3, tmp_path, table: pa.Table, **write) -> tuple[str, dict, int]:
    fs, bucket, options = s3
    local = tmp_path / "00000.parquet"
    pq.write_table(table, local, **write)
    fs.put(str(local), f"{bucket}/in/00000.parquet")
    return f"s3://{bucket}/in/00000.parquet", options, local.stat().st_size


def test_the_read_tasks_of_a_shard_on_s3_fetch_it_about_once(s3, tmp_path, monkeypatch):
    """img2dataset's 100-row groups in 200-row tasks. With s3fs's read-ahead each task
    fetched 50 MB past its first read: a shard of three tasks was fetched twice over."""
    url, options, size = put(s3, tmp_path, web_shard(ROWS), row_group_size=100)
    (shard,) = discover([url], options).shards
    tasks = shard.read_tasks(rows=200)
    assert len(tasks) == 3
    fetched = Fetched(monkeypatch)
    source = InputConfig(path=url, storage_options=options)
    read = pa.concat_tables(t for task in tasks for t in read_model_inputs(task, source))
    assert read.num_rows == ROWS
    assert size * 0.9 < fetched.bytes < size * 1.05


def test_the_writers_narrow_read_of_a_large_row_group_on_s3_leaves_the_images(
    s3, tmp_path, monkeypatch
):
    """The writer reads a row group larger than a batch a piece at a time, all but the
    image bytes: 0.3 MB of columns among 30 MB of images."""
    url, options, size = put(s3, tmp_path, web_shard(ROWS))
    assert pq.ParquetFile(tmp_path / "00000.parquet").num_row_groups == 1
    fetched = Fetched(monkeypatch)
    pieces = read_input_pieces(
        url, [0], columns=["key", "caption", "status"], storage_options=options, piece=256
    )
    assert [piece.num_rows for piece in pieces] == [256, 256, 88]
    assert 0 < fetched.bytes < size / 20
