"""Decode-only rates for the benchmark: each decode path alone, on the generated shards.

The CPU path is PIL + the model's own preprocess; the tensor path is what a GPU
actor runs (header checks, batched JPEG decode, tensor preprocess), with where
its time goes per image.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ImagesConfig, ModelConfig
from pipeline.images.decode import decode_image
from pipeline.models.encoder import encoder_for
from pipeline.status import RowStatus


def synchronise(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sample_jpegs(folder: Path, count: int) -> list[bytes]:
    """The first `count` images of the generated shards, reading no more row groups than that."""
    images: list[bytes] = []
    for path in sorted(folder.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=512, columns=["jpg"]):
            images += batch.column(0).to_pylist()
            if len(images) >= count:
                return images[:count]
    return images


def decode_only(folder: Path, model: ModelConfig, *, count: int, seconds: float = 10.0) -> float:
    """Images/s of the CPU decode path (PIL decode + the model's preprocess) on one core.

    One thread, as each of a CPU job's decode workers runs; stopped after `seconds`,
    since on a slow core the full sample takes minutes and tells no more.
    """
    import torch

    preprocess = encoder_for(model).load(model, device="cpu").pil_preprocess()
    images = sample_jpegs(folder, count)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started, done = time.perf_counter(), 0
        for data in images:
            preprocess(decode_image(data, max_pixels=10**9).image)
            done += 1
            if time.perf_counter() - started > seconds:
                break
        return done / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def actor_rows(images: list[bytes]) -> pa.Table:
    """Images as the actor receives them (their headers read, as read tasks read them), with
    nothing else wrong in their rows."""
    from pipeline.images.headers import header_stage
    from pipeline.schema import CAPTION_ERROR, CAPTION_STATUS, IMAGE, UPSTREAM_ERROR, UPSTREAM_OK

    rows = len(images)
    table = pa.table(
        {
            IMAGE: pa.array(images, pa.large_binary()),
            UPSTREAM_OK: pa.array([True] * rows),
            UPSTREAM_ERROR: pa.nulls(rows, pa.string()),
            CAPTION_STATUS: pa.array([RowStatus.OK.value] * rows),
            CAPTION_ERROR: pa.nulls(rows, pa.string()),
        }
    )
    return header_stage(table)


TENSOR_PHASES = ("header checks + JPEG decode", "JPEG decode alone", "resize + crop + normalise")
# On a GPU, where resizing goes a chunk at a time, also timed the way it went before.
IMAGE_BY_IMAGE = "the same, image by image"


def decode_tensor(
    folder: Path, model: ModelConfig, *, count: int, batch_size: int, device: str
) -> dict[str, Any] | None:
    """Images/s of the tensor path as an actor runs it: header checks, batched JPEG decode
    (nvJPEG on a GPU) and tensor preprocess, batch by batch.

    Then microseconds per image in each phase, over a few batches with the device
    synchronised between phases: where an actor's time goes when decode bounds it, and
    how much of it the calling thread spent on the CPU (host work, if near the whole).
    On a GPU, the resize phase is timed image by image too, as it ran before the
    chunked one (`TensorPreprocess(batched=False)`), for the ratio in one run.
    """
    from pipeline.images.encoded import ImageBytes
    from pipeline.images.tensor import decode_jpegs
    from pipeline.schema import IMAGE
    from pipeline.scoring.checks import check_rows

    step = encoder_for(model).load(model, device="cpu").tensor_preprocess()
    if step is None:
        return None
    images = sample_jpegs(folder, count)
    settings = ImagesConfig(decode="tensor")
    batches = [images[s : s + batch_size] for s in range(0, len(images), batch_size)]

    step(check_rows(actor_rows(images[:8]), settings, jpeg_device=device).images, device)
    synchronise(device)
    started = time.perf_counter()
    for batch in batches:
        step(check_rows(actor_rows(batch), settings, jpeg_device=device).images, device)
    synchronise(device)
    rate = len(images) / (time.perf_counter() - started)

    # check_rows decodes too; the same batch's decode alone shows the checks' share.
    phases = dict.fromkeys(TENSOR_PHASES, 0.0)
    if device.startswith("cuda"):
        phases[IMAGE_BY_IMAGE] = 0.0
    timed = batches[:4]

    # The calling thread's CPU time in each phase before it waits for the device: near the
    # wall time where host work bounds the phase (torchvision's GPU decode waits inside, and
    # CUDA spins while waiting, so there it counts the wait).
    host = dict.fromkeys(phases, 0.0)

    @contextmanager
    def clocked(phase: str) -> Iterator[None]:
        clock, thread = time.perf_counter(), time.thread_time()
        yield
        host[phase] += time.thread_time() - thread
        synchronise(device)
        phases[phase] += time.perf_counter() - clock

    for batch in timed:
        rows = actor_rows(batch)
        with clocked(TENSOR_PHASES[0]):
            checks = check_rows(rows, settings, jpeg_device=device)
        data = ImageBytes(rows[IMAGE])
        encoded = [data.tensor(row) for row in range(len(data))]
        with clocked(TENSOR_PHASES[1]):
            decode_jpegs(encoded, device)
        with clocked(TENSOR_PHASES[2]):
            step(checks.images, device)
        if IMAGE_BY_IMAGE in phases:
            with clocked(IMAGE_BY_IMAGE):
                step(checks.images, device, batched=False)
    count = sum(len(batch) for batch in timed) / 1e6
    return {
        "images_per_s": rate,
        "us_per_image": {phase: round(seconds / count, 1) for phase, seconds in phases.items()},
        "host_us_per_image": {phase: round(seconds / count, 1) for phase, seconds in host.items()},
    }
