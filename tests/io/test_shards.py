from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, InputConfig, parse_config
from pipeline.io.reader import model_inputs
from pipeline.io.shards import discover
from pipeline.io.webdataset import find_tars
from pipeline.run import _usable
from pipeline.schema import ROW, SHARD, UPSTREAM_ERROR, UPSTREAM_OK


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory")
    fs.rm("/", recursive=True) if fs.exists("/shards") else None
    yield fs
    for path in fs.ls("/", detail=False):
        fs.rm(path, recursive=True)


def put_table(fs, path, rows, row_group_size=3):
    table = pa.table(
        {"key": [str(i) for i in range(rows)], "jpg": [b"x"] * rows, "caption": ["c"] * rows}
    )
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle, row_group_size=row_group_size)


def test_directory_discovery_reads_footers_and_ignores_side_files(memfs):
    put_table(memfs, "/shards/00001.parquet", 7)
    put_table(memfs, "/shards/00000.parquet", 4)
    memfs.pipe("/shards/00000_stats.json", b"{}")
    memfs.pipe("/shards/_SUCCESS", b"")
    put_table(memfs, "/shards/_tmp.parquet", 2)
    found = discover(["memory://shards"], {})
    assert [s.name for s in found.shards] == ["00000", "00001"]
    assert found.shards[1].num_rows == 7
    assert found.shards[1].row_group_rows == (3, 3, 1)
    assert found.shards[1].row_group_starts == [0, 3, 6]
    assert [t["first_row"] for t in found.shards[1].read_tasks(rows=1)] == [0, 3, 6]
    assert found.shards[0].columns == ["key", "jpg", "caption"]


def test_img2dataset_row_groups_are_read_and_written_a_batch_at_a_time(memfs):
    """img2dataset writes a row group every 100 rows: one read each would pay an open,
    a footer and a request per column for every 100 rows."""
    put_table(memfs, "/shards/00000.parquet", 2048, row_group_size=100)
    shard = discover(["memory://shards"], {}).shards[0]
    spans = shard.spans(rows=1024)
    assert [(s.row_groups[0], len(s.row_groups), s.first_row, s.rows) for s in spans] == [
        (0, 10, 0, 1000),
        (10, 10, 1000, 1000),
        (20, 1, 2000, 48),
    ]
    tasks = shard.read_tasks(rows=1024)
    assert [(t["first_group"], t["groups"], t["first_row"]) for t in tasks] == [
        (0, 10, 0),
        (10, 10, 1000),
        (20, 1, 2000),
    ]
    # Heavy rows: a span holds no more bytes than a block, and a larger group goes alone.
    group_bytes = max(shard.row_group_bytes)
    assert [len(s.row_groups) for s in shard.spans(rows=1024, size=3 * group_bytes)][:2] == [3, 3]
    assert [len(s.row_groups) for s in shard.spans(rows=1024, size=1)] == [1] * 21


