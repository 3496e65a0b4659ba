"""The pool: every committed shard's rows, as a Ray Dataset, for policies that fit globally.

Each shard is read by a Ray task that also applies the policies placed before
the one being fitted, so a dedup policy fits on the rows that survive them. The
top-fraction policy fits on every scored row, which is DataComp's rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.config import WinnowConfig
from pipeline.filters.apply import ShardRef, evaluate, shard_tables
from pipeline.filters.base import Policy, PoolPolicy, Verdict
from pipeline.filters.policies import scores_of
from pipeline.schema import score_column

POOL_CPUS = 0.5


def _pool_stage(
    batch: dict[str, Any],
    *,
    config: WinnowConfig,
    before: list[Policy],
    columns: list[str],
    with_image: bool,
) -> Iterator[pa.Table]:
    for name, scored, source in zip(batch["name"], batch["scored"], batch["input"], strict=True):
        ref = ShardRef(name=str(name), scored=str(scored), input=str(source))
        for table in shard_tables(ref, config, columns=None, with_image=with_image):
            keep, _, _ = evaluate(table, before)
            yield table.filter(pa.array(keep)).select(columns)


def pool_dataset(
    refs: list[ShardRef], config: WinnowConfig, *, before: list[Policy], columns: list[str]
) -> Any:
    """A Ray Dataset of `columns` for the rows of every shard that `before` keeps."""
    import ray.data

    items = [{"name": r.name, "scored": r.scored, "input": r.input} for r in refs]
    with_image = any(p.needs_image_bytes() for p in before)
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _pool_stage,
        batch_size=1,
        batch_format="numpy",
        num_cpus=POOL_CPUS,
        fn_kwargs={
            "config": config,
            "before": before,
            "columns": columns,
            "with_image": with_image,
        },
    )


def datacomp_threshold(scores: np.ndarray, fraction: float) -> float | None:
    """The score at index floor(n * fraction) of the scores sorted descending (NaN ignored)."""
    ranked = np.sort(scores[~np.isnan(scores)])[::-1]
    if not len(ranked):
        return None
    return float(ranked[min(math.floor(len(ranked) * fraction), len(ranked) - 1)])


class TopFractionPolicy(PoolPolicy):
    """DataComp's rule: over all scored rows, keep those scoring >= the score at floor(n * f)."""

    fit_on_survivors: ClassVar[bool] = False

    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.threshold: float | None = None
        self.pool_rows = 0

    @property
    def columns(self) -> list[str]:
        return [score_column(self.spec.alias)]

    def fit(self, pool: Any) -> None:
        chunks = [
            scores_of(batch, self.spec.alias)
            for batch in pool.iter_batches(batch_format="pyarrow", batch_size=None)
        ]
        scores = np.concatenate(chunks) if chunks else np.zeros(0)
        self.pool_rows = int((~np.isnan(scores)).sum())
        self.threshold = datacomp_threshold(scores, self.spec.fraction)

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pool_rows": self.pool_rows}

    def decide(self, table: pa.Table) -> Verdict:
        scores = scores_of(table, self.spec.alias)
        cut = self.threshold
        return Verdict.from_reasons(
            [
                "no score"
                if math.isnan(s)
                else (
                    None
                    if cut is not None and s >= cut
                    else f"score {s:.4f} below top-{self.spec.fraction:g} threshold {cut:.4f}"
                )
                for s in scores
            ]
        )
