"""Resize + centre crop of a chunk of images at once, as a GPU actor runs it."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from pipeline.images.resize import (
    chunk_shape,
    placement,
    resize_crop,
    size_chunks,
    window_shape,
    windows,
)
from tests.images.devices import DEVICES


def two_passes(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torch's antialiased bicubic resize across, rounded to 8 bits, then down; cropped."""
    resized = F.resize(image.float(), [min(size)], InterpolationMode.BICUBIC, antialias=True)
    height, (new_height, new_width) = image.shape[-2], resized.shape[-2:]
    across = F.resize(image.float(), [height, new_width], InterpolationMode.BICUBIC, antialias=True)
    across = across.clamp(0, 255).round()
    down = F.resize(across, [new_height, new_width], InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(down, list(size))


@pytest.mark.parametrize("device", DEVICES)
def test_resize_crop_is_two_bicubic_passes_rounded_between(device):
    """Shrinking, enlarging, the size already, and crops wider than the resized image
    (padded by an odd and an even number of columns). Where an intermediate value lies
    within float error of a half, the two round it apart: a few pixels differ."""
    generator = torch.Generator().manual_seed(1)
    shapes = [(300, 400), (64, 48), (10, 13), (48, 48), (47, 48), (200, 57)]
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator).to(device)
        for h, w in shapes
    ]
    for size in [(48, 48), (48, 61), (48, 62), (70, 48)]:
        reference = torch.stack([two_passes(image, size) for image in images])
        places = [placement(h, w, size) for h, w in shapes]
        difference = (resize_crop(images, size, places) - reference).abs()
        assert difference.max() < 1
        assert (difference > 0.01).float().mean() < 1e-3


def test_chunks_group_similar_sizes_and_bound_the_padded_pixels():
    """Every image once; a chunk of large images holds fewer of them; an image larger
    than the budget still gets a chunk of its own."""
    shapes = [(224, 224), (1024, 700), (300, 400), (4000, 3000), (256, 256), (1000, 1024)] * 20
    chunks = size_chunks(shapes, most=16, pixels=8 * 1024 * 1024)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(shapes)))
    for chunk in chunks:
        tall = max(shapes[i][0] for i in chunk)
        wide = max(shapes[i][1] for i in chunk)
        assert len(chunk) <= 16
        assert len(chunk) == 1 or tall * wide * len(chunk) <= 8 * 1024 * 1024
    longest = [max(max(shapes[i]) for i in chunk) for chunk in chunks]
    assert longest == sorted(longest)
    largest = [chunk for chunk, side in zip(chunks, longest, strict=True) if side == 4000]
    assert [len(chunk) for chunk in largest] == [1] * 20
    assert len(chunks[0]) == 16  # the small ones fill a chunk


@pytest.mark.parametrize("device", DEVICES)
def test_only_the_window_the_crop_reads_goes_into_the_products(device):
    """A landscape image's centre crop never reads its left and right ends: its window
    is about its shorter side, and what lies outside it changes nothing."""
    size = (224, 224)
    generator = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (3, 300, 900), dtype=torch.uint8, generator=generator)
    place = placement(300, 900, size)
    height, width = window_shape(place)
    assert height == 300 and width < 340
    _, columns = place
    changed = image.clone()
    changed[:, :, : columns.start] = 255 - changed[:, :, : columns.start]
    changed[:, :, columns.stop :] = 0
    ours, other = (resize_crop([i.to(device)], size, [place]) for i in (image, changed))
    assert torch.equal(ours, other)
    reference = two_passes(image.to(device), size)
    assert (ours - reference).abs().max() < 1


class Launches(TorchDispatchMode):
    """Counts the ops dispatched that are not views: each is a kernel launch on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def test_the_kernels_a_chunk_launches_do_not_grow_with_its_images():
    """The GPU actor's host work per image bounded its job: a chunk of 24 images
    launches what a chunk of 4 does, with the same values as each resized alone."""
    generator = torch.Generator().manual_seed(3)
    size = (32, 32)
    launched, batches, shapes = [], [], [(60 + 7 * i % 50, 80 - 5 * i % 40) for i in range(24)]
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in shapes
    ]
    for count in (4, 24):
        with Launches() as launches:
            batches.append(
                resize_crop(
                    images[:count], size, [placement(h, w, size) for h, w in shapes[:count]]
                )
            )
        launched.append(launches.ops)
    assert launched[0] == launched[1]
    alone = torch.cat(
        [resize_crop([image], size, [placement(*image.shape[1:], size)]) for image in images]
    )
    assert (batches[1] - alone).abs().max() < 1
    assert torch.equal(batches[0], batches[1][:4])


@pytest.mark.parametrize("device", DEVICES)
def test_a_chunk_holds_each_window_at_its_top_left(device):
    """Each image's window, whatever its orientation's strides, at the top left of its
    slot in the chunk; the chunk is as tall and wide as its largest window."""
    size = (24, 24)
    generator = torch.Generator().manual_seed(4)
    shapes = [(3, 30, 90), (3, 50, 40), (3, 20, 20)]
    images = [
        torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
        for shape in shapes
    ]
    images[1] = images[1].transpose(1, 2)  # as `orient` turns an image: not contiguous
    places = [placement(*image.shape[1:], size) for image in images]
    tall, wide = chunk_shape(places)
    chunk = windows(images, places, tall, wide)
    assert chunk.shape == (3, 3, tall, wide)
    for slot, image, (rows, columns) in zip(chunk, images, places, strict=True):
        window = image[:, rows.start : rows.stop, columns.start : columns.stop]
        assert torch.equal(slot[:, : window.shape[1], : window.shape[2]], window)
