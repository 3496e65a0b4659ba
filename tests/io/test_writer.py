"""The writer joins model output back to the input a span at a time, reading ahead."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.io.layout import SCORED, STATS, OutputLayout
from pipeline.io.reader import ROW, SHARD
from pipeline.io.shards import discover
from pipeline.io.sink import ShardSink
from pipeline.scoring.scorer import ERROR, STATUS, embedding_column
from tests.builders import good_rows, write_shard

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
            "clip_image_embedding": embedding_column(vectors, every, rows, DIM, "float32"),
            "clip_text_embedding": embedding_column(vectors, every, rows, DIM, "float32"),
        }
    )


@pytest.mark.parametrize("ahead", [10, 12, 16384])
def test_output_rows_join_their_input_rows_however_far_the_writer_reads_ahead(
    tmp_path, monkeypatch, ahead
):
    monkeypatch.setattr("pipeline.io.writer.READ_AHEAD_ROWS", ahead)
    source = write_shard(tmp_path / "in" / "00000.parquet", good_rows(0, 20), row_group_size=3)
    config = parse_config(
        {
            "input": {"path": str(tmp_path / "in")},
            "output": {"path": str(tmp_path / "out"), "embedding_dtype": "float32"},
            "models": [{"name": "ViT-B-32", "batch_size": 8}],
        }
    )
    layout = OutputLayout(root=str(tmp_path / "out"), storage_options={})
    layout.prepare(SCORED, STATS)
    shards = discover([str(source)], {}).shards
    sink = ShardSink(
        shards=shards, layout=layout, config=config, dims={"clip": DIM}, metadata={"models": []}
    )
    # Batches that cut across the spans (6, 6 and 8 rows: three row groups of 3 make more
    # than a batch of 8).
    sink.consume(model_output(0, first, min(5, 20 - first)) for first in range(0, 20, 5))
    assert sink.failures == []
    written = pq.ParquetFile(tmp_path / "out" / "scored" / "00000.parquet")
    assert [written.metadata.row_group(i).num_rows for i in range(3)] == [6, 6, 8]
    scored, inputs = written.read(), pq.read_table(source)
    assert scored["key"].to_pylist() == inputs["key"].to_pylist()
    assert scored["caption"].to_pylist() == inputs["caption"].to_pylist()
    assert scored["clip_score"].to_pylist() == list(range(20))
    assert scored["clip_image_embedding"].to_pylist()[7] == [28.0, 29.0, 30.0, 31.0]
