"""`semantic_dedup`: near-duplicate images, SemDeDup-style: k-means clusters, then
pairwise cosine within each.

A Ray job over the pool: the rows' image embeddings are clustered with a
spherical k-means fitted on a sample, grouped by cluster (a Ray Data shuffle,
spilling to disk as needed), and within each cluster a row is dropped when an
earlier row (by id) has cosine >= 1 - eps with it. So each group of
near-duplicates keeps exactly its smallest id.

Memory: the driver holds only the k-means sample and the list of dropped rows;
each task holds one cluster's embeddings, compared block by block, so
`cluster_size` bounds a task's memory. At 100M rows: cluster_size 5,000 gives
20,000 clusters; the sample (50 rows a cluster, at most 1M) fits a driver;
the shuffle moves the embeddings once (about 100 GB at 512 float16 dims, spilled
by Ray's object store); the pairwise work is n x cluster_size, about 5e11
multiply-adds, minutes on a few nodes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.config import FilterSpec, WinnowConfig
from pipeline.filters.base import DropListPolicy
from pipeline.schema import CLUSTER, ROW, SHARD_NAME, embedding_column

SAMPLE_PER_CLUSTER = 50
BLOCK = 1024


def normalised(column: Any) -> np.ndarray:
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    width = flat.type.list_size
    values = np.asarray(flat.values.to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def spherical_kmeans(points: np.ndarray, k: int, *, seed: int, iterations: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = min(k, len(points))
    centroids = points[rng.choice(len(points), k, replace=False)]
    for _ in range(iterations):
        assignment = np.argmax(points @ centroids.T, axis=1)
        for cluster in range(k):
            members = points[assignment == cluster]
            if len(members):
                mean = members.sum(axis=0)
                centroids[cluster] = mean / max(np.linalg.norm(mean), 1e-12)
            else:
                centroids[cluster] = points[rng.integers(len(points))]
    return centroids


def _with_embedding(table: pa.Table, *, column: str) -> pa.Table:
    return table.filter(pc.is_valid(table[column]))


def _assign(table: pa.Table, *, centroids: np.ndarray, column: str) -> pa.Table:
    vectors = normalised(table[column])
    clusters = np.argmax(vectors @ centroids.T, axis=1) if len(vectors) else np.zeros(0, np.int64)
    return table.append_column(CLUSTER, pa.array(clusters.astype(np.int64)))


def _dedup_cluster(
    table: pa.Table, *, column: str, id_column: str | None, threshold: float
) -> pa.Table:
    order = [(id_column, "ascending")] if id_column else []
    table = table.sort_by([*order, (SHARD_NAME, "ascending"), (ROW, "ascending")])
    vectors = normalised(table[column])
    ids = table[id_column].to_pylist() if id_column else [None] * table.num_rows
    names, rows = table[SHARD_NAME].to_pylist(), table[ROW].to_pylist()
    dropped_names, dropped_rows, reasons = [], [], []
    kept = np.ones(len(vectors), bool)
    for start in range(1, len(vectors), BLOCK):
        stop = min(start + BLOCK, len(vectors))
        sims = vectors[start:stop] @ vectors[:stop].T
        sims[np.arange(stop - start)[:, None] <= np.arange(stop)[None, :] - start] = -np.inf
        dropped = sims.max(axis=1) >= threshold
        kept[start:stop] = ~dropped
        # Name the kept row a duplicate matches when there is one, else its closest earlier row.
        to_kept = np.where(kept[None, :stop], sims, -np.inf)
        for offset in np.flatnonzero(dropped):
            best = int(np.argmax(to_kept[offset]))
            if to_kept[offset, best] < threshold:
                best = int(np.argmax(sims[offset]))
            row = start + int(offset)
            match = ids[best] if ids[best] is not None else f"{names[best]} row {rows[best]}"
            dropped_names.append(names[row])
            dropped_rows.append(rows[row])
            reasons.append(f"near-duplicate of {match} (cosine {sims[offset, best]:.4f})")
    return pa.table(
        {
            SHARD_NAME: pa.array(dropped_names, pa.string()),
            ROW: pa.array(dropped_rows, pa.int64()),
            "reason": pa.array(reasons, pa.string()),
        }
    )


class SemanticDedupFilter(FilterSpec):
    type: Literal["semantic_dedup"]
    alias: str = "clip"
    eps: float = Field(default=0.05, gt=0.0, lt=1.0, description="Duplicates: cosine >= 1 - eps.")
    cluster_size: int = Field(default=5000, ge=2, description="Target rows per k-means cluster.")
    seed: int = 0


class SemanticDedupPolicy(DropListPolicy, spec=SemanticDedupFilter):
    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.column = embedding_column(spec.alias, "image")
        self.id_column = config.input.id_column
        self.clusters = 0

    @property
    def columns(self) -> list[str]:
        return [self.column, *([self.id_column] if self.id_column else []), SHARD_NAME, ROW]

    def fit(self, pool: Any) -> None:
        pool = pool.map_batches(
            _with_embedding, batch_format="pyarrow", fn_kwargs={"column": self.column}
        )
        pool = pool.materialize()
        self.fitted_rows = pool.count()
        if self.fitted_rows < 2:
            return
        k = max(1, math.ceil(self.fitted_rows / self.spec.cluster_size))
        fraction = min(1.0, SAMPLE_PER_CLUSTER * k / self.fitted_rows)
        sample = pool.random_sample(fraction, seed=self.spec.seed) if fraction < 1 else pool
        batches = [
            b for b in sample.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows
        ]
        points = np.concatenate([normalised(b[self.column]) for b in batches])
        centroids = spherical_kmeans(points, k, seed=self.spec.seed)
        self.clusters = len(centroids)
        assigned = pool.map_batches(
            _assign,
            batch_format="pyarrow",
            fn_kwargs={"centroids": centroids, "column": self.column},
        )
        duplicates = assigned.groupby(CLUSTER).map_groups(
            _dedup_cluster,
            batch_format="pyarrow",
            fn_kwargs={
                "column": self.column,
                "id_column": self.id_column,
                "threshold": 1.0 - self.spec.eps,
            },
        )
        for batch in duplicates.iter_batches(batch_format="pyarrow", batch_size=None):
            for name, row, reason in zip(
                batch[SHARD_NAME].to_pylist(),
                batch[ROW].to_pylist(),
                pc.cast(batch["reason"], pa.string()).to_pylist(),
                strict=True,
            ):
                self.drop(name, row, reason)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "clusters": self.clusters}
