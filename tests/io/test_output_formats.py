"""The scored output opens as it is in pandas, pyarrow, DuckDB and Polars."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, good_rows, row, write_shard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("formats")
    rows = [*good_rows(0, 6), row("broken", b"nope", "a caption")]
    write_shard(root / "in" / "00000.parquet", rows)
    data = config_data(root / "in", root / "out", tiny_checkpoint)
    data["output"] = {"path": str(root / "out")}  # float16 embeddings, the default
    run(parse_config(data))
    return root / "out" / "scored" / "00000.parquet"


def test_pyarrow_and_pandas(scored):
    table = pq.read_table(scored)
    frame = pd.read_parquet(scored)
    assert len(frame) == table.num_rows == 7
    assert frame["clip_score"].dtype == np.float32
    assert frame["clip_score"].isna().tolist() == [False] * 6 + [True]
    assert len(frame["clip_image_embedding"].iloc[0]) == 32


def test_polars(scored):
    frame = pl.read_parquet(scored)
    assert frame.height == 7
    assert frame.schema["clip_score"] == pl.Float32
    assert frame["winnow_status"].to_list()[-1] == "decode_error"


def test_duckdb_cosine_over_embedding_columns_matches_the_score(scored):
    rows = duckdb.sql(
        f"""
        SELECT clip_score,
               array_cosine_similarity(clip_image_embedding::FLOAT[32],
                                       clip_text_embedding::FLOAT[32]) AS cosine
        FROM '{scored}' WHERE winnow_status = 'ok'
        """
    ).fetchall()
    assert len(rows) == 6
    for score, cosine in rows:
        assert abs(score - cosine) < 2e-3  # float16 storage, float32 score
