"""Nearest neighbours and a 2-D map over a run's stored embeddings.

Search is an exact scan with numpy, one shard at a time, so it works on any
fsspec storage and any number of rows in bounded memory; for repeated queries
at scale, build a vector index from the embeddings instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.io.results import Run
from pipeline.schema import SAMPLE_ROW, SAMPLE_SHARD, embedding_column, score_column


def text_vector(run: Run, alias: str, query: str) -> np.ndarray:
    """The run's own model, loaded on the CPU, encodes `query`."""
    import torch

    from pipeline.models.encoder import encoder_for

    info = next(m for m in run.summary["models"] if m["alias"] == alias)
    config = ModelConfig(
        alias=alias, name=info["name"], pretrained=info["pretrained"], precision="fp32"
    )
    family = encoder_for(config)
    encoder = family.load(config, device="cpu")
    tokens = torch.from_numpy(family.tokenizer(family.tokenizer_key(config))([query]))
    with torch.inference_mode():
        vector = encoder.encode_texts(tokens.long())[0]
    return (vector / vector.norm()).numpy().astype(np.float32)


def nearest(
    run: Run, alias: str, vector: np.ndarray, *, tower: str = "image", k: int = 8
) -> pa.Table:
    """The k rows whose `tower` embedding is closest to `vector` (cosine), with shard and row.

    One shard at a time, keeping the best k so far: memory stays at one shard's embeddings.
    """
    column = embedding_column(alias, tower)
    best: list[tuple[float, str, int]] = []
    for name in run.shards:
        table = run.read_scored(name, [column])
        valid = np.flatnonzero(table[column].is_valid().to_numpy(zero_copy_only=False))
        if not len(valid):
            continue
        flat = table[column].combine_chunks().take(pa.array(valid)).flatten()
        vectors = np.asarray(flat.to_numpy(zero_copy_only=False), np.float32).reshape(
            len(valid), -1
        )
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        similarity = vectors @ vector
        for index in np.argsort(similarity)[::-1][:k]:
            best.append((float(similarity[index]), name, int(valid[index])))
        best = sorted(best, reverse=True)[:k]
    selection = pa.table({SAMPLE_SHARD: [b[1] for b in best], SAMPLE_ROW: [b[2] for b in best]})
    details = run.fetch(selection, [run.caption_column, score_column(alias)])
    return pa.table(
        {
            SAMPLE_SHARD: selection[SAMPLE_SHARD],
            SAMPLE_ROW: selection[SAMPLE_ROW],
            "caption": details[run.caption_column] if best else pa.array([], pa.string()),
            "score": details[score_column(alias)] if best else pa.array([], pa.float32()),
            "similarity": pa.array([b[0] for b in best], pa.float32()),
        }
    )


def hits_figure(run: Run, hits: pa.Table, title: str) -> Any:
    """The hits' images with their captions and similarities."""
    from pipeline.report.plots import example_grid

    captions, similarity = hits["caption"].to_pylist(), hits["similarity"].to_pylist()
    return example_grid(title, run.images(hits), captions, similarity)


def stored_vector(
    run: Run, alias: str, shard: str, row: int, *, tower: str = "image"
) -> np.ndarray:
    selection = pa.table({SAMPLE_SHARD: [shard], SAMPLE_ROW: [row]})
    value = run.fetch(selection, [embedding_column(alias, tower)]).column(0)[0].as_py()
    return np.asarray(value, np.float32)


def projection(run: Run, alias: str, *, rows: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Image embeddings of a sample projected on their two principal components, and scores."""
    sample = run.sample(rows, [embedding_column(alias, "image"), score_column(alias)])
    keep = [
        i
        for i, v in enumerate(sample[embedding_column(alias, "image")].to_pylist())
        if v is not None
    ]
    vectors = np.asarray(
        [sample[embedding_column(alias, "image")][i].as_py() for i in keep], np.float32
    )
    scores = np.asarray([sample[score_column(alias)][i].as_py() for i in keep], dtype=float)
    centred = vectors - vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:2].T, scores


def projection_figure(points: np.ndarray, scores: np.ndarray, alias: str) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axis = figure.add_subplot()
    shown = axis.scatter(
        points[:, 0], points[:, 1], c=np.nan_to_num(scores, nan=-1), s=5, cmap="viridis"
    )
    figure.colorbar(shown, ax=axis, label=score_column(alias))
    axis.set(title="Image embeddings, first two principal components", xlabel="PC 1", ylabel="PC 2")
    return figure
