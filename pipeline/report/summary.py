"""The run summary (`OUT/_summary.json`) and the closing line printed after a run."""

from __future__ import annotations

import platform
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pipeline.io.shards import ShardFailure
from pipeline.io.stats import ShardStats
from pipeline.status import RowStatus

if TYPE_CHECKING:
    from pipeline.scoring.job import Scoring

VERSIONED = ("winnow", "ray", "torch", "torchvision", "open_clip_torch", "pyarrow", "pillow")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _filter_totals(records: list[dict[str, Any]], fitted: dict[str, Any]) -> dict[str, Any]:
    filtered = [r["filters"] for r in records if "filters" in r]
    removed: Counter[str] = Counter()
    for item in filtered:
        removed.update(item["removed_by"])
    return {
        "shards": len(filtered),
        "kept": sum(f["kept"] for f in filtered),
        "rejected": sum(f["rejected"] for f in filtered),
        "removed_by": dict(removed),
        "fitted": fitted,
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def build_summary(
    *,
    started: datetime,
    scoring: Scoring | None,
    redone: set[str],
    records: list[dict[str, Any]],
    failures: list[ShardFailure],
    models: list[dict[str, Any]],
    config: dict[str, Any],
    fitted: dict[str, Any],
) -> dict[str, Any]:
    """Totals over every committed shard of the output, and what this run itself did
    (`scoring` None: it scored nothing)."""
    totals = ShardStats()
    for record in records:
        totals.merge(ShardStats.from_json(record))
    scored_now = scoring.committed if scoring else []
    rows_now = sum(r["rows"] for r in scored_now)
    seconds = scoring.seconds if scoring else 0.0
    clock = scoring.clock if scoring else None
    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "this_run": {
            "shards_scored": len(scored_now),
            "shards_new": sum(r["shard"] not in redone for r in scored_now),
            "shards_redone": sum(r["shard"] in redone for r in scored_now),
            "shards_skipped": len(records) - len(scored_now),
            "shards_failed": len(failures),
            "rows": rows_now,
            "scoring_seconds": round(seconds, 3),
            "rows_per_second": round(rows_now / seconds, 1) if rows_now else None,
            "first_blocks_seconds": _rounded(clock and clock.first_blocks_seconds, 3),
            "startup_seconds": _rounded(clock and clock.startup_seconds, 3),
            "steady_rows_per_second": _rounded(clock and clock.steady_rows_per_second, 1),
            "actors": scoring.plan.describe() if scoring else "none (nothing to score)",
            # Where the scoring ran (its plan by node) and nodes that left mid-run.
            "cluster": scoring.cluster() if scoring else None,
        },
        "failed_shards": [{"shard": f.name, "input": f.url, "error": f.error} for f in failures],
        "shards": sorted(r["shard"] for r in records),
        **totals.to_json(),
        "filters": _filter_totals(records, fitted),
        "models": models,
        "config": config,
        "versions": versions(),
    }


def closing_line(summary: dict[str, Any], output: str, *, scored: bool = True) -> str:
    """The line a run ends with; `scored` False for `winnow filter`, which loads no model."""
    run, filters = summary["this_run"], summary["filters"]
    not_scored = sum(n for s, n in summary["status_counts"].items() if s != RowStatus.OK)
    output_line = (
        f"{summary['rows']:,} rows in output, {not_scored:,} without a score, "
        f"{filters['kept']:,} kept by the filters -> {output}"
    )
    if not scored:
        failed = f", {run['shards_failed']} failed" if run["shards_failed"] else ""
        shards = len(summary["shards"])
        return f"winnow: filters applied to {shards} scored shard(s){failed}; {output_line}"
    rows = f"{run['rows']:,} rows this run"
    if run["rows_per_second"]:
        rows += f" at {run['rows_per_second']:,.0f} rows/s"
    if run["steady_rows_per_second"]:
        rows += (
            f" ({run['steady_rows_per_second']:,.0f} rows/s after "
            f"{run['startup_seconds']:.0f} s of start-up)"
        )
    return (
        f"winnow: {run['shards_new']} new shard(s) scored, {run['shards_redone']} redone "
        f"(input changed), {run['shards_skipped']} skipped, {run['shards_failed']} failed; "
        f"{rows}; {output_line}"
    )
