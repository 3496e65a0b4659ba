"""The tensor decode path (nvJPEG on GPU actors) scores like the PIL path, bad rows included."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from pipeline.bench.decode_rates import actor_rows
from pipeline.config import ImagesConfig, parse_config
from pipeline.images.decode import decode_image
from pipeline.images.tensor import STACK_CHUNK, TensorPreprocess, decode_jpegs
from pipeline.scoring.checks import check_rows
from pipeline.scoring.local import score_table, scorer_for
from pipeline.synth.dataset import SynthSpec, generate_rows
from tests.builders import (
    DEMO_CHECKPOINT,
    bomb_png,
    encode,
    jpeg,
    photo,
    row,
    with_exif,
    with_frame_bits,
)
from tests.images.devices import DEVICES


def rows() -> pa.Table:
    generated = list(generate_rows(SynthSpec(rows_per_shard=80, noise_fraction=0.3, seed=5), 0))
    odd = [
        row("png", encode(photo(1), "PNG"), "a png"),
        row("grey-jpeg", encode(photo(2).convert("L"), "JPEG"), "grey"),
        row("cmyk-jpeg", encode(photo(3).convert("CMYK"), "JPEG"), "cmyk"),
        row("rgb-jpeg", encode(photo(3), "JPEG", keep_rgb=True), "stored as rgb"),
        row("truncated", jpeg(4, (300, 300))[:500], "cut"),
        # Headers PIL refuses and libjpeg or nvJPEG may take: PIL's status for both paths.
        row("short-jfif", jpeg(6)[:2] + b"\xff\xe0\x00\x07JFIF\x00" + jpeg(6)[2:], "jfif"),
        row("12-bit", with_frame_bits(jpeg(7), 12), "twelve bits"),
        row("bomb", bomb_png(), "huge"),
    ]
    keys = ["key", "jpg", "caption", "status", "error_message"]
    return pa.Table.from_pylist([{k: r[k] for k in keys} for r in generated + odd])


def scores(decode: str, device: str) -> tuple[np.ndarray, list[str]]:
    config = parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [
                {"name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT), "precision": "fp32"}
            ],
            "images": {"decode": decode},
        }
    )
    out = score_table(rows(), config, scorer_for(config, device=device))
    values = np.asarray(out["clip_score"].to_numpy(zero_copy_only=False), np.float64)
    return values, out["_winnow_status"].to_pylist()


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_path_scores_like_pil_within_a_hundredth(device):
    """nvJPEG on a GPU, libjpeg on the CPU: the same statuses and scores as PIL."""
    pil, pil_status = scores("pil", "cpu")
    tensor, tensor_status = scores("tensor", device)
    assert tensor_status == pil_status
    both = ~np.isnan(pil)
    difference = np.abs(tensor[both] - pil[both])
    worst, mean = difference.max(), difference.mean()
    print(f"tensor vs PIL path on {device}: max |score diff| {worst:.5f}, mean {mean:.5f}")
    assert difference.max() < 0.01


def torchvision_preprocess(
    images: list[torch.Tensor], step: TensorPreprocess, *, exact_uint8: bool
) -> torch.Tensor:
    """The reference: torchvision's Resize(shorter side) + CenterCrop, then normalise.

    On uint8 images as given (the CPU's uint8 kernel, which rounds between its two
    passes), or with `exact_uint8` off on float ones, rounded once at the end: what
    torchvision does on a GPU, which has no uint8 kernel.
    """
    height, width = step.size
    crops = [
        F.center_crop(
            F.resize(
                image if exact_uint8 else image.float(),
                [min(height, width)],
                InterpolationMode.BICUBIC,
                antialias=True,
            ),
            [height, width],
        )
        for image in images
    ]
    batch = torch.stack(crops).float().clamp(0, 255).round() / 255
    mean = torch.tensor(step.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(step.std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def random_images(device: str) -> list[torch.Tensor]:
    """Landscape, portrait, already the size, smaller than the crop (padded), tiny: more
    of them than a chunk holds."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(300, 400), (224, 224), (100, 150), (1024, 700), (225, 224), (401, 299), (3, 5)]
    shapes = shapes * (STACK_CHUNK // len(shapes) + 2)
    return [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator).to(device)
        for h, w in shapes
    ]


SIZES = [(224, 224), (224, 320), (320, 224)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZES)
def test_image_by_image_preprocess_is_torchvisions_resize_and_centre_crop(device, size):
    """Exactly torchvision's values: uint8 math on the CPU, float math on a GPU."""
    images = random_images(device)
    step = TensorPreprocess(size=size, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))
    ours = step(images, device, batched=False)
    assert ours.shape == (len(images), 3, *size)
    reference = torchvision_preprocess(images, step, exact_uint8=device == "cpu")
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZES)
def test_chunked_preprocess_is_the_uint8_resize_within_a_rounding(device, size):
    """The chunk-at-once matrix form, rounded between its passes, gives the values of
    torch's uint8 kernel (PIL's math), in input order: its fixed-point weights make a
    grey level or two of difference at a few pixels."""
    images = random_images(device)
    step = TensorPreprocess(size=size, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))
    ours = step(images, device, batched=True)
    reference = torchvision_preprocess([i.cpu() for i in images], step, exact_uint8=True)
    std = torch.tensor(step.std).view(1, 3, 1, 1)
    levels = ((ours.cpu() - reference) * std * 255).abs()
    assert levels.max() < 2.001
    assert (levels > 0.5).float().mean() < 0.01


