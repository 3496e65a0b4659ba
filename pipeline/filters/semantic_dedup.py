"""`semantic_dedup`: near-duplicate images, SemDeDup-style: k-means clusters, then
pairwise cosine within each.

Two levels of spherical k-means (faiss), so that a cluster holds about
`cluster_size` rows at any pool size and no process holds more than a group:

1. The driver fits one coarse centroid per `GROUP_ROWS` rows on a sample of at
   most `SAMPLE_CAP` rows: the only part of the pool it holds.
2. Ray tasks send each row to its nearest group; Ray Data groups the rows.
3. Each group's task fits its own clusters on a sample of its rows, and within
   each cluster drops a row when an earlier row (by id) has cosine >= 1 - eps
   with it. So each set of near-duplicates keeps its smallest id.

A pair split by a border between two clusters (or groups) would never be
compared, so a row near a border also visits its second nearest cluster, where
it is compared with that cluster's own rows. Near means: two rows with cosine
>= 1 - eps lie within sqrt(2 eps) of each other, so if they sit in clusters 1
and 2 their margins (similarity to their own centroid minus to the other's) add
up to at most sqrt(2 eps) |c1 - c2|; the row whose margin is at most half that
visits. A pair whose clusters are not each other's nearest two is still missed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.config import FilterSpec, WinnowConfig
from pipeline.filters.base import DropListPolicy
from pipeline.filters.drops import drop_table
from pipeline.schema import CLUSTER, ROW, SHARD_NAME, VISITOR, embedding_column

# Sample rows per centroid a k-means fits on (faiss asks for 39 or more).
SAMPLE_PER_CLUSTER = 64
# Rows per group: a group's task holds their embeddings, some 600 MB at 512 dims.
GROUP_ROWS = 200_000
# The driver's coarse k-means sample at most: 256 MB at 512 dims in float32.
SAMPLE_CAP = 1 << 17
ITERATIONS = 20
# Rows of a cluster compared with all earlier rows at a time.
BLOCK = 1024


def normalised(column: Any) -> np.ndarray:
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    width = flat.type.list_size
    values = np.asarray(flat.values.to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def spherical_kmeans(
    points: np.ndarray, k: int, *, seed: int, iterations: int = ITERATIONS
) -> np.ndarray:
    """Unit centroids of `points` (unit rows), from faiss: on a GPU where faiss has one."""
    import faiss

    k = min(k, len(points))
    kmeans = faiss.Kmeans(
        points.shape[1],
        k,
        niter=iterations,
        seed=seed % (1 << 31),
        spherical=True,
        min_points_per_centroid=1,
        max_points_per_centroid=1 << 30,
        gpu=faiss.get_num_gpus() > 0,
    )
    kmeans.train(np.ascontiguousarray(points, np.float32))
    return kmeans.centroids


def nearest_two(
    vectors: np.ndarray, centroids: np.ndarray, *, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid, and its second nearest where the row lies near their
    border (see the module's docstring), else -1."""
    if len(centroids) < 2 or not len(vectors):
        return np.zeros(len(vectors), np.int64), np.full(len(vectors), -1, np.int64)
    sims = vectors @ centroids.T
    top = np.argpartition(-sims, 1, axis=1)[:, :2]
    pair = np.take_along_axis(sims, top, axis=1)
    swap = pair[:, 1] > pair[:, 0]
    top[swap] = top[swap][:, ::-1]
    pair[swap] = pair[swap][:, ::-1]
    first, second = top[:, 0], top[:, 1]
    apart = np.sqrt(np.maximum(2.0 - 2.0 * np.sum(centroids[first] * centroids[second], 1), 0))
    near = pair[:, 0] - pair[:, 1] <= math.sqrt(2.0 * eps) * apart / 2.0
    return first.astype(np.int64), np.where(near, second, -1).astype(np.int64)


def _with_embedding(table: pa.Table, *, column: str) -> pa.Table:
    return table.filter(pc.is_valid(table[column]))


def _to_groups(
    table: pa.Table, *, centroids: np.ndarray | None, column: str, eps: float
) -> pa.Table:
    """Ray Data stage: each row with its group, and a visitor's copy in its second group."""
    if centroids is None:
        first, second = np.zeros(table.num_rows, np.int64), np.full(table.num_rows, -1)
    else:
        first, second = nearest_two(normalised(table[column]), centroids, eps=eps)
    visits = np.flatnonzero(second >= 0)
    home = table.append_column(CLUSTER, pa.array(first)).append_column(
        VISITOR, pa.array(np.zeros(table.num_rows, bool))
    )
    away = (
        table.take(pa.array(visits))
        .append_column(CLUSTER, pa.array(second[visits]))
        .append_column(VISITOR, pa.array(np.ones(len(visits), bool)))
    )
    return pa.concat_tables([home, away])


