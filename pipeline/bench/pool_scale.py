"""The pool stages' scale benchmark: the whole policy chain over synthetic scored runs of
growing size, the k-means fit alone at the sizes the policy would choose for larger
pools, and a projection to 100M and 1B rows on a cluster.

Each run filters a synthetic scored run (`synth/scored_pool.py`) with the real
`curate`: status, caption, top fraction, exact dedup, semantic dedup, then the
filter pass that writes filtered/ and rejected/ for every shard. Ray tasks
count the planted duplicates found and missed from rejected/.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.bench.peaks import peaks
from pipeline.config import WinnowConfig, parse_config
from pipeline.filters.apply import ShardRef
from pipeline.filters.base import Policy
from pipeline.filters.curate import build_policies, curate
from pipeline.filters.semantic_dedup import (
    GROUP_ROWS,
    SAMPLE_CAP,
    SAMPLE_PER_CLUSTER,
    SemanticDedupFilter,
    spherical_kmeans,
)
from pipeline.io.layout import OutputLayout
from pipeline.synth.scored_pool import TOPICS, PoolSpec, exact_pairs, make_pool, near_pairs

log = logging.getLogger(__name__)

CHAIN: list[dict[str, Any]] = [
    {"type": "status"},
    {"type": "caption", "min_words": 1},
    {"type": "score_top_fraction", "fraction": 0.7},
    {"type": "exact_dedup", "by": "sha256"},
    {"type": "semantic_dedup"},
]
CLUSTER_SIZE: int = SemanticDedupFilter.model_fields["cluster_size"].default
KMEANS_POOLS = (10_000_000, 100_000_000, 1_000_000_000)
# Group fits timed per pool size; the rest are assumed to take as long.
GROUPS_TIMED = 3
# The projection's cluster: CPU cores in all, and the driver's one.
CLUSTER_CORES = 256


def _config(root: Path) -> WinnowConfig:
    return parse_config(
        {
            "input": {"path": str(root / "input")},
            "output": {"path": str(root / "out"), "report": False},
            "models": [{"alias": "clip", "name": "ViT-B-32"}],
            "filters": CHAIN,
        }
    )


def _verify(path: str, rows: int) -> dict[str, int]:
    """Ray task: one shard's rejected rows, set against the planted pairs."""
    table = pq.read_table(path, columns=["key", "winnow_rejected_by"])
    index = np.asarray(table["key"].to_pylist(), np.int64)  # keys are zero-padded row numbers
    by = np.asarray(table["winnow_rejected_by"].to_pylist(), object)
    counts: dict[str, int] = {}
    planted = []
    for kind, (first, second), policy in (
        ("near", near_pairs(rows), "semantic_dedup:clip"),
        ("exact", exact_pairs(rows), "exact_dedup"),
    ):
        later = np.isin(index, np.maximum(first, second))
        counts[f"{kind}_found"] = int(np.sum(later & (by == policy)))
        counts[f"{kind}_first_dropped"] = int(np.isin(index, np.minimum(first, second)).sum())
        planted += [first, second]
    as_duplicate = (by == "semantic_dedup:clip") | (by == "exact_dedup")
    counts["other_dropped"] = int(np.sum(as_duplicate & ~np.isin(index, np.concatenate(planted))))
    return counts


def found(layout: OutputLayout, names: list[str], rows: int) -> dict[str, int]:
    import ray

    verify = ray.remote(num_cpus=0.5)(_verify)
    parts = ray.get([verify.remote(layout.rejected(name), rows) for name in names])
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    near, exact = len(near_pairs(rows)[0]), len(exact_pairs(rows)[0])
    return {
        "near_planted": near,
        "near_found": total["near_found"],
        "near_missed": near - total["near_found"],
        "near_recall": round(total["near_found"] / near, 5),
        "exact_planted": exact,
        "exact_found": total["exact_found"],
        "exact_missed": exact - total["exact_found"],
        "first_of_pair_dropped": total["near_first_dropped"] + total["exact_first_dropped"],
        "other_rows_dropped_as_duplicates": total["other_dropped"],
    }


def chain(rows: int, workdir: Path) -> dict[str, Any]:
    """The whole chain over a synthetic run of `rows` rows."""
    root = workdir / f"pool-{rows}"
    spec = PoolSpec(rows=rows)
    started = time.perf_counter()
    make_pool(spec, root)
    log.info("bench: %s rows ready in %.0f s", f"{rows:,}", time.perf_counter() - started)
    config = _config(root)
    layout = OutputLayout(root=config.output.path, storage_options={})
    names = [f"{shard:05d}" for shard in range(spec.shards)]
    refs = [
        ShardRef(
            name=n,
            scored=layout.url("scored", f"{n}.parquet"),
            input=str(root / "input" / f"{n}.parquet"),
        )
        for n in names
    ]
    records = {n: layout.read_json(layout.stats(n)) or {} for n in names}
    for record in records.values():
        record.pop("filters", None)  # filter every shard again
    fits: dict[str, dict[str, Any]] = {}

    @contextmanager
    def watch(policy: Policy) -> Iterator[None]:
        began = time.perf_counter()
        with peaks() as seen:
            yield
        fits[policy.name] = {"fit_s": time.perf_counter() - began, "peaks": seen}

    began = time.perf_counter()
    with peaks() as whole:
        fitted, failures = curate(config, layout, refs, records, watch=watch)
    total = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"filtering failed: {failures[0].error}")
    decided: Counter[str] = Counter()
    for record in records.values():
        decided.update(record["filters"]["seconds_by"])
    fit_total = sum(f["fit_s"] for f in fits.values())
    policies = []
    for name in (p.name for p in build_policies(config)):
        fit = fits.get(name)
        state = fitted.get(name, {})
        policies.append(
            {
                "policy": name,
                "fit_s": round(fit["fit_s"], 2) if fit else None,
                "fit_rows": state.get("fitted_rows", state.get("pool_rows")),
                "decide_task_s": round(decided[name], 2),
                **(fit["peaks"].as_mb() if fit else {}),
            }
        )
    return {
        "rows": rows,
        "shards": spec.shards,
        "policies": policies,
        "fitted": fitted,
        "filter_pass_s": round(total - fit_total, 2),
        "total_s": round(total, 2),
        "us_per_row": round(total / rows * 1e6, 2),
        "whole_chain": whole.as_mb(),
        "duplicates": found(layout, names, rows),
    }


