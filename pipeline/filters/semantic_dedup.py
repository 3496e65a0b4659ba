"""`semantic_dedup`: near-duplicate images, SemDeDup-style: k-means clusters, then
pairwise cosine within each.

Clusters of about `cluster_size` rows at any pool size, from spherical k-means
(faiss) in two levels, so that no fit and no assignment grows with the pool:

1. The driver fits one coarse centroid per `GROUP_ROWS` rows on a sample of at
   most `SAMPLE_CAP` rows: the only rows of the pool it holds.
2. Ray tasks fit each coarse group's own clusters on a sample of its rows; the
   driver keeps their centroids (4 bytes x width a cluster: 41 MB at 100M rows).
3. Ray tasks send each row to its nearest cluster (looked up in its nearest
   groups only); Ray Data groups the rows by cluster.
4. Within each cluster, a task drops a row when an earlier row (by id) has
   cosine >= 1 - eps with it. So each set of near-duplicates keeps its smallest id.

A pair split by a border between two clusters would never be compared, so a
row near a border also visits the other cluster, where it is compared with that
cluster's own rows. Near means: two rows with cosine >= 1 - eps lie within
sqrt(2 eps) of each other, so if they sit in clusters 1 and 2 their margins
(similarity to their own centroid minus to the other's) add up to at most
sqrt(2 eps) |c1 - c2|, and one of them has at most half that. A row visits up to
`probes` - 1 such clusters, the nearest first: every cluster within reach would
make the result exact, but where clusters are not far apart that is most of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
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
# Rows per coarse group: a group's clusters are fitted together, by one task.
GROUP_ROWS = 200_000
# The driver's coarse k-means sample at most: 256 MB at 512 dims in float32.
SAMPLE_CAP = 1 << 17
ITERATIONS = 20
# Coarse groups whose clusters a row is routed among, per probe: a row's nearest clusters
# are often not in its nearest groups (on the 4M-row bench, 4 groups found 97.6 % of the
# planted pairs and 8 found 99.7 %).
GROUPS_PER_PROBE = 2
# Clusters per partition of the shuffle that groups rows by cluster: a reduce task holds
# its partition, so it is sized to the clusters, not left at Ray Data's fixed count
# (200 partitions of a 100M-row pool would hold some 3 GB each).
CLUSTERS_PER_PARTITION = 4
# Rows of a cluster compared with all earlier rows at a time.
BLOCK = 1024
# Similarities a routing batch holds at most (rows x clusters): 128 MB.
ROUTE_CELLS = 1 << 25


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


def _sample(pool: Any, rows: int, total: int, *, seed: int) -> Any:
    return pool.random_sample(rows / total, seed=seed) if rows < total else pool


def _gather(dataset: Any, column: str) -> np.ndarray:
    """A small dataset's unit vectors, in the driver."""
    parts = [
        normalised(batch[column])
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None)
        if batch.num_rows
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


@dataclass(frozen=True, slots=True)
class Clusters:
    """The fitted clusters: their centroids, and to route a row among them, the coarse
    groups' centroids (None for one group) and each cluster's group."""

    centroids: np.ndarray
    coarse: np.ndarray | None
    group_of: np.ndarray

    def similarities(self, vectors: np.ndarray, probes: int) -> np.ndarray:
        """Each row's cosine to every cluster of its `GROUPS_PER_PROBE` x `probes` nearest
        groups (-inf elsewhere)."""
        if self.coarse is None:
            return vectors @ self.centroids.T
        near = np.argsort(-(vectors @ self.coarse.T), axis=1)[:, : GROUPS_PER_PROBE * probes]
        sims = np.full((len(vectors), len(self.centroids)), -np.inf, np.float32)
        for group in np.unique(near):
            rows = np.flatnonzero((near == group).any(axis=1))
            members = np.flatnonzero(self.group_of == group)
            sims[np.ix_(rows, members)] = vectors[rows] @ self.centroids[members].T
        return sims


