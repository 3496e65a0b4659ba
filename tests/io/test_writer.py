"""The writer joins model output back to the input a span at a time, reading ahead."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.io import layout as layout_module
from pipeline.io import writer as writer_module
from pipeline.io.layout import SCORED, STATS, OutputLayout
from pipeline.io.shards import discover
from pipeline.io.sink import ShardSink
from pipeline.schema import ERROR, ROW, SHARD, STATUS
from pipeline.scoring.towers import embedding_array
from tests.builders import IMG2DATASET_SCHEMA, good_rows, write_shard

DIM = 4


def model_output(shard: int, first: int, rows: int) -> pa.Table:
    """What the actor sends back for rows first..first+rows: status, score, embeddings."""
    vectors = np.arange(rows * DIM, dtype=np.float32).reshape(rows, DIM) + first * DIM
    every = np.arange(rows)
    return pa.table(
        {
            SHARD: pa.array([shard] * rows, pa.int32()),
            ROW: pa.array(range(first, first + rows), pa.int64()),
            STATUS: pa.array(["ok"] * rows),
            ERROR: pa.nulls(rows, pa.string()),
            "clip_score": pa.array(np.arange(first, first + rows, dtype=np.float32)),
            "clip_image_embedding": embedding_array(vectors, every, rows, DIM, "float32"),
            "clip_text_embedding": embedding_array(vectors, every, rows, DIM, "float32"),
        }
    )


def write_scored(
    tmp_path, row_group_size: int, *, keep_image_bytes: bool = False
) -> tuple[pq.ParquetFile, pa.Table]:
    """A 20-row shard in row groups of `row_group_size`, joined by `join_outputs`."""
    source = write_shard(
        tmp_path / "in" / "00000.parquet", good_rows(0, 20), row_group_size=row_group_size
    )
    return join_outputs(tmp_path, source, keep_image_bytes=keep_image_bytes)


def join_outputs(
    tmp_path, source, *, keep_image_bytes: bool = False
) -> tuple[pq.ParquetFile, pa.Table]:
    """Join a 20-row shard's model output, arriving in batches of 5, to the shard with a
    batch size of 8; the written file and the input."""
    config = parse_config(
        {
            "input": {"path": str(tmp_path / "in")},
            "output": {
                "path": str(tmp_path / "out"),
                "embedding_dtype": "float32",
                "keep_image_bytes": keep_image_bytes,
            },
            "models": [{"name": "ViT-B-32", "batch_size": 8}],
        }
    )
    layout = OutputLayout(root=str(tmp_path / "out"), storage_options={})
    layout.prepare(SCORED, STATS)
    shards = discover([str(source)], {}).shards
    sink = ShardSink(
        shards=shards, layout=layout, config=config, dims={"clip": DIM}, metadata={"models": []}
    )
    sink.consume(model_output(0, first, min(5, 20 - first)) for first in range(0, 20, 5))
    assert sink.failures == []
    return pq.ParquetFile(tmp_path / "out" / "scored" / "00000.parquet"), pq.read_table(source)


def row_groups(written: pq.ParquetFile) -> list[int]:
    return [written.metadata.row_group(i).num_rows for i in range(written.num_row_groups)]


@pytest.mark.parametrize("ahead", [10, 12, 16384])
def test_output_rows_join_their_input_rows_however_far_the_writer_reads_ahead(
    tmp_path, monkeypatch, ahead
):
    monkeypatch.setattr("pipeline.io.writer.READ_AHEAD_ROWS", ahead)
    written, inputs = write_scored(tmp_path, row_group_size=3)
    # Batches that cut across the spans (6, 6 and 8 rows: three row groups of 3 make more
    # than a batch of 8).
    assert row_groups(written) == [6, 6, 8]
    scored = written.read()
    assert scored["key"].to_pylist() == inputs["key"].to_pylist()
    assert scored["caption"].to_pylist() == inputs["caption"].to_pylist()
    assert scored["clip_score"].to_pylist() == list(range(20))
    assert scored["clip_image_embedding"].to_pylist()[7] == [28.0, 29.0, 30.0, 31.0]


@pytest.mark.parametrize("keep_image_bytes", [False, True])
def test_a_row_group_larger_than_a_batch_is_written_a_batch_at_a_time(tmp_path, keep_image_bytes):
    """pyarrow's writer puts up to 1Mi rows in one row group: neither its output nor its
    input (image bytes included, where kept) is held whole."""
    written, inputs = write_scored(tmp_path, row_group_size=20, keep_image_bytes=keep_image_bytes)
    assert row_groups(written) == [8, 8, 4]
    scored = written.read()
    assert scored["key"].to_pylist() == inputs["key"].to_pylist()
    assert scored["clip_score"].to_pylist() == list(range(20))
    assert scored["clip_image_embedding"].to_pylist()[9] == [36.0, 37.0, 38.0, 39.0]
    assert ("jpg" in scored.column_names) == keep_image_bytes
    if keep_image_bytes:
        assert scored["jpg"].to_pylist() == inputs["jpg"].to_pylist()


def test_small_row_groups_then_a_large_one_join_their_own_rows(tmp_path):
    """Row groups of 3, then one of 14 (read and written in pieces of 8): every output row
    joins its own input row."""
    source = tmp_path / "in" / "00000.parquet"
    source.parent.mkdir(parents=True)
    table = pa.Table.from_pylist(good_rows(0, 20), schema=IMG2DATASET_SCHEMA)
    with pq.ParquetWriter(source, table.schema) as writer:
        writer.write_table(table.slice(0, 6), row_group_size=3)
        writer.write_table(table.slice(6), row_group_size=14)
    written, inputs = join_outputs(tmp_path, source)
    assert row_groups(written) == [6, 8, 6]
    assert written.read()["key"].to_pylist() == inputs["key"].to_pylist()


def sink_for(tmp_path, sources: list) -> ShardSink:
    config = parse_config(
        {
            "input": {"path": str(tmp_path / "in")},
            "output": {"path": str(tmp_path / "out"), "embedding_dtype": "float32"},
            "models": [{"name": "ViT-B-32", "batch_size": 8}],
        }
    )
    layout = OutputLayout(root=str(tmp_path / "out"), storage_options={})
    layout.prepare(SCORED, STATS)
    shards = discover([str(s) for s in sources], {}).shards
    return ShardSink(
        shards=shards, layout=layout, config=config, dims={"clip": DIM}, metadata={"models": []}
    )


def test_the_next_shards_inputs_are_read_before_its_rows_arrive(tmp_path, monkeypatch):
    """The writer's read of a shard's other columns (on object storage, most of its time)
    runs on another thread while the shard before it is written."""
    sources = [
        write_shard(tmp_path / "in" / f"0000{i}.parquet", good_rows(0, 10), row_group_size=5)
        for i in range(3)
    ]
    sink = sink_for(tmp_path, sources)
    events: list[tuple[str, int]] = []
    read = writer_module.read_input_row_groups

    def logged(url, *args, **kwargs):
        events.append(("read", int(url[-9:-8])))
        return read(url, *args, **kwargs)

    monkeypatch.setattr(writer_module, "read_input_row_groups", logged)

    def outputs():
        for shard in range(3):
            time.sleep(0.5)  # the model at work
            events.append(("rows", shard))
            yield model_output(shard, 0, 10)

    sink.consume(outputs())
    assert sink.failures == []
    assert [record["shard"] for record in sink.committed] == ["00000", "00001", "00002"]
    for shard in range(3):
        assert events.index(("read", shard)) < events.index(("rows", shard)), events


def test_a_shard_whose_prefetched_read_fails_fails_alone(tmp_path):
    sources = [
        write_shard(tmp_path / "in" / f"0000{i}.parquet", good_rows(0, 10), row_group_size=5)
        for i in range(2)
    ]
    sink = sink_for(tmp_path, sources)
    sources[0].write_bytes(b"not parquet any more")
    sink.consume(model_output(shard, 0, 10) for shard in range(2))
    assert [record["shard"] for record in sink.committed] == ["00001"]
    (failure,) = sink.failures
    assert failure.name == "00000"
    assert "cannot write output" in failure.error


def test_shards_commit_in_order_while_the_next_rows_are_written(tmp_path, monkeypatch):
    """A commit (on S3 a copy, a delete and a stats file) does not hold up the rows
    after it; every shard is committed by the time the stream ends."""
    sources = [
        write_shard(tmp_path / "in" / f"0000{i}.parquet", good_rows(0, 10), row_group_size=5)
        for i in range(3)
    ]
    sink = sink_for(tmp_path, sources)
    events: list[tuple[str, str]] = []
    move = layout_module.commit_file

    def slow(fs, temporary, final):
        if "/scored/" in final:
            time.sleep(0.3)
            events.append(("moved", final[-13:-8]))
        move(fs, temporary, final)

    monkeypatch.setattr(layout_module, "commit_file", slow)

    def outputs():
        for shard in range(3):
            events.append(("rows", f"0000{shard}"))
            yield model_output(shard, 0, 10)

    sink.consume(outputs())
    assert [record["shard"] for record in sink.committed] == ["00000", "00001", "00002"]
    assert events.index(("rows", "00001")) < events.index(("moved", "00000")), events
    assert all((tmp_path / "out" / "stats" / f"0000{i}.json").exists() for i in range(3))


def test_a_shard_that_cannot_be_committed_fails_alone(tmp_path, monkeypatch):
    sources = [
        write_shard(tmp_path / "in" / f"0000{i}.parquet", good_rows(0, 10), row_group_size=5)
        for i in range(3)
    ]
    sink = sink_for(tmp_path, sources)
    move = layout_module.commit_file

    def refused(fs, temporary, final):
        if final.endswith("/scored/00001.parquet"):
            raise PermissionError("access denied")
        move(fs, temporary, final)

    monkeypatch.setattr(layout_module, "commit_file", refused)
    sink.consume(model_output(shard, 0, 10) for shard in range(3))
    assert [record["shard"] for record in sink.committed] == ["00000", "00002"]
    (failure,) = sink.failures
    assert (failure.name, failure.error) == ("00001", "cannot commit output: access denied")
    assert not (tmp_path / "out" / "stats" / "00001.json").exists()
    assert sorted(p.name for p in (tmp_path / "out" / "scored").iterdir()) == [
        "00000.parquet",
        "00002.parquet",
    ]
