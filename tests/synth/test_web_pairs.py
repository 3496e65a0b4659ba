"""Web-like benchmark pairs: made once per spec, reused by every layout compared on them."""

from __future__ import annotations

from dataclasses import replace

import pyarrow.parquet as pq

from pipeline.synth.web_pairs import WebPairsSpec, web_pairs


def test_generated_pairs_are_reused_only_for_the_same_spec(tmp_path):
    spec = WebPairsSpec(pairs=8, shards=2, min_side=64, max_side=96)
    first = web_pairs(tmp_path, spec)
    assert first["pairs"] == first["distinct_images"] == 8
    made = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.parquet")}
    assert len(made) == 2
    assert web_pairs(tmp_path, spec) == first
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.parquet")} == made
    fewer = web_pairs(tmp_path, replace(spec, pairs=6, shards=1))
    assert fewer["pairs"] == 6
    assert [pq.read_metadata(p).num_rows for p in tmp_path.glob("*.parquet")] == [6]