def _points(count: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((TOPICS, width))
    points = topics[rng.integers(TOPICS, size=count)] + rng.standard_normal((count, width))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def kmeans_fit(pool_rows: int, *, width: int = 512) -> dict[str, Any]:
    """The k-means fits semantic_dedup would make for a pool of `pool_rows` rows: the
    driver's coarse fit, and each group's own (timed on a few, the rest assumed alike)."""
    groups = math.ceil(pool_rows / GROUP_ROWS)
    sample = min(SAMPLE_CAP, SAMPLE_PER_CLUSTER * groups)
    points = _points(sample, width, seed=1)
    began = time.perf_counter()
    spherical_kmeans(points, groups, seed=0)
    coarse = time.perf_counter() - began
    home = math.ceil(pool_rows / groups)
    clusters = math.ceil(home / CLUSTER_SIZE)
    group_sample = min(home, SAMPLE_PER_CLUSTER * clusters)
    times = []
    for group in range(GROUPS_TIMED):
        points = _points(group_sample, width, seed=2 + group)
        began = time.perf_counter()
        spherical_kmeans(points, clusters, seed=group)
        times.append(time.perf_counter() - began)
    per_group = float(np.mean(times))
    return {
        "pool_rows": pool_rows,
        "groups": groups,
        "driver_sample": sample,
        "driver_sample_mb": round(sample * width * 4 / (1 << 20), 1),
        "driver_fit_s": round(coarse, 2),
        "clusters_per_group": clusters,
        "group_sample": group_sample,
        "group_fit_s": round(per_group, 4),
        "all_group_fits_s": round(per_group * groups, 1),
        "fit_on_this_machine_s": round(coarse + per_group * groups, 1),
        # Multiply-adds per second of the driver's fit (20 iterations of sample x groups x
        # width), for the projection's coarse assignment.
        "flops_per_s": 2 * 20 * sample * groups * width / max(coarse, 1e-9),
    }


def projection(
    largest: dict[str, Any], fits: list[dict[str, Any]], cores: int
) -> list[dict[str, Any]]:
    """Hours at 100M and 1B rows on `cores` cores, from the largest run's time per row on
    this machine's cores, plus the k-means fits and the coarse assignment, which grow."""
    here = largest["machine_cores"]
    cpu_per_row = largest["total_s"] * here / largest["rows"]
    rows_out = []
    for fit in fits:
        if fit["pool_rows"] < 100_000_000:
            continue
        rows = fit["pool_rows"]
        assign = 2 * rows * fit["groups"] * 512 / (fit["flops_per_s"] / here) / cores
        spread = rows * cpu_per_row / cores
        group_fits = fit["all_group_fits_s"] * here / cores
        total = spread + assign + fit["driver_fit_s"] + group_fits
        rows_out.append(
            {
                "rows": rows,
                "cores": cores,
                "per_row_work_s": round(spread),
                "coarse_assignment_s": round(assign),
                "kmeans_s": round(fit["driver_fit_s"] + group_fits),
                "total_h": round(total / 3600, 2),
            }
        )
    return rows_out


def pool_scale(
    rows: list[int], *, workdir: Path, kmeans_pools: tuple[int, ...] = KMEANS_POOLS
) -> dict[str, Any]:
    import os

    runs = []
    for count in rows:
        log.info("bench: the policy chain over %s rows ...", f"{count:,}")
        runs.append({**chain(count, workdir), "machine_cores": os.cpu_count()})
    fits = []
    for pool_rows in kmeans_pools:
        log.info("bench: k-means fits for a pool of %s rows ...", f"{pool_rows:,}")
        fits.append(kmeans_fit(pool_rows))
    largest = max(runs, key=lambda r: r["rows"])
    smallest = min(runs, key=lambda r: r["rows"])
    return {
        "runs": runs,
        "per_row_growth": round(largest["us_per_row"] / smallest["us_per_row"], 3),
        "kmeans": fits,
        "projection": projection(largest, fits, CLUSTER_CORES),
        "assumptions": [
            f"a cluster of {CLUSTER_CORES} CPU cores, the driver on one of them",
            f"every stage's work per row stays what the {largest['rows']:,}-row run measured "
            "on this machine's cores (the runs above check that it does not grow with N)",
            "the coarse assignment grows with the groups (one per "
            f"{GROUP_ROWS:,} rows): added at the k-means fit's own multiply-add rate",
            "the driver's coarse fit runs alone; the groups' fits spread over the cores",
            "storage and the object store's spilling keep pace with the cores",
        ],
    }
