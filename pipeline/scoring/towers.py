"""The towers and the columns they make: a prepared batch through each encoder, one batch at
a time, into L2-normalised embeddings, cosine scores and the actor's output columns."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.models.encoder import Encoder
from pipeline.models.heads import ColumnScorer, placed
from pipeline.schema import ERROR, ROW, SHARD, STATUS, embedding_column, score_column
from pipeline.scoring.prepare import Prepared
from pipeline.scoring.streams import hand_over
from pipeline.status import RowStatus


@dataclass(frozen=True, kw_only=True)
class Encoded:
    """One encoder's output for a batch: the embeddings of the rows each tower took, and
    each of its heads' and concepts' values of the same rows, by name."""

    image: np.ndarray
    text: np.ndarray
    columns: dict[str, np.ndarray]


def embedding_array(
    vectors: np.ndarray, rows: np.ndarray, num_rows: int, dim: int, dtype: str
) -> pa.Array:
    """A fixed-size-list column with a null for every row the tower did not see."""
    values = np.zeros((num_rows, dim), dtype=dtype)
    values[rows] = vectors
    valid = np.zeros(num_rows, bool)
    valid[rows] = True
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~valid))


class Towers:
    """The encoders on their device. One batch is in them at a time, which bounds device
    memory by the batch size while the next batch is prepared beside it."""

    def __init__(
        self,
        *,
        encoders: list[Encoder],
        configs: list[ModelConfig],
        scorers: list[ColumnScorer],
        device: str,
        embedding_dtype: str,
    ) -> None:
        self.encoders, self.configs, self.scorers = encoders, configs, scorers
        self.device, self.embedding_dtype = device, embedding_dtype
        self.lock = threading.Lock()

    def encode(self, prepared: Prepared) -> list[Encoded]:
        """Each encoder's embeddings of the rows each tower takes, and its heads' and
        concepts' values of the same rows."""
        with self.lock:
            hand_over(prepared.ready, prepared.pixels)
            return [
                self._encode(encoder, config.batch_size, pixels, tokens)
                for encoder, config, pixels, tokens in zip(
                    self.encoders, self.configs, prepared.pixels, prepared.tokens, strict=True
                )
            ]

    def _encode(self, encoder: Encoder, size: int, pixels: Any, tokens: Any) -> Encoded:
        import torch
        import torch.nn.functional as F

        scorers = [s for s in self.scorers if s.alias == encoder.alias]
        values: dict[str, list[Any]] = {scorer.name: [] for scorer in scorers}

        def run(tower: str, encode: Any, inputs: Any, dtype: Any = None) -> np.ndarray:
            if inputs is None:
                return np.zeros((0, encoder.dim), np.float32)
            out = []
            for start in range(0, inputs.shape[0], size):
                chunk = inputs[start : start + size].to(self.device, dtype, non_blocking=True)
                normed = F.normalize(encode(chunk).float(), dim=-1)
                # On the device, beside the embeddings: the heads add no copy and no host work.
                for scorer in scorers:
                    if scorer.tower == tower:
                        values[scorer.name].append(scorer(normed).cpu())
                out.append(normed.cpu())
            return torch.cat(out).numpy()

        with torch.inference_mode():
            image = run("image", encoder.encode_images, pixels, encoder.dtype)
            text = run("text", encoder.encode_texts, tokens)
            scored = {
                name: torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)
                for name, parts in values.items()
            }
        return Encoded(image=image, text=text, columns=scored)

    def columns(self, prepared: Prepared, encoded: list[Encoded]) -> pa.Table:
        """The actor's output: row ids, status and error, then each model's score and
        embeddings and the heads and concepts over them (null where a row has none)."""
        table, checks = prepared.table, prepared.checks
        num_rows = table.num_rows
        columns: dict[str, pa.Array] = {
            SHARD: table[SHARD].combine_chunks(),
            ROW: table[ROW].combine_chunks(),
            STATUS: pa.array(checks.status, pa.string()),
            ERROR: pa.array(checks.error, pa.string()),
        }
        scored = np.asarray([s == RowStatus.OK for s in checks.status], bool)
        for each, encoder in zip(encoded, self.encoders, strict=True):
            image, text = each.image, each.text
            dim, alias = encoder.dim, encoder.alias
            image_full = np.zeros((num_rows, dim), np.float32)
            text_full = np.zeros((num_rows, dim), np.float32)
            image_full[checks.image_rows] = image
            text_full[checks.text_rows] = text
            score = (image_full * text_full).sum(axis=1)
            columns[score_column(alias)] = pa.array(score.astype(np.float32), mask=~scored)
            columns[embedding_column(alias, "image")] = embedding_array(
                image, checks.image_rows, num_rows, dim, self.embedding_dtype
            )
            columns[embedding_column(alias, "text")] = embedding_array(
                text, checks.text_rows, num_rows, dim, self.embedding_dtype
            )
            rows = {"image": checks.image_rows, "text": checks.text_rows}
            for scorer in self.scorers:
                if scorer.alias == alias:
                    values = each.columns[scorer.name]
                    columns[scorer.name] = placed(values, rows[scorer.tower], num_rows)
        return pa.table(columns)
