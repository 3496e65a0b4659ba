"""Matplotlib figures for the notebooks and the HTML report.

Figures are built with the object API (no pyplot state), so they render the
same inline in a notebook and to PNG in a headless report.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from pipeline.report.analysis import recipe_marks, retention
from pipeline.schema import score_column

MAX_SHARD_LINES = 12


def bins(*arrays: np.ndarray) -> np.ndarray:
    """0.02-wide bins from -0.2 (or the lowest score) to 1."""
    lows = [float(np.nanmin(a)) for a in arrays if np.isfinite(a).any()]
    low = min([-0.2, *lows])
    return np.arange(np.floor(low * 50) / 50, 1.0 + 1e-9, 0.02)


def histogram(
    scores: dict[str, np.ndarray], by_shard: dict[str, np.ndarray] | None = None
) -> Figure:
    """Score histogram per alias; with `by_shard`, one line per shard for the first alias."""
    columns = 2 if by_shard else 1
    figure = Figure(figsize=(6 * columns, 3.6), layout="constrained")
    axis = figure.add_subplot(1, columns, 1)
    edges = bins(*scores.values())
    for alias, values in scores.items():
        axis.hist(values[~np.isnan(values)], bins=edges, alpha=0.6, label=score_column(alias))
    axis.set(title="Score distribution", xlabel="cosine score", ylabel="rows")
    axis.legend()
    if by_shard:
        per_shard = figure.add_subplot(1, columns, 2)
        shown = {n: v[~np.isnan(v)] for n, v in by_shard.items() if (~np.isnan(v)).any()}
        for name, values in list(shown.items())[:MAX_SHARD_LINES]:
            density, _ = np.histogram(values, bins=edges, density=True)
            per_shard.step(edges[:-1], density, where="post", label=name, linewidth=1)
        per_shard.set(title="Per shard (density)", xlabel="cosine score")
        if len(shown) <= MAX_SHARD_LINES:
            per_shard.legend(fontsize="x-small", ncol=2)
    return figure


def value_histogram(values: np.ndarray, column: str) -> Figure:
    """A head's or concept's values: their own range, not the cosine's."""
    figure = Figure(figsize=(6, 3.6), layout="constrained")
    axis = figure.add_subplot()
    shown = values[~np.isnan(values)]
    axis.hist(shown, bins=50 if len(shown) else 1, color="tab:green", alpha=0.8)
    axis.set(title=f"{column}: {len(shown):,} rows", xlabel=column, ylabel="rows")
    return figure


def retention_curve(scores: np.ndarray, alias: str) -> Figure:
    figure = Figure(figsize=(6, 3.6), layout="constrained")
    axis = figure.add_subplot()
    edges = bins(scores)
    thresholds = np.linspace(edges[0], edges[-1], 241)
    axis.plot(thresholds, retention(scores, thresholds), color="black")
    for (label, cut), colour in zip(
        recipe_marks(scores).items(), ("tab:red", "tab:blue"), strict=False
    ):
        kept = retention(scores, np.asarray([cut]))[0]
        axis.axvline(cut, color=colour, linestyle="--", label=f"{label}: keeps {kept:.0%}")
    axis.set(
        title=f"Rows kept vs {alias}_score threshold", xlabel="threshold", ylabel="fraction kept"
    )
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize="small")
    return figure


def _thumbnail(data: bytes | None, side: int = 160) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data or b"")).convert("RGB")
        image.thumbnail((side, side))
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        return np.asarray(canvas)
    except Exception:
        return np.full((side, side, 3), 220, np.uint8)


def example_grid(
    title: str,
    images: Sequence[bytes | None],
    captions: Sequence[str | None],
    scores: Sequence[float | None],
) -> Figure:
    count = max(1, len(images))
    columns = min(count, 6)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.3 * columns, 2.9 * rows), layout="constrained")
    figure.suptitle(title)
    for index, (data, text, score) in enumerate(zip(images, captions, scores, strict=True)):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.imshow(_thumbnail(data))
        axis.set_xticks([])
        axis.set_yticks([])
        label = textwrap.shorten(text or "(no caption)", 60)
        axis.set_title(f"{score:.3f}" if score is not None else "no score", fontsize=9)
        axis.set_xlabel("\n".join(textwrap.wrap(label, 28)), fontsize=7)
    return figure


def scatter(
    x: np.ndarray, y: np.ndarray, *, xlabel: str, ylabel: str, title: str, logx: bool = False
) -> Figure:
    figure = Figure(figsize=(5, 3.6), layout="constrained")
    axis = figure.add_subplot()
    axis.scatter(x, y, s=4, alpha=0.35)
    if logx:
        axis.set_xscale("log")
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return figure


def counts(values: dict[str, int], *, title: str) -> Figure:
    figure = Figure(figsize=(6, 0.5 + 0.35 * max(1, len(values))), layout="constrained")
    axis = figure.add_subplot()
    names = list(values)
    axis.barh(names, [values[n] for n in names], color="tab:gray")
    for position, name in enumerate(names):
        axis.text(values[name], position, f" {values[name]:,}", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set(title=title, xlabel="rows")
    return figure


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def show(figures: dict[str, Figure]) -> None:
    """Display figures in a notebook, as PNG whatever matplotlib backend is active."""
    from IPython.display import Image as Picture
    from IPython.display import display

    for figure in figures.values():
        display(Picture(png(figure)))
