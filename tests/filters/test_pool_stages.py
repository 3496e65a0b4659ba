"""The dedup policies as Ray jobs: the same drops as a plain computation over the whole pool,
with drop lists written per shard under the output root."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.filters import exact_dedup, semantic_dedup
from pipeline.filters.curate import build_policies
from pipeline.schema import ROW, SHARD_NAME

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

SHARDS = 5


def policy(tmp_path, spec, **source):
    config = parse_config(
        {
            "input": {"path": str(tmp_path / "in"), **source},
            "output": {"path": str(tmp_path / "out")},
            "models": [{"name": "ViT-B-32"}],
            "filters": [spec],
        }
    )
    return build_policies(config)[-1]


def in_shards(columns: dict) -> list[pa.Table]:
    """The pool as the pool stage yields it: shard by shard, each row with its shard and row."""
    table = pa.table(columns)
    names = [f"{i:05d}" for i in np.arange(table.num_rows) % SHARDS]
    table = table.append_column(SHARD_NAME, pa.array(names))
    shards = []
    for name in sorted(set(names)):
        part = table.filter(pa.compute.equal(table[SHARD_NAME], name))
        shards.append(part.append_column(ROW, pa.array(np.arange(part.num_rows), pa.int64())))
    return shards


def drops_of(fitted, shards: list[pa.Table]) -> dict[tuple[str, int], str]:
    """Every drop, as the per-shard views of the filter tasks decide them."""
    found = {}
    for table in shards:
        name = table[SHARD_NAME][0].as_py()
        verdict = fitted.for_shard(name).decide(table)
        for row, reason in zip(table[ROW].to_pylist(), verdict.reasons, strict=True):
            if reason is not None:
                found[(name, row)] = reason
    return found


def fit(fitted, shards, tmp_path, name="policy"):
    import ray.data

    fitted.fit(ray.data.from_arrow(shards), folder=str(tmp_path / "out" / "_pool" / name))
    return fitted


@pytest.mark.parametrize("id_column", ["key", None])
def test_exact_dedup_across_many_buckets_equals_sorting_the_pool(tmp_path, monkeypatch, id_column):
    monkeypatch.setattr(exact_dedup, "BUCKET_ROWS", 64)  # about 16 buckets for 1,000 rows
    rng = np.random.default_rng(0)
    rows = 1000
    keys = [None if rng.random() < 0.05 else f"h{v}" for v in rng.integers(0, 300, rows)]
    ids = [f"id{v:05d}" for v in rng.permutation(rows)]
    shards = in_shards({"sha256": keys, "key": ids})
    fitted = fit(policy(tmp_path, {"type": "exact_dedup"}, id_column=id_column), shards, tmp_path)

    pool = pa.concat_tables(shards).filter(pa.compute.is_valid(pa.concat_tables(shards)["sha256"]))
    order = [("sha256", "ascending"), *([("key", "ascending")] if id_column else [])]
    pool = pool.sort_by([*order, (SHARD_NAME, "ascending"), (ROW, "ascending")]).to_pylist()
    expected, first = {}, None
    for r in pool:
        if first is not None and first["sha256"] == r["sha256"]:
            kept = first["key"] if id_column else f"{first[SHARD_NAME]} row {first[ROW]}"
            expected[(r[SHARD_NAME], r[ROW])] = f"same sha256 as {kept}"
        else:
            first = r
    assert drops_of(fitted, shards) == expected
    assert fitted.state()["dropped"] == len(expected) > 400
    written = sorted(p.name for p in (tmp_path / "out" / "_pool" / "policy").glob("*.parquet"))
    assert written == [f"{i:05d}.parquet" for i in range(SHARDS)]


def clustered_pool(rows: int, pairs: int, width: int = 32) -> tuple[np.ndarray, list[str]]:
    """Unit vectors around 40 topics, with `pairs` near-duplicates of random rows."""
    rng = np.random.default_rng(1)
    topics = rng.standard_normal((40, width))
    vectors = topics[rng.integers(40, size=rows)] + 0.6 * rng.standard_normal((rows, width))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for target, source in zip(
        rng.choice(rows, pairs, replace=False), rng.integers(0, rows, pairs), strict=True
    ):
        copy = vectors[source] + 0.04 * rng.standard_normal(width)
        vectors[target] = copy / np.linalg.norm(copy)
    return vectors.astype(np.float32), [f"id{v:05d}" for v in rng.permutation(rows)]


def brute_force(shards: list[pa.Table], threshold: float) -> set[tuple[str, int]]:
    """The rows with an earlier row (by id) at cosine >= threshold, over the whole pool."""
    pool = pa.concat_tables(shards).sort_by(
        [("key", "ascending"), (SHARD_NAME, "ascending"), (ROW, "ascending")]
    )
    vectors = semantic_dedup.normalised(pool["clip_image_embedding"])
    sims = np.tril(vectors @ vectors.T, k=-1)
    dropped = np.flatnonzero((sims >= threshold).any(axis=1))
    names, rows = pool[SHARD_NAME].to_pylist(), pool[ROW].to_pylist()
    return {(names[d], rows[d]) for d in dropped}


@pytest.mark.parametrize("probes", [3, 64])
def test_semantic_dedup_in_groups_and_clusters_finds_what_comparing_every_pair_finds(
    tmp_path, monkeypatch, probes
):
    monkeypatch.setattr(semantic_dedup, "GROUP_ROWS", 1000)  # 3 coarse groups
    vectors, ids = clustered_pool(rows=3000, pairs=150)
    embeddings = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    shards = in_shards({"clip_image_embedding": embeddings, "key": ids})
    spec = {"type": "semantic_dedup", "cluster_size": 100, "eps": 0.05, "probes": probes}
    fitted = fit(policy(tmp_path, spec), shards, tmp_path)
    state = fitted.state()
    assert state["groups"] == 3 and state["clusters"] >= 25

    expected = brute_force(shards, 0.95)
    found = drops_of(fitted, shards)
    assert len(expected) >= 140
    assert set(found) <= expected  # nothing but near-duplicates
    if probes >= state["clusters"]:
        assert set(found) == expected  # every cluster within reach visited: exact
    else:
        assert len(found) >= 0.99 * len(expected)
    assert all(r.startswith("near-duplicate of id") for r in found.values())


def test_a_refit_replaces_the_drop_lists_it_leaves_behind(tmp_path):
    shards = in_shards({"sha256": ["a", "a", "b", "c", "c", "d"] * 2, "key": list("abcdefghijkl")})
    first = fit(policy(tmp_path, {"type": "exact_dedup"}), shards, tmp_path)
    folder = tmp_path / "out" / "_pool" / "policy"
    assert first.state()["dropped"] == 8 and len(list(folder.glob("*.parquet"))) == 5
    shards = in_shards({"sha256": list("abcdefghijkl"), "key": list("abcdefghijkl")})
    second = fit(policy(tmp_path, {"type": "exact_dedup"}), shards, tmp_path)
    assert second.state()["dropped"] == 0 and not list(folder.iterdir())
    assert drops_of(second, shards) == {}
