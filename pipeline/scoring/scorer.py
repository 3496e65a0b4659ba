"""The model actor: images and token ids in, embeddings, scores and row status out.

Each actor loads its models once and keeps them on its device; Ray Data
feeds it batches of image bytes and token ids. Bad rows get a status and a
reason and never fail the batch; good rows in the same batch are scored as if
the bad ones were not there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ImagesConfig, ModelConfig
from pipeline.images.decode import Decoded, decode_image, over_limit
from pipeline.images.encoded import ImageBytes
from pipeline.images.extreme import ThinCrop
from pipeline.images.headers import Headers
from pipeline.images.tensor import TensorPreprocess, as_tensor, decode_jpegs, orient
from pipeline.models.loader import LoadedModel, load_model
from pipeline.schema import (
    CAPTION_ERROR,
    CAPTION_STATUS,
    ERROR,
    IMAGE,
    ROW,
    SHARD,
    STATUS,
    UPSTREAM_ERROR,
    UPSTREAM_OK,
    embedding_column,
    score_column,
    tokens_column,
)
from pipeline.scoring.streams import PrepareStream, hand_over
from pipeline.status import RowStatus

# The fewest threads a GPU actor decodes its PIL rows on (not JPEG, CMYK, cut off; every
# row with `images.decode: pil`): PIL works without the GIL, and one thread would do them
# one by one while the GPU waits. Ray gives the actor one CPU, whose torch threads say 1;
# a job's plan gives it the cores its readers leave (`images.decode_threads`).
GPU_PIL_THREADS = 4


@dataclass(kw_only=True)
class RowChecks:
    """Per-row status after image decode and caption checks, and which rows each tower gets."""

    status: list[str]
    error: list[str | None]
    images: list[Any] = field(default_factory=list)
    image_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def join(cls, parts: list[tuple[int, RowChecks]]) -> RowChecks:
        """One batch's checks from its parts' (first row, checks), in row order."""
        return cls(
            status=[status for _, checks in parts for status in checks.status],
            error=[error for _, checks in parts for error in checks.error],
            image_rows=np.concatenate([checks.image_rows + start for start, checks in parts]),
            text_rows=np.concatenate([checks.text_rows + start for start, checks in parts]),
        )


def pixel_parts(pixels: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Row ranges, in order, whose declared pixels add up to at most `budget` (an image over
    it goes alone). A batch decoded at once holds every image at full size: 1,024
    12-megapixel photos are 37 GB, so such a batch is decoded a part at a time."""
    parts, start, held = [], 0, 0
    for row, size in enumerate(pixels):
        if held + size > budget and row > start:
            parts.append((start, row))
            start, held = row, 0
        held += size
    parts.append((start, len(pixels)))
    return parts


Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def check_rows(
    table: pa.Table,
    images: ImagesConfig,
    *,
    jpeg_device: str | None = None,
    mapper: Mapper = map,
    finish: Callable[[Any], Any] | None = None,
) -> RowChecks:
    """Statuses for every row, and the decoded images (PIL, or uint8 tensors from nvJPEG).

    Decisions come from the columns the read tasks made (`header_stage`): rows
    whose header declares too many pixels end here, undecoded. With
    `jpeg_device`, the JPEGs the batched decoder takes are decoded there in one
    batch, straight from the column's memory (on a GPU, progressive ones excepted);
    anything else, and any JPEG that decoder refuses, goes through PIL, which sets
    its status. PIL decodes go through `mapper` (a thread pool's map runs them in
    parallel, and beside the batched decode). `finish` is applied to each PIL
    image in the same call as its decode, and its result kept instead: a
    preprocess there lets each decoded image go at once.
    """
    data = ImageBytes(table[IMAGE])
    headers = Headers.of(table)
    upstream_ok = table[UPSTREAM_OK].to_numpy(zero_copy_only=False).astype(bool)
    too_large = upstream_ok & (headers.pixels > images.max_pixels)
    failed: dict[int, Decoded] = {}  # rows whose image ends them, with why
    upstream_error = table[UPSTREAM_ERROR]
    for row in np.flatnonzero(~upstream_ok).tolist():
        failed[row] = Decoded(None, RowStatus.UPSTREAM_FAILED, upstream_error[row].as_py())
    for row in np.flatnonzero(too_large).tolist():
        width, height = int(headers.width[row]), int(headers.height[row])
        failed[row] = over_limit(width, height, max_pixels=images.max_pixels)  # type: ignore[assignment]
    left = upstream_ok & ~too_large
    batched = left & (headers.orientation > 0) & bool(jpeg_device)
    if jpeg_device and jpeg_device.startswith("cuda"):
        # torchvision gives nvJPEG's batched (hardware) decode only what that takes; it
        # decodes the rest, progressive JPEGs among them, one at a time, Huffman on one
        # host thread under a process-wide lock. The decode threads take them side by side.
        batched &= ~headers.progressive

    def decode(row: int) -> Decoded:
        result = decode_image(data.bytes(row), max_pixels=images.max_pixels)
        if finish is None or result.image is None:
            return result
        return Decoded(finish(result.image), result.status)

    # A pool's map starts on the PIL rows now, so they decode beside the batched decode.
    with_pil = np.flatnonzero(left & ~batched).tolist()
    results = zip(with_pil, mapper(decode, with_pil), strict=True)
    decoded: dict[int, Any] = {}
    jpegs = np.flatnonzero(batched).tolist()
    refused: list[int] = []
    if jpegs:
        tensors = decode_jpegs([data.tensor(row) for row in jpegs], jpeg_device)  # type: ignore[arg-type]
        orientation = headers.orientation[jpegs].tolist()
        for row, tensor, turn in zip(jpegs, tensors, orientation, strict=True):
            if tensor is None:
                refused.append(row)
            else:
                decoded[row] = orient(tensor, turn)
    for row, result in chain(results, zip(refused, mapper(decode, refused), strict=True)):
        if result.image is None:
            failed[row] = result
        else:
            decoded[row] = result.image
    return _checked(table, failed, decoded)


