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
from pipeline.images.decode import Decoded, decode_image, probe
from pipeline.images.tensor import TensorPreprocess, decode_jpegs
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


def check_rows(
    table: pa.Table, images: ImagesConfig, *, jpeg_device: str | None = None
) -> RowChecks:
    """Statuses for every row, and the decoded images (PIL, or uint8 tensors from nvJPEG).

    With `jpeg_device`, JPEG rows are decoded there in one batch; anything else,
    and any JPEG that decoder refuses, goes through PIL, which sets its status.
    """
    upstream_ok = table[UPSTREAM_OK].to_pylist()
    upstream_error = table[UPSTREAM_ERROR].to_pylist()
    caption_status = table[CAPTION_STATUS].to_pylist()
    caption_error = table[CAPTION_ERROR].to_pylist()
    data = table[IMAGE].to_pylist()
    results: dict[int, Decoded] = {}
    jpegs: list[int] = []
    for row, value in enumerate(data):
        if not upstream_ok[row]:
            results[row] = Decoded(None, RowStatus.UPSTREAM_FAILED, upstream_error[row])
            continue
        kind, failure = probe(value, max_pixels=images.max_pixels)
        if failure is not None:
            results[row] = failure
        elif jpeg_device and kind == "JPEG":
            jpegs.append(row)
        else:
            results[row] = decode_image(value, max_pixels=images.max_pixels)
    for row, tensor in zip(jpegs, decode_jpegs([data[r] for r in jpegs], jpeg_device), strict=True):
        if tensor is None:
            results[row] = decode_image(data[row], max_pixels=images.max_pixels)
        else:
            results[row] = Decoded(tensor, RowStatus.OK)  # type: ignore[arg-type]
    status, errors, decoded, image_rows, text_rows = [], [], [], [], []
    for row in range(len(data)):
        result = results[row]
        if result.image is not None:
            decoded.append(result.image)
            image_rows.append(row)
        if caption_status[row] == RowStatus.OK:
            text_rows.append(row)
        first = result.status if result.status != RowStatus.OK else caption_status[row]
        status.append(str(first))
        messages = [m for m in (result.error, caption_error[row]) if m]
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
        tensor_steps = [TensorPreprocess.of(m.model) for m in self.models]
        wanted = self.images.decode == "tensor" or (
            self.images.decode == "auto" and device.startswith("cuda")
        )
        usable = wanted and all(step is not None for step in tensor_steps)
        self.tensor_steps = tensor_steps if usable else None
        self.jpeg_device = device if usable else None

    def _encode(self, loaded: LoadedModel, config: ModelConfig, checks: RowChecks, table: pa.Table):
        import torch
        import torch.nn.functional as F

        model, size = loaded.model, config.batch_size
        tensor_step = self.tensor_steps[self.models.index(loaded)] if self.tensor_steps else None
        image_out, text_out = [], []
        with torch.inference_mode():
            for start in range(0, len(checks.images), size):
                chunk = checks.images[start : start + size]
                pixels = torch.stack(
                    [
                        tensor_step(image.to(self.device))
                        if isinstance(image, torch.Tensor)
                        else loaded.preprocess(image).to(self.device)
                        for image in chunk
                    ]
                )
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
        checks = check_rows(table, self.images, jpeg_device=self.jpeg_device)
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
