"""The pictures of a run: what the notebook shows cell by cell and the report shows in one page."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

from pipeline.io.results import Run
from pipeline.report import plots
from pipeline.report.analysis import LAION_B32, score_bands
from pipeline.schema import (
    ORIGINAL_HEIGHT,
    ORIGINAL_WIDTH,
    RESIZED_HEIGHT,
    RESIZED_WIDTH,
    SAMPLE_ROW,
    SAMPLE_SHARD,
    score_column,
)

SAMPLE_ROWS = 20_000


def column_array(table: pa.Table, column: str) -> np.ndarray:
    values = pc.fill_null(table[column].cast(pa.float64()), np.nan)
    return values.to_numpy(zero_copy_only=False)


def score_array(table: pa.Table, alias: str) -> np.ndarray:
    return column_array(table, score_column(alias))


def chosen_threshold(run: Run, alias: str, scores: np.ndarray) -> float:
    """The cut the run's own filters used, else LAION's, else the median score."""
    for spec in run.summary["config"].get("filters", []):
        on_score = spec.get("column") in (None, score_column(alias))
        if spec["type"] == "score_threshold" and spec.get("alias", "clip") == alias and on_score:
            cut = spec.get("value", spec.get("min"))
            if cut is not None:
                return float(cut)
    fitted = run.summary.get("filters", {}).get("fitted", {}).get(f"score_top_fraction:{alias}", {})
    if fitted.get("threshold") is not None:
        return float(fitted["threshold"])
    valid = scores[~np.isnan(scores)]
    if len(valid) and valid.min() <= LAION_B32 <= valid.max():
        return LAION_B32
    return float(np.median(valid)) if len(valid) else 0.0


def distributions(run: Run, table: pa.Table) -> dict[str, Figure]:
    aliases = run.aliases
    shards = table[SAMPLE_SHARD].to_numpy(zero_copy_only=False)
    first = score_array(table, aliases[0])
    by_shard = {name: first[shards == name] for name in run.shards}
    figures = {"histogram": plots.histogram({a: score_array(table, a) for a in aliases}, by_shard)}
    for alias in aliases:
        figures[f"retention {alias}"] = plots.retention_curve(score_array(table, alias), alias)
    return figures


def examples(run: Run, table: pa.Table, alias: str, *, per_band: int = 6) -> dict[str, Figure]:
    """Example grids from the bottom, around the chosen threshold, and the top of the scores."""
    scores = score_array(table, alias)
    threshold = chosen_threshold(run, alias, scores)
    figures = {}
    for band, rows in score_bands(scores, threshold, per_band=per_band).items():
        selection = table.take(pa.array(rows)).select([SAMPLE_SHARD, SAMPLE_ROW])
        captions = run.fetch(selection, [run.caption_column])
        texts = (
            captions[run.caption_column].to_pylist() if captions.num_rows else [None] * len(rows)
        )
        figures[f"{alias} {band}"] = plots.example_grid(
            f"{alias}_score, {band}", run.images(selection), texts, scores[rows].tolist()
        )
    return figures


def added_columns(run: Run, table: pa.Table, *, per_band: int = 6) -> dict[str, Figure]:
    """Per head and concept column: its histogram, and the examples at its bottom and top."""
    figures = {}
    for column in [c for c in run.added if c in table.column_names]:
        values = column_array(table, column)
        figures[f"{column} histogram"] = plots.value_histogram(values, column)
        valid = np.flatnonzero(~np.isnan(values))
        order = valid[np.argsort(values[valid], kind="stable")]
        for band, rows in (("bottom", order[:per_band]), ("top", order[::-1][:per_band])):
            if not len(rows):
                continue
            selection = table.take(pa.array(rows)).select([SAMPLE_SHARD, SAMPLE_ROW])
            captions = run.fetch(selection, [run.caption_column])
            texts = captions[run.caption_column].to_pylist() if captions.num_rows else None
            figures[f"{column} {band}"] = plots.example_grid(
                f"{column}, {band}",
                run.images(selection),
                texts or [None] * len(rows),
                values[rows].tolist(),
            )
    return figures


def relations(run: Run, *, rows: int = SAMPLE_ROWS) -> dict[str, Figure]:
    """Score against caption length and image size (and against the other alias), on a sample."""
    aliases = run.aliases
    wanted = [run.caption_column, ORIGINAL_WIDTH, ORIGINAL_HEIGHT, RESIZED_WIDTH, RESIZED_HEIGHT]
    sample = run.sample(rows, [*wanted, *(score_column(a) for a in aliases)])
    first = score_array(sample, aliases[0])
    figures = {}
    if run.caption_column in sample.column_names:
        lengths = np.asarray([len(c or "") for c in sample[run.caption_column].to_pylist()])
        figures["caption length"] = plots.scatter(
            np.maximum(lengths, 1),
            first,
            xlabel="caption characters",
            ylabel=score_column(aliases[0]),
            title="Score vs caption length",
            logx=True,
        )
    for width, height in ((ORIGINAL_WIDTH, ORIGINAL_HEIGHT), (RESIZED_WIDTH, RESIZED_HEIGHT)):
        if {width, height} <= set(sample.column_names):
            sides = pc.min_element_wise(sample[width], sample[height]).cast(pa.float64())
            figures["image size"] = plots.scatter(
                np.maximum(pc.fill_null(sides, np.nan).to_numpy(zero_copy_only=False), 1), first,
                xlabel=f"shorter side ({width}/{height})", ylabel=score_column(aliases[0]),
                title="Score vs image size", logx=True,
            )  # fmt: skip
            break
    if len(aliases) > 1:
        figures["aliases"] = plots.scatter(
            first, score_array(sample, aliases[1]), xlabel=score_column(aliases[0]),
            ylabel=score_column(aliases[1]), title="One model's score against the other's",
        )  # fmt: skip
    return figures


def counts(run: Run) -> dict[str, Figure]:
    figures = {"status": plots.counts(run.summary["status_counts"], title="Rows by status")}
    rejected = run.rejections()
    if rejected:
        figures["rejections"] = plots.counts(
            rejected, title="Rows removed, by the policy that removed them"
        )
    return figures