def _checked(table: pa.Table, failed: dict[int, Decoded], decoded: dict[int, Any]) -> RowChecks:
    """Each row's status: its image's failure, else its caption's; both reasons kept."""
    caption_status = table[CAPTION_STATUS].to_pylist()
    errors = [error or None for error in table[CAPTION_ERROR].to_pylist()]
    status = list(caption_status)
    for row, failure in failed.items():
        status[row] = str(failure.status)
        errors[row] = "; ".join(m for m in (failure.error, errors[row]) if m) or None
    image_rows = sorted(decoded)
    return RowChecks(
        status=status,
        error=errors,
        images=[decoded[row] for row in image_rows],
        image_rows=np.asarray(image_rows, np.int64),
        text_rows=np.flatnonzero(np.asarray(caption_status, object) == RowStatus.OK.value),
    )


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


@dataclass(kw_only=True)
class Prepared:
    """One batch made ready for the towers: what can be done while another batch is in them."""

    table: pa.Table
    checks: RowChecks
    pixels: list[Any]
    tokens: list[Any]
    # On a GPU, when the preparing stream has made `pixels` (see `streams`).
    ready: Any = None


class ClipScorer:
    """Ray Data callable class: one instance per actor, models loaded once.

    On a GPU, Ray may run several calls at once on one actor
    (`ray.batches_in_flight`): decoding and preprocessing run unlocked, so the
    next batch gets ready while this one is in the model; the towers run one
    batch at a time, which keeps device memory bounded by the batch size. A
    CPU actor gets one batch at a time (see `plan_actors`) and decodes its
    images on all of its threads; a GPU actor its PIL rows on `decode_threads`
    (`images.decode_threads` first, at least `GPU_PIL_THREADS` if neither says).
    """

    def __init__(
        self,
        *,
        models: list[dict[str, Any]],
        images: dict[str, Any],
        embedding_dtype: str,
        device: str,
        threads: int | None = None,
        decode_threads: int | None = None,
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        on_gpu = device.startswith("cuda")
        self.images = ImagesConfig(**images)
        self.embedding_dtype = embedding_dtype
        self.configs = [ModelConfig(**m) for m in models]
        self.models: list[LoadedModel] = [load_model(c, device=device) for c in self.configs]
        tensor_steps = [TensorPreprocess.of(m.model) for m in self.models]
        wanted = self.images.decode == "tensor" or (self.images.decode == "auto" and on_gpu)
        usable = wanted and all(step is not None for step in tensor_steps)
        self.tensor_steps = tensor_steps if usable else [None] * len(self.models)
        self.pixel_keys = [
            step if step is not None else repr(loaded.preprocess)
            for loaded, step in zip(self.models, self.tensor_steps, strict=True)
        ]
        # Each distinct preprocess by its key, in the order of its first model: models that
        # share one share its pixels. The PIL path runs the values (each with the crop a
        # thin image is resized to first, where the preprocess resizes the shorter side);
        # the tensor path, the keys.
        self.preprocesses = {
            key: (loaded.preprocess, ThinCrop.of(loaded.model))
            for key, loaded in zip(self.pixel_keys, self.models, strict=True)
        }
        self.jpeg_device = device if usable else None
        self.pin = on_gpu
        self.preparing = PrepareStream(device)
        self.model_lock = threading.Lock()
        self.mapper: Mapper = map
        own = GPU_PIL_THREADS if on_gpu else threads or torch.get_num_threads()
        self.decode_threads = self.images.decode_threads or decode_threads or own
        if self.decode_threads > 1:
            self.mapper = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode").map

    def _preprocessed(self, image: Any) -> tuple[Any, ...]:
        """A PIL image through each of `preprocesses`, in their order; a thin one resized
        to the crop first, which its whole resized size would not fit (`extreme`)."""
        return tuple(
            preprocess(thin.fit(image) if thin else image)
            for preprocess, thin in self.preprocesses.values()
        )

    def _host_pixels(self, image: Any) -> Any:
        """A PIL row's pixels as the tensor path takes them, made on its decode thread.

        On the actor's main thread, whose host work bounds a GPU job, each cost two
        copies of the image (0.6 ms for a web image here) and, on a GPU, a third into
        pinned memory, one row after another."""
        pixels = as_tensor(image)
        return pixels.pin_memory() if self.pin else pixels

    def _part(self, table: pa.Table) -> tuple[RowChecks, dict]:
        """One part's checks and pixels by preprocess; its decoded images are let go here,
        before the next part decodes. On the PIL path each image is preprocessed as it is
        decoded, so only one a thread is held decoded; on the tensor path a PIL row
        becomes a tensor there."""
        import torch

        pil = self.jpeg_device is None
        checks = check_rows(
            table,
            self.images,
            jpeg_device=self.jpeg_device,
            mapper=self.mapper,
            finish=self._preprocessed if pil else self._host_pixels,
        )
        made: dict[Any, Any] = dict.fromkeys(self.preprocesses)  # models with one share it
        if checks.images:
            for index, key in enumerate(made):
                made[key] = (
                    torch.stack([pixels[index] for pixels in checks.images])
                    if pil
                    else key(checks.images, self.device)  # there a key is its TensorPreprocess
                )
        checks.images = []
        return checks, made

    def _joined(self, parts: list[dict[Any, Any]]) -> list[Any]:
        """Each model's pixels for the whole batch, pinned when they go from the CPU to a GPU."""
        import torch

        joined: dict[Any, Any] = {}
        for key in parts[0]:
            pieces = [made[key] for made in parts if made[key] is not None]
            pixels = pieces[0] if len(pieces) == 1 else torch.cat(pieces) if pieces else None
            if pixels is not None and self.pin and pixels.device.type == "cpu":
                pixels = pixels.pin_memory()
            joined[key] = pixels
        return [joined[key] for key in self.pixel_keys]

    def _tokens(self, config: ModelConfig, table: pa.Table, rows: np.ndarray) -> Any:
        import torch

        if not len(rows):
            return None
        tokens = table[tokens_column(config.alias)].combine_chunks().take(rows)
        flat = tokens.values.to_numpy(zero_copy_only=False).astype(np.int64)
        ids = torch.from_numpy(flat).view(len(rows), -1)
        return ids.pin_memory() if self.pin else ids

    def prepare(self, table: pa.Table) -> Prepared:
        """A batch's statuses, pixels and token ids; decoded a part at a time, each part's
        declared pixels within `images.max_decoded_pixels`."""
        pixels = Headers.of(table).pixels
        pixels[pixels > self.images.max_pixels] = 0  # refused from their header, never decoded
        parts = pixel_parts(pixels.tolist(), self.images.max_decoded_pixels)
        with self.preparing.active():
            done = [(start, *self._part(table[start:stop])) for start, stop in parts]
            pixels = self._joined([made for _, _, made in done])
            ready = self.preparing.done()
        checks = RowChecks.join([(start, checks) for start, checks, _ in done])
        tokens = [self._tokens(config, table, checks.text_rows) for config in self.configs]
        return Prepared(table=table, checks=checks, pixels=pixels, tokens=tokens, ready=ready)

    def _encode(
        self, loaded: LoadedModel, size: int, pixels: Any, tokens: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        def run(encode: Any, inputs: Any, dtype: Any = None) -> np.ndarray:
            if inputs is None:
                return np.zeros((0, loaded.dim), np.float32)
            out = []
            for start in range(0, inputs.shape[0], size):
                chunk = inputs[start : start + size].to(self.device, dtype, non_blocking=True)
                out.append(F.normalize(encode(chunk).float(), dim=-1).cpu())
            return torch.cat(out).numpy()

        with torch.inference_mode():
            image = run(loaded.model.encode_image, pixels, loaded.dtype)
            text = run(loaded.model.encode_text, tokens)
        return image, text

    def __call__(self, table: pa.Table) -> pa.Table:
        """A call's rows scored; a larger block than a batch (a CPU actor is handed whole
        blocks, see `build_dataset`) a batch at a time, which bounds its pixels' memory."""
        step = max(config.batch_size for config in self.configs)
        if table.num_rows <= step:
            return self._scored(table)
        return pa.concat_tables(
            [self._scored(table.slice(start, step)) for start in range(0, table.num_rows, step)]
        )

    def _scored(self, table: pa.Table) -> pa.Table:
        prepared = self.prepare(table)
        with self.model_lock:
            hand_over(prepared.ready, prepared.pixels)
            encoded = [
                self._encode(loaded, config.batch_size, pixels, tokens)
                for loaded, config, pixels, tokens in zip(
                    self.models, self.configs, prepared.pixels, prepared.tokens, strict=True
                )
            ]
        return self.columns(prepared, encoded)

    def columns(self, prepared: Prepared, encoded: list[tuple[np.ndarray, np.ndarray]]) -> pa.Table:
        table, checks = prepared.table, prepared.checks
        num_rows = table.num_rows
        columns: dict[str, pa.Array] = {
            SHARD: table[SHARD].combine_chunks(),
            ROW: table[ROW].combine_chunks(),
            STATUS: pa.array(checks.status, pa.string()),
            ERROR: pa.array(checks.error, pa.string()),
        }
        scored = np.asarray([s == RowStatus.OK for s in checks.status], bool)
        for (image, text), loaded, config in zip(encoded, self.models, self.configs, strict=True):
            dim = loaded.dim
            image_full = np.zeros((num_rows, dim), np.float32)
            text_full = np.zeros((num_rows, dim), np.float32)
            image_full[checks.image_rows] = image
            text_full[checks.text_rows] = text
            score = (image_full * text_full).sum(axis=1)
            columns[score_column(config.alias)] = pa.array(score.astype(np.float32), mask=~scored)
            columns[embedding_column(config.alias, "image")] = embedding_array(
                image, checks.image_rows, num_rows, dim, self.embedding_dtype
            )
            columns[embedding_column(config.alias, "text")] = embedding_array(
                text, checks.text_rows, num_rows, dim, self.embedding_dtype
            )
        return pa.table(columns)
