"""Per-shard counters and score histograms, merged into the run summary.

The per-shard JSON doubles as the shard's commit marker, so it is built in
memory while rows stream by and written once, after the Parquet file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.schema import score_column

# CLIP cosine scores live in [-1, 1]; 0.01-wide bins resolve the thresholds people use.
HISTOGRAM_EDGES = np.round(np.linspace(-1.0, 1.0, 201), 2)


@dataclass(kw_only=True)
class ScoreStats:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")
    histogram: np.ndarray = field(
        default_factory=lambda: np.zeros(len(HISTOGRAM_EDGES) - 1, np.int64)
    )

    def add(self, scores: pa.Array) -> None:
        values = pc.drop_null(scores).to_numpy(zero_copy_only=False).astype(np.float64)
        if not len(values):
            return
        self.count += len(values)
        self.total += float(values.sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        self.histogram += np.histogram(np.clip(values, -1.0, 1.0), HISTOGRAM_EDGES)[0]

    def merge(self, other: ScoreStats) -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.histogram += other.histogram

    def to_json(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        return {
            "count": self.count,
            "mean": self.total / self.count,
            "min": self.low,
            "max": self.high,
            "histogram": {
                "low": float(HISTOGRAM_EDGES[0]),
                "high": float(HISTOGRAM_EDGES[-1]),
                "counts": self.histogram.tolist(),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreStats:
        if not data.get("count"):
            return cls()
        return cls(
            count=data["count"],
            total=data["mean"] * data["count"],
            low=data["min"],
            high=data["max"],
            histogram=np.asarray(data["histogram"]["counts"], np.int64),
        )


@dataclass(kw_only=True)
class ShardStats:
    rows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    scores: dict[str, ScoreStats] = field(default_factory=dict)

    def add(self, table: pa.Table, *, status_column: str, aliases: list[str]) -> None:
        self.rows += table.num_rows
        for item in pc.value_counts(table[status_column]).to_pylist():
            self.statuses[item["values"]] += item["counts"]
        for alias in aliases:
            self.scores.setdefault(alias, ScoreStats()).add(table[score_column(alias)])

    def merge(self, other: ShardStats) -> None:
        self.rows += other.rows
        self.statuses.update(other.statuses)
        for alias, scores in other.scores.items():
            self.scores.setdefault(alias, ScoreStats()).merge(scores)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "status_counts": dict(sorted(self.statuses.items())),
            "scores": {alias: s.to_json() for alias, s in self.scores.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardStats:
        return cls(
            rows=data["rows"],
            statuses=Counter(data["status_counts"]),
            scores={a: ScoreStats.from_json(s) for a, s in data["scores"].items()},
        )