def _near_earlier(
    vectors: np.ndarray, visitor: np.ndarray, threshold: float
) -> Iterator[tuple[int, int, float]]:
    """(row, the earlier row it matches, cosine) for each row with an earlier row at
    cosine >= threshold; two visitors are not compared. The match named is a row not
    dropped here where there is one, else the closest earlier row."""
    kept = np.ones(len(vectors), bool)
    for start in range(1, len(vectors), BLOCK):
        stop = min(start + BLOCK, len(vectors))
        sims = vectors[start:stop] @ vectors[:stop].T
        sims[np.arange(stop - start)[:, None] <= np.arange(stop)[None, :] - start] = -np.inf
        sims[visitor[start:stop, None] & visitor[None, :stop]] = -np.inf
        dropped = sims.max(axis=1) >= threshold
        kept[start:stop] = ~dropped
        to_kept = np.where(kept[None, :stop], sims, -np.inf)
        for offset in np.flatnonzero(dropped):
            best = int(np.argmax(to_kept[offset]))
            if to_kept[offset, best] < threshold:
                best = int(np.argmax(sims[offset]))
            yield start + int(offset), best, float(sims[offset, best])


def _dedup_group(
    table: pa.Table,
    *,
    column: str,
    id_column: str | None,
    eps: float,
    cluster_size: int,
    seed: int,
) -> pa.Table:
    """Ray Data group stage: fit the group's clusters, then find the near-duplicates
    within each."""
    group = int(table[CLUSTER][0].as_py())
    order = [(id_column, "ascending")] if id_column else []
    table = table.sort_by([*order, (SHARD_NAME, "ascending"), (ROW, "ascending")])
    vectors = normalised(table[column])
    visitor = table[VISITOR].to_numpy(zero_copy_only=False)
    home = np.flatnonzero(~visitor)
    k = max(1, math.ceil(len(home) / cluster_size))
    if k > 1:
        rng = np.random.default_rng(seed + group)
        sample = rng.choice(home, min(len(home), SAMPLE_PER_CLUSTER * k), replace=False)
        first, second = nearest_two(
            vectors, spherical_kmeans(vectors[np.sort(sample)], k, seed=seed + group), eps=eps
        )
    else:
        first, second = np.zeros(len(vectors), np.int64), np.full(len(vectors), -1)
    ids = table[id_column].to_pylist() if id_column else [None] * table.num_rows
    names, rows = table[SHARD_NAME].to_pylist(), table[ROW].to_pylist()
    found: list[tuple[int, int, float]] = []
    for cluster in range(int(first.max()) + 1 if len(first) else 0):
        members = np.flatnonzero((first == cluster) | (second == cluster))
        guests = visitor[members] | (first[members] != cluster)
        for row, match, cosine in _near_earlier(vectors[members], guests, 1.0 - eps):
            found.append((int(members[row]), int(members[match]), cosine))
    matches = [m for _, m, _ in found]
    reasons = [
        "near-duplicate of "
        f"{ids[m] if ids[m] is not None else f'{names[m]} row {rows[m]}'} (cosine {c:.4f})"
        for _, m, c in found
    ]
    return drop_table(
        [names[r] for r, _, _ in found],
        [rows[r] for r, _, _ in found],
        reasons,
        ([ids[m] for m in matches], [names[m] for m in matches], [rows[m] for m in matches]),
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
        self.groups = 0

    @property
    def columns(self) -> list[str]:
        return [self.column, *([self.id_column] if self.id_column else []), SHARD_NAME, ROW]

    def coarse_centroids(self, pool: Any) -> np.ndarray | None:
        """The groups' centroids, fitted on a sample the driver holds; None for one group."""
        self.groups = math.ceil(self.fitted_rows / GROUP_ROWS)
        if self.groups < 2:
            return None
        size = min(SAMPLE_CAP, SAMPLE_PER_CLUSTER * self.groups)
        sample = pool.random_sample(min(1.0, size / self.fitted_rows), seed=self.spec.seed)
        points = np.concatenate(
            [
                normalised(b[self.column])
                for b in sample.iter_batches(batch_format="pyarrow", batch_size=None)
                if b.num_rows
            ]
        )
        return spherical_kmeans(points, self.groups, seed=self.spec.seed)

    def find_drops(self, pool: Any) -> Any:
        pool = pool.map_batches(
            _with_embedding, batch_format="pyarrow", fn_kwargs={"column": self.column}
        ).materialize()
        self.fitted_rows = pool.count()
        if self.fitted_rows < 2:
            return None
        centroids = self.coarse_centroids(pool)
        grouped = pool.map_batches(
            _to_groups,
            batch_format="pyarrow",
            fn_kwargs={"centroids": centroids, "column": self.column, "eps": self.spec.eps},
        )
        return grouped.groupby(CLUSTER).map_groups(
            _dedup_group,
            batch_format="pyarrow",
            fn_kwargs={
                "column": self.column,
                "id_column": self.id_column,
                "eps": self.spec.eps,
                "cluster_size": self.spec.cluster_size,
                "seed": self.spec.seed,
            },
        )

    def state(self) -> dict[str, Any]:
        """`clusters`: the number aimed at (each group rounds its own count up)."""
        clusters = math.ceil(self.fitted_rows / self.spec.cluster_size) if self.fitted_rows else 0
        return {**super().state(), "clusters": clusters, "groups": self.groups}