def test_one_bad_jpeg_costs_a_few_batched_calls_not_one_per_image(monkeypatch):
    import torchvision.io

    real = torchvision.io.decode_jpeg
    calls = []

    def counted(encoded, **options):
        calls.append(len(encoded))
        return real(encoded, **options)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", counted)
    images = [jpeg(seed, (32, 24)) for seed in range(64)]
    images[37] = images[37][: len(images[37]) // 2]  # cut: the batched call fails
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in images]
    decoded = decode_jpegs(encoded, "cpu")
    assert [row for row, image in enumerate(decoded) if image is None] == [37]
    assert all(image.shape == (3, 24, 32) for image in decoded if image is not None)
    assert len(calls) <= 2 * 6 + 1  # two halves per level down to the bad one


@pytest.mark.parametrize("device", DEVICES)
def test_batched_decode_turns_images_by_their_orientation_as_pil_does(device):
    """nvJPEG ignores EXIF orientation; a phone photo must still be scored upright."""
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    images = [with_exif(jpeg(seed, (48, 32)), seed) for seed in range(1, 9)]
    images.append(encode(photo(9, (48, 32)), "JPEG", xmp=xmp))
    checks = check_rows(actor_rows(images), ImagesConfig(decode="tensor"), jpeg_device=device)
    assert checks.status == ["ok"] * len(images)
    for data, tensor in zip(images, checks.images, strict=True):
        assert isinstance(tensor, torch.Tensor)  # the batched decoder's, not PIL's
        reference = np.asarray(decode_image(data, max_pixels=10**6).image)
        ours = tensor.permute(1, 2, 0).cpu().numpy()
        assert ours.shape == reference.shape
        assert np.abs(ours.astype(int) - reference).mean() < 3


def test_pil_rows_decode_beside_the_batched_decode_and_take_what_it_refuses(monkeypatch):
    """Rows the batched decoder does not take (a PNG) are on the pool before it starts, so
    its decode overlaps theirs; a JPEG it refuses goes to PIL after it."""
    import pipeline.scoring.checks as checks_module

    pil_started, waited = threading.Event(), []
    real_pil, real_batched = checks_module.decode_image, checks_module.decode_jpegs

    def pil(data, **options):
        pil_started.set()
        return real_pil(data, **options)

    def batched(encoded, device):
        waited.append(pil_started.wait(timeout=5))
        decoded = real_batched(encoded, device)
        return [None, *decoded[1:]]  # refuses the first

    monkeypatch.setattr(checks_module, "decode_image", pil)
    monkeypatch.setattr(checks_module, "decode_jpegs", batched)
    images = [jpeg(1, (48, 32)), encode(photo(2, (48, 32)), "PNG"), jpeg(3, (48, 32))]
    with ThreadPoolExecutor(2) as pool:
        checks = check_rows(
            actor_rows(images), ImagesConfig(decode="tensor"), jpeg_device="cpu", mapper=pool.map
        )
    assert waited == [True]
    assert checks.status == ["ok"] * 3
    assert checks.image_rows.tolist() == [0, 1, 2]
    assert [isinstance(image, torch.Tensor) for image in checks.images] == [False, False, True]


@pytest.mark.parametrize(("device", "batched"), [("cpu", [0, 1, 2]), ("cuda", [0, 2])])
def test_on_a_gpu_progressive_jpegs_go_to_the_decode_threads(monkeypatch, device, batched):
    """torchvision decodes a progressive JPEG on a GPU one at a time, on one host thread
    under a lock; there the decode threads take it. On the CPU libjpeg decodes it in the
    batch like any other. (The batched decoder runs on the CPU here, as if on `device`.)"""
    import pipeline.scoring.checks as checks_module

    real, taken = checks_module.decode_jpegs, []

    def batched_decode(encoded, on):
        taken.append(on)
        taken.extend(bytes(tensor.numpy()) for tensor in encoded)
        return real(encoded, "cpu")

    monkeypatch.setattr(checks_module, "decode_jpegs", batched_decode)
    images = [jpeg(1, (48, 32)), encode(photo(2, (48, 32)), "JPEG", progressive=True)]
    images.append(jpeg(3, (48, 32)))
    checks = check_rows(actor_rows(images), ImagesConfig(decode="tensor"), jpeg_device=device)
    assert taken == [device, *(images[row] for row in batched)]
    assert checks.status == ["ok"] * 3
    from_batch = [isinstance(image, torch.Tensor) for image in checks.images]
    assert from_batch == [row in batched for row in range(3)]
