"""Semantic dedup finds planted near-duplicates across shards and keeps exactly one of each."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import parse_config
from pipeline.filters.semantic_dedup import spherical_kmeans
from pipeline.run import run
from pipeline.synth.scenes import Scene, render
from tests.builders import DEMO_CHECKPOINT, row, write_shard


def encode(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def variants(image: Image.Image) -> list[bytes]:
    """The same picture re-encoded, resized and slightly cropped."""
    side = image.size[0]
    return [
        encode(image),
        encode(image, 60),
        encode(image.resize((side * 4 // 5,) * 2)),
        encode(image.crop((6, 6, side - 6, side - 6))),
    ]


def test_spherical_kmeans_separates_obvious_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    points = np.concatenate([c + rng.normal(0, 0.05, (20, 3)) for c in centres])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    found = spherical_kmeans(points, 3, seed=0)
    assignment = np.argmax(points @ found.T, axis=1)
    assert [len(set(assignment[i * 20 : (i + 1) * 20])) for i in range(3)] == [1, 1, 1]
    assert len(set(assignment)) == 3


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_planted_near_duplicates_are_found_across_shards(tmp_path):
    rng = np.random.default_rng(3)
    planted = [
        Scene("red", "circle", "grey", "left", "large"),
        Scene("blue", "star", "sand", "right", "large"),
        Scene("yellow", "triangle", "grass", "centre", "large"),
        Scene("purple", "cross", "grey", "bottom", "large"),
    ]
    singles = [
        Scene("green", "square", "sky", "top", "small"),
        Scene("orange", "ring", "sky", "left", "small"),
        Scene("white", "circle", "grass", "right", "large"),
    ]
    shards: list[list[dict]] = [[], [], []]
    for group, scene in enumerate(planted):
        for copy, data in enumerate(variants(render(scene, rng, side=160))):
            shards[(group + copy) % 3].append(row(f"g{group}-{copy}", data, "a shape"))
    for index, scene in enumerate(singles):
        shards[index % 3].append(
            row(f"single-{index}", encode(render(scene, rng, side=160)), "a shape")
        )
    for index, rows in enumerate(shards):
        write_shard(tmp_path / "in" / f"{index:05d}.parquet", rows, row_group_size=4)
    config = parse_config(
        {
            "input": {"path": str(tmp_path / "in")},
            "output": {"path": str(tmp_path / "out")},
            "models": [{"name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT)}],
            "filters": [{"type": "semantic_dedup", "eps": 0.075, "cluster_size": 8}],
        }
    )
    result = run(config)
    kept = pa.concat_tables(
        [pq.read_table(p) for p in sorted((tmp_path / "out" / "filtered").glob("*.parquet"))]
    )
    keys = sorted(kept["key"].to_pylist())
    assert keys == ["g0-0", "g1-0", "g2-0", "g3-0", "single-0", "single-1", "single-2"]
    rejected = pa.concat_tables(
        [pq.read_table(p) for p in (tmp_path / "out" / "rejected").glob("*.parquet")]
    )
    for key, reason in zip(
        rejected["key"].to_pylist(), rejected["winnow_reject_reason"].to_pylist(), strict=True
    ):
        assert reason.startswith(f"near-duplicate of {key.split('-')[0]}-0 ")
    fitted = result.summary["filters"]["fitted"]["semantic_dedup:clip"]
    assert fitted["dropped"] == 12 and fitted["clusters"] >= 2
