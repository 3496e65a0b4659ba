"""The model actor: images and token ids in, embeddings, scores and row status out.

Each actor loads its models once and keeps them on its device; Ray Data
feeds it batches of image bytes and token ids. Bad rows get a status and a
reason and never fail the batch; good rows in the same batch are scored as if
the bad ones were not there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ImagesConfig, ModelConfig
from pipeline.images.decode import decode_image
from pipeline.io.reader import IMAGE, ROW, SHARD, UPSTREAM_ERROR, UPSTREAM_OK
from pipeline.models.loader import LoadedModel, load_model
from pipeline.scoring.captions import CAPTION_ERROR, CAPTION_STATUS, tokens_column
from pipeline.status import RowStatus

STATUS = "_winnow_status"
ERROR = "_winnow_error"


@dataclass(kw_only=True)
class RowChecks:
    """Per-row status after image decode and caption checks, and which rows each tower gets."""

    status: list[str]
    error: list[str | None]
    images: list[Any] = field(default_factory=list)
    image_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def check_rows(table: pa.Table, images: ImagesConfig) -> RowChecks:
    upstream_ok = table[UPSTREAM_OK].to_pylist()
    upstream_error = table[UPSTREAM_ERROR].to_pylist()
    caption_status = table[CAPTION_STATUS].to_pylist()
    caption_error = table[CAPTION_ERROR].to_pylist()
    status, errors, decoded, image_rows, text_rows = [], [], [], [], []
    for row, data in enumerate(table[IMAGE].to_pylist()):
        if not upstream_ok[row]:
            image_status, image_error = RowStatus.UPSTREAM_FAILED, upstream_error[row]
        else:
            result = decode_image(data, max_pixels=images.max_pixels)
            image_status, image_error = result.status, result.error
            if result.image is not None:
                decoded.append(result.image)
                image_rows.append(row)
        if caption_status[row] == RowStatus.OK:
            text_rows.append(row)
        first = image_status if image_status != RowStatus.OK else caption_status[row]
        status.append(str(first))
        messages = [m for m in (image_error, caption_error[row]) if m]
        errors.append("; ".join(messages) if messages else None)
    return RowChecks(
        status=status,
        error=errors,
        images=decoded,
        image_rows=np.asarray(image_rows, np.int64),
        text_rows=np.asarray(text_rows, np.int64),
    )


def embedding_column(
    vectors: np.ndarray, rows: np.ndarray, num_rows: int, dim: int, dtype: str
) -> pa.Array:
    """A fixed-size-list column with a null for every row the tower did not see."""
    values = np.zeros((num_rows, dim), dtype=dtype)
    values[rows] = vectors
    valid = np.zeros(num_rows, bool)
    valid[rows] = True
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~valid))


class ClipScorer:
    """Ray Data callable class: one instance per actor, models loaded once."""

    def __init__(
        self,
        *,
        models: list[dict[str, Any]],
        images: dict[str, Any],
        embedding_dtype: str,
        device: str,
        threads: int | None = None,
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.images = ImagesConfig(**images)
        self.embedding_dtype = embedding_dtype
        self.configs = [ModelConfig(**m) for m in models]
        self.models: list[LoadedModel] = [load_model(c, device=device) for c in self.configs]

    def _encode(self, loaded: LoadedModel, config: ModelConfig, checks: RowChecks, table: pa.Table):
        import torch
        import torch.nn.functional as F

        model, size = loaded.model, config.batch_size
        image_out, text_out = [], []
        with torch.inference_mode():
            for start in range(0, len(checks.images), size):
                chunk = checks.images[start : start + size]
                pixels = torch.stack([loaded.preprocess(image) for image in chunk])
                pixels = pixels.to(self.device, loaded.dtype, non_blocking=True)
                image_out.append(F.normalize(model.encode_image(pixels).float(), dim=-1).cpu())
            if len(checks.text_rows):
                tokens = table[tokens_column(config.alias)].combine_chunks().take(checks.text_rows)
                flat = tokens.values.to_numpy(zero_copy_only=False)
                ids = torch.from_numpy(flat.astype(np.int64)).view(len(checks.text_rows), -1)
                for start in range(0, ids.shape[0], size):
                    chunk = ids[start : start + size].to(self.device, non_blocking=True)
                    text_out.append(F.normalize(model.encode_text(chunk).float(), dim=-1).cpu())
        empty = np.zeros((0, loaded.dim), np.float32)
        image = torch.cat(image_out).numpy() if image_out else empty
        text = torch.cat(text_out).numpy() if text_out else empty
        return image, text

    def __call__(self, table: pa.Table) -> pa.Table:
        num_rows = table.num_rows
        checks = check_rows(table, self.images)
        columns: dict[str, pa.Array] = {
            SHARD: table[SHARD].combine_chunks(),
            ROW: table[ROW].combine_chunks(),
            STATUS: pa.array(checks.status, pa.string()),
            ERROR: pa.array(checks.error, pa.string()),
        }
        for loaded, config in zip(self.models, self.configs, strict=True):
            image, text = self._encode(loaded, config, checks, table)
            dim = loaded.dim
            image_full = np.zeros((num_rows, dim), np.float32)
            text_full = np.zeros((num_rows, dim), np.float32)
            image_full[checks.image_rows] = image
            text_full[checks.text_rows] = text
            scored = np.asarray([s == RowStatus.OK for s in checks.status], bool)
            score = (image_full * text_full).sum(axis=1)
            columns[f"{config.alias}_score"] = pa.array(score.astype(np.float32), mask=~scored)
            columns[f"{config.alias}_image_embedding"] = embedding_column(
                image, checks.image_rows, num_rows, dim, self.embedding_dtype
            )
            columns[f"{config.alias}_text_embedding"] = embedding_column(
                text, checks.text_rows, num_rows, dim, self.embedding_dtype
            )
        return pa.table(columns)
