"""A batch made ready for the towers: statuses, each preprocess's pixels, token ids, and,
on a GPU, the pixels handed to the device on a stream of their own.

This is what can be done for one batch while another is in the model: on a GPU
actor that holds two batches at once (`ray.batches_in_flight`) it runs unlocked.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ImagesConfig, ModelConfig
from pipeline.images.headers import Headers
from pipeline.images.tensor import as_tensor
from pipeline.models.encoder import Encoder
from pipeline.schema import tokens_column
from pipeline.scoring.checks import Mapper, RowChecks, check_rows, pixel_parts
from pipeline.scoring.streams import PrepareStream

# The fewest threads a GPU actor decodes its PIL rows on (not JPEG, CMYK, cut off; every
# row with `images.decode: pil`): PIL works without the GIL, and one thread would do them
# one by one while the GPU waits. Ray gives the actor one CPU, whose torch threads say 1;
# a job's plan gives it the cores its readers leave (`images.decode_threads`).
GPU_PIL_THREADS = 4


@dataclass(kw_only=True)
class Prepared:
    """One batch made ready for the towers: what can be done while another batch is in them."""

    table: pa.Table
    checks: RowChecks
    pixels: list[Any]
    tokens: list[Any]
    # On a GPU, when the preparing stream has made `pixels` (see `streams`).
    ready: Any = None


class BatchPreparer:
    """Decodes and preprocesses a batch for every encoder of the actor, a part at a time.

    On the tensor path (nvJPEG and tensor preprocessing, the default on a GPU) the
    JPEGs a batched decoder takes are decoded together; PIL takes the rest on
    `decode_threads` threads. On the PIL path each image is preprocessed as it is
    decoded.
    """

    def __init__(
        self,
        *,
        encoders: list[Encoder],
        configs: list[ModelConfig],
        images: ImagesConfig,
        device: str,
        threads: int,
    ) -> None:
        on_gpu = device.startswith("cuda")
        self.encoders, self.configs, self.images, self.device = encoders, configs, images, device
        tensor_steps = [encoder.tensor_preprocess() for encoder in encoders]
        wanted = images.decode == "tensor" or (images.decode == "auto" and on_gpu)
        usable = wanted and all(step is not None for step in tensor_steps)
        self.tensor_steps = tensor_steps if usable else [None] * len(encoders)
        self.pixel_keys = [
            step if step is not None else encoder.preprocess_key()
            for encoder, step in zip(encoders, self.tensor_steps, strict=True)
        ]
        # Each distinct preprocess by its key, in the order of its first model: models that
        # share one share its pixels. The PIL path runs the values (each with the crop a
        # thin image is resized to first, where the preprocess resizes the shorter side);
        # the tensor path, the keys.
        self.preprocesses = {
            key: (encoder.pil_preprocess(), encoder.thin_crop())
            for key, encoder in zip(self.pixel_keys, encoders, strict=True)
        }
        self.jpeg_device = device if usable else None
        self.pin = on_gpu
        self.preparing = PrepareStream(device)
        self.mapper: Mapper = map
        self.decode_threads = threads
        if threads > 1:
            self.mapper = ThreadPoolExecutor(threads, thread_name_prefix="decode").map

    def _preprocessed(self, image: Any) -> tuple[Any, ...]:
        """A PIL image through each of `preprocesses`, in their order; a thin one resized
        to the crop first, which its whole resized size would not fit (`extreme`)."""
        return tuple(
            preprocess(thin.fit(image) if thin else image)
            for preprocess, thin in self.preprocesses.values()
        )

    def _host_pixels(self, image: Any) -> Any:
        """A PIL row's pixels as the tensor path takes them, made on its decode thread
        rather than on the actor's main thread, whose host work bounds a GPU job (and
        pinned there, on a GPU)."""
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