def visits(
    sims: np.ndarray, centroids: np.ndarray, *, probes: int, eps: float
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Each row's nearest cluster, and the (rows, clusters) of the visits it makes: to its
    next `probes` - 1 nearest clusters that lie within reach (see the module's docstring)."""
    rows = np.arange(len(sims))
    # The `probes` nearest, in order, without sorting every cluster of every row.
    probes = min(probes, sims.shape[1])
    order = np.argpartition(-sims, probes - 1, axis=1)[:, :probes]
    order = np.take_along_axis(order, np.argsort(-sims[rows[:, None], order], axis=1), axis=1)
    first = order[:, 0]
    best = sims[rows, first]
    made = []
    for rank in range(1, order.shape[1]):
        other = order[:, rank]
        apart = np.sqrt(np.maximum(2.0 - 2.0 * np.sum(centroids[first] * centroids[other], 1), 0))
        near = best - sims[rows, other] <= math.sqrt(2.0 * eps) * apart / 2.0
        made.append((rows[near], other[near]))
    return first, made


def _fit_group(table: pa.Table, *, column: str, per_cluster: int, seed: int) -> pa.Table:
    """Ray Data group stage: one coarse group's clusters, fitted on its sample rows."""
    group = int(table[CLUSTER][0].as_py())
    points = normalised(table[column])
    centroids = spherical_kmeans(
        points, max(1, round(len(points) / per_cluster)), seed=seed + group
    )
    width = centroids.shape[1]
    flat = pa.array(centroids.astype(np.float32).ravel())
    return pa.table(
        {
            CLUSTER: pa.array(np.full(len(centroids), group, np.int64)),
            "centroid": pa.FixedSizeListArray.from_arrays(flat, width),
        }
    )


def _with_embedding(table: pa.Table, *, column: str) -> pa.Table:
    return table.filter(pc.is_valid(table[column]))


def _nearest_group(table: pa.Table, *, coarse: np.ndarray, column: str) -> pa.Table:
    nearest = np.argmax(normalised(table[column]) @ coarse.T, axis=1)
    return table.append_column(CLUSTER, pa.array(nearest.astype(np.int64)))


def _route(
    table: pa.Table, *, clusters: Clusters, column: str, probes: int, eps: float
) -> Iterator[pa.Table]:
    """Ray Data stage: each row in its cluster, and a visitor's copy in each it visits."""
    step = max(1, ROUTE_CELLS // len(clusters.centroids))
    for start in range(0, table.num_rows, step):
        piece = table.slice(start, step)
        vectors = normalised(piece[column])
        first, made = visits(
            clusters.similarities(vectors, probes), clusters.centroids, probes=probes, eps=eps
        )
        yield piece.append_column(CLUSTER, pa.array(first.astype(np.int64))).append_column(
            VISITOR, pa.array(np.zeros(piece.num_rows, bool))
        )
        for rows, targets in made:
            yield (
                piece.take(pa.array(rows))
                .append_column(CLUSTER, pa.array(targets.astype(np.int64)))
                .append_column(VISITOR, pa.array(np.ones(len(rows), bool)))
            )


def _close_pairs(
    rows: np.ndarray, against: np.ndarray, vectors: np.ndarray, threshold: float, *, lower: bool
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(i, j, cosine) of the pairs of `rows` x `against` (positions in `vectors`) at cosine
    >= threshold, a block of rows at a time; `lower`: `rows` is `against`, and only j < i."""
    others = vectors[against]
    for start in range(0, len(rows), BLOCK):
        stop = min(start + BLOCK, len(rows))
        sims = vectors[rows[start:stop]] @ (others[:stop] if lower else others).T
        i, j = np.nonzero(sims >= threshold)
        if lower:
            i, j = i[j < i + start], j[j < i + start]
        yield rows[start + i], against[j], sims[i, j]


def _near_earlier(
    vectors: np.ndarray, visitor: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """(row, the earlier row it matches, cosine) for each row (rows in id order) with an
    earlier row at cosine >= threshold; two visitors are not compared. The match named is
    the closest earlier row that has no such row itself where there is one, else the
    closest earlier row."""
    home, guests = np.flatnonzero(~visitor), np.flatnonzero(visitor)
    parts = [
        *_close_pairs(home, home, vectors, threshold, lower=True),
        *_close_pairs(guests, home, vectors, threshold, lower=False),
    ]
    if not parts:
        return []
    first = np.concatenate([p[0] for p in parts])
    second = np.concatenate([p[1] for p in parts])
    cosine = np.concatenate([p[2] for p in parts])
    row, match = np.maximum(first, second), np.minimum(first, second)
    dropped = np.zeros(len(vectors), bool)
    dropped[row] = True
    # Per row: a match not dropped first, then the highest cosine, then the earliest.
    order = np.lexsort((match, -cosine, dropped[match], row))
    row, match, cosine = row[order], match[order], cosine[order]
    firsts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    return [(int(row[f]), int(match[f]), float(cosine[f])) for f in firsts]


def _dedup_cluster(
    table: pa.Table, *, column: str, id_column: str | None, threshold: float
) -> pa.Table:
    """Ray Data group stage: the rows of a cluster (its own and its visitors) that have an
    earlier near-duplicate in it."""
    order = [(id_column, "ascending")] if id_column else []
    table = table.sort_by([*order, (SHARD_NAME, "ascending"), (ROW, "ascending")])
    vectors = normalised(table[column])
    visitor = table[VISITOR].to_numpy(zero_copy_only=False)
    ids = table[id_column].to_pylist() if id_column else [None] * table.num_rows
    names, rows = table[SHARD_NAME].to_pylist(), table[ROW].to_pylist()
    found = _near_earlier(vectors, visitor, threshold)
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
    probes: int = Field(
        default=4,
        ge=1,
        description="Clusters a row is compared in at most: its own, and those near it that a "
        "duplicate of it could sit in (more: fewer pairs missed, more work).",
    )
    seed: int = 0


class SemanticDedupPolicy(DropListPolicy, spec=SemanticDedupFilter):
    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.column = embedding_column(spec.alias, "image")
        self.id_column = config.input.id_column
        self.clusters = self.groups = 0

    @property
    def columns(self) -> list[str]:
        return [self.column, *([self.id_column] if self.id_column else []), SHARD_NAME, ROW]

    def fit_clusters(self, pool: Any) -> Clusters:
        """Coarse groups fitted in the driver on a capped sample, then each group's clusters
        fitted by a Ray task on a sample of its rows."""
        rows, seed = self.fitted_rows, self.spec.seed
        wanted = max(1, math.ceil(rows / self.spec.cluster_size))
        self.groups = math.ceil(rows / GROUP_ROWS)
        sample = _sample(pool, SAMPLE_PER_CLUSTER * wanted, rows, seed=seed)
        if self.groups < 2:
            centroids = spherical_kmeans(_gather(sample, self.column), wanted, seed=seed)
            return Clusters(centroids=centroids, coarse=None, group_of=np.zeros(len(centroids)))
        size = min(SAMPLE_CAP, SAMPLE_PER_CLUSTER * self.groups)
        coarse = spherical_kmeans(
            _gather(_sample(pool, size, rows, seed=seed + 1), self.column), self.groups, seed=seed
        )
        fitted = (
            sample.map_batches(
                _nearest_group,
                batch_format="pyarrow",
                fn_kwargs={"coarse": coarse, "column": self.column},
            )
            .groupby(CLUSTER)
            .map_groups(
                _fit_group,
                batch_format="pyarrow",
                fn_kwargs={"column": self.column, "per_cluster": SAMPLE_PER_CLUSTER, "seed": seed},
            )
        )
        batches = [
            b for b in fitted.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows
        ]
        return Clusters(
            centroids=np.concatenate([normalised(b["centroid"]) for b in batches]),
            coarse=coarse,
            group_of=np.concatenate([b[CLUSTER].to_numpy() for b in batches]),
        )

    def find_drops(self, pool: Any) -> Any:
        pool = pool.map_batches(
            _with_embedding, batch_format="pyarrow", fn_kwargs={"column": self.column}
        ).materialize()
        self.fitted_rows = pool.count()
        if self.fitted_rows < 2:
            return None
        clusters = self.fit_clusters(pool)
        self.clusters = len(clusters.centroids)
        routed = pool.map_batches(
            _route,
            batch_format="pyarrow",
            fn_kwargs={
                "clusters": clusters,
                "column": self.column,
                "probes": self.spec.probes,
                "eps": self.spec.eps,
            },
        )
        partitions = math.ceil(self.clusters / CLUSTERS_PER_PARTITION)
        return routed.groupby(CLUSTER, num_partitions=partitions).map_groups(
            _dedup_cluster,
            batch_format="pyarrow",
            fn_kwargs={
                "column": self.column,
                "id_column": self.id_column,
                "threshold": 1.0 - self.spec.eps,
            },
        )

    def state(self) -> dict[str, Any]:
        return {**super().state(), "clusters": self.clusters, "groups": self.groups}
