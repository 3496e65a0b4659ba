"""The pool stages' scale benchmark in CI size: the whole chain over a small synthetic run,
its planted duplicates all found, and its table; no timing assertion."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.bench.pool_scale import pool_scale
from pipeline.bench.table import pool_table
from pipeline.cli import EXIT_CONFIG, main
from pipeline.synth.scored_pool import PoolSpec, exact_pairs, near_pairs, shard_rows


def test_planted_pairs_are_where_every_shard_task_puts_them():
    spec = PoolSpec(rows=30_000)
    shards = [shard_rows(spec, s) for s in range(spec.shards)]
    vectors = np.concatenate([shard["image"] for shard in shards])
    sha = [value for shard in shards for value in shard["sha256"]]
    first, second = near_pairs(spec.rows)
    cosines = np.sum(vectors[first] * vectors[second], axis=1)
    assert cosines.min() >= 0.955 and cosines.max() < 0.995  # semantic_dedup: >= 0.95
    first, second = exact_pairs(spec.rows)
    assert all(sha[a] == sha[b] for a, b in zip(first, second, strict=True))
    assert np.array_equal(vectors[first], vectors[second])
    planted = np.concatenate([*near_pairs(spec.rows), *exact_pairs(spec.rows)])
    assert len(set(planted.tolist())) == len(planted)  # no row in two pairs


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_the_chain_finds_every_planted_duplicate_and_reports_each_policy(tmp_path):
    result = pool_scale([2_000], workdir=tmp_path, kmeans_pools=(1_000_000,))
    run = result["runs"][0]
    found = run["duplicates"]
    assert found["near_found"] == found["near_planted"] == 100
    assert found["exact_found"] == found["exact_planted"] == 20
    assert found["other_rows_dropped_as_duplicates"] == found["first_of_pair_dropped"] == 0
    policies = {p["policy"]: p for p in run["policies"]}
    assert list(policies) == [
        "status",
        "caption",
        "score_top_fraction:clip",
        "exact_dedup",
        "semantic_dedup:clip",
    ]
    assert all(policies[p]["fit_s"] > 0 for p in list(policies)[2:])
    assert policies["semantic_dedup:clip"]["driver_peak_mb"] > 0
    assert result["kmeans"][0]["groups"] == 5
    rejected = pq.read_table(tmp_path / "pool-2000" / "out" / "rejected" / "00000.parquet")
    assert set(rejected["winnow_rejected_by"].to_pylist()) >= {"exact_dedup", "semantic_dedup:clip"}
    text = pool_table(result)
    assert "planted near-duplicates: 100 of 100 found (100.00%)" in text
    assert json.loads(json.dumps(result))["runs"][0]["rows"] == 2_000


def test_rows_that_are_not_whole_hundreds_are_refused(tmp_path, capsys):
    assert main(["bench", "--stage", "filter", "--rows", "250", "--output", str(tmp_path)]) == (
        EXIT_CONFIG
    )
    assert "--rows 250: give multiples of 100, 200 or more" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