def test_a_row_group_larger_than_a_span_is_read_and_written_in_pieces(memfs):
    """pyarrow's writer puts up to 1Mi rows in one row group: such a group is taken a
    batch (or a block's bytes) at a time, never whole."""
    put_table(memfs, "/shards/00000.parquet", 2048, row_group_size=2000)
    shard = discover(["memory://shards"], {}).shards[0]
    assert [(s.rows, s.piece) for s in shard.spans(rows=256)] == [(2000, 256), (48, 48)]
    group_bytes = shard.row_group_bytes[0]
    by_bytes = shard.spans(rows=4096, size=group_bytes // 4)
    assert [(s.rows, s.piece) for s in by_bytes] == [(2000, 500), (48, 48)]
    # The row groups of img2dataset's layout are read in one piece each.
    put_table(memfs, "/shards/00000.parquet", 2048, row_group_size=100)
    shard = discover(["memory://shards"], {}).shards[0]
    tasks = shard.read_tasks(rows=1024)
    assert [(t["rows"], t["piece"]) for t in tasks] == [(1000, 1000), (1000, 1000), (48, 48)]
    # A row group alone, as the driver reads each to name a damaged one: in pieces of a batch.
    alone = shard.read_tasks(rows=1, piece=64)
    assert [(t["groups"], t["rows"], t["piece"]) for t in alone][:2] == [(1, 100, 64)] * 2


def test_globs_and_lists(memfs):
    for name in ("a/00000", "a/00001", "b/00002"):
        put_table(memfs, f"/{name}.parquet", 2)
    found = discover(["memory:///a/*.parquet", "memory:///b/00002.parquet"], {})
    assert [s.name for s in found.shards] == ["00000", "00001", "00002"]


def test_two_inputs_with_one_output_name_are_refused(memfs):
    put_table(memfs, "/a/00000.parquet", 2)
    put_table(memfs, "/b/00000.parquet", 2)
    with pytest.raises(ConfigError, match="would both write output shard '00000'"):
        discover(["memory:///a", "memory:///b"], {})


def test_missing_input_is_a_config_error(memfs):
    with pytest.raises(ConfigError, match="does not exist"):
        discover(["memory:///nowhere"], {})


def test_a_folder_of_the_other_format_names_the_setting_that_reads_it(memfs):
    memfs.pipe("/tars/00000.tar", b"")
    memfs.pipe("/tars/00001.tar", b"")
    with pytest.raises(
        ConfigError, match=r"holds 2 \.tar file\(s\): set input\.format: webdataset"
    ):
        discover(["memory:///tars"], {})
    put_table(memfs, "/shards/00000.parquet", 2)
    with pytest.raises(
        ConfigError, match=r"holds 1 \.parquet file\(s\): set input\.format: parquet"
    ):
        find_tars(InputConfig(path="memory:///shards", format="webdataset"))


def test_two_tars_with_one_name_are_refused_before_staging(memfs):
    memfs.pipe("/a/00000.tar", b"")
    memfs.pipe("/b/00000.tar", b"")
    with pytest.raises(ConfigError, match="would both be staged and written as shard '00000'"):
        find_tars(InputConfig(path=["memory:///a", "memory:///b"], format="webdataset"))


def test_img2dataset_sidecars_read_as_parquet_point_to_their_tars(memfs):
    memfs.pipe("/out/00000.tar", b"")
    with memfs.open("/out/00000.parquet", "wb") as handle:  # the sidecar: no image column
        pq.write_table(pa.table({"key": ["0"], "caption": ["c"], "status": ["success"]}), handle)
    config = parse_config(
        {"input": {"path": "memory:///out"}, "output": {"path": "/x"}, "models": [{"name": "RN50"}]}
    )
    _, failures = _usable(discover(["memory:///out"], {}), config)
    assert failures[0].error.startswith("missing column(s) jpg")
    assert failures[0].error.endswith("img2dataset's sidecar to a tar, input.format: webdataset")


def test_unreadable_shard_is_a_failure_not_a_crash(memfs):
    put_table(memfs, "/s/00000.parquet", 4)
    memfs.pipe("/s/00001.parquet", memfs.cat("/s/00000.parquet")[:-20])
    found = discover(["memory:///s"], {})
    assert [s.name for s in found.shards] == ["00000"]
    assert found.failures[0].name == "00001"
    assert "unreadable Parquet" in found.failures[0].error


def test_model_inputs_carry_upstream_failures():
    table = pa.table(
        {
            "jpg": [b"a", None, None],
            "caption": ["x", "y", None],
            "status": ["success", "failed_to_download", None],
            "error_message": [None, "HTTP 404", None],
        }
    )
    out = model_inputs(table, {"shard": 3, "first_row": 10}, InputConfig(path="x"))
    assert out[SHARD].to_pylist() == [3, 3, 3]
    assert out[ROW].to_pylist() == [10, 11, 12]
    assert out[UPSTREAM_OK].to_pylist() == [True, False, False]
    assert out[UPSTREAM_ERROR].to_pylist() == [None, "HTTP 404", "upstream status null"]


def test_inputs_without_upstream_status_are_all_ok():
    table = pa.table({"jpg": [b"a"], "caption": ["x"]})
    out = model_inputs(table, {"shard": 0, "first_row": 0}, InputConfig(path="x"))
    assert out[UPSTREAM_OK].to_pylist() == [True]
