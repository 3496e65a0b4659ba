"""Resize (shorter side) + centre crop for a whole chunk of images at once, as matrix products.

A GPU actor that resizes image by image launches a few kernels per image from
Python: host work that grows with the images, and the actor's host work per image
is what bounds a GPU job. torch's antialiased bicubic
resize is separable: each output row is a weighted sum of input rows, each
output column one of input columns, with PIL's weights. Written as matrices
(zero outside the image and the crop), a chunk of differently sized images,
padded to its largest, is gathered, resized and cropped by a few batched matrix
products and elementwise ops, whatever the number of images; rounded to 8 bits
between the passes, as PIL does, its values are PIL's within a grey level or two.

Those matrices are mostly zeros: an output reads only the inputs within two
(stretched) kernel units of it. So only the window of each image that the centre
crop reads goes in (about its shorter side squared: a landscape image's crop
never reads its left and right ends), chunks group windows of similar sizes, and
each band of `BAND` outputs is a product with just the inputs it reads."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

# PIL's and torch's bicubic coefficient for antialiased resizing.
CUBIC_A = -0.5
# Output positions resized at once: each band reads only the inputs near it.
BAND = 32
# Padded pixels per chunk (of each channel): 400 MB of float32 for three channels, so
# that a chunk of large images holds fewer of them and device memory stays bounded.
CHUNK_PIXELS = 2**25


def crop_geometry(
    height: int, width: int, size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The resized (height, width) and the crop's (top, left) in it, as torchvision's
    Resize(shorter side) + CenterCrop place them. Where the crop is larger than the
    resized image, CenterCrop pads it with zeros: the anchor is minus that padding."""
    short, long = sorted((height, width))
    new_short, new_long = min(size), int(min(size) * long / short)
    resized = (new_long, new_short) if width <= height else (new_short, new_long)
    top, left = (_anchor(new, crop) for new, crop in zip(resized, size, strict=True))
    return resized, (top, left)


def _anchor(resized: int, crop: int) -> int:
    return round((resized - crop) / 2) if resized >= crop else -((crop - resized) // 2)


def axis_window(length: int, resized: int, offset: int, out: int) -> tuple[int, int]:
    """The input range [start, stop) that positions offset..offset+out of an axis
    resized from `length` to `resized` read: each position weighs the inputs within
    two (stretched) kernel units of its centre. A position more on each side, for
    rounding."""
    scale = length / resized
    support = 2 * max(scale, 1.0)
    first, last = max(offset, 0), min(offset + out, resized) - 1
    start = math.floor(scale * (first + 0.5) - support - 0.5) - 1
    stop = math.ceil(scale * (last + 0.5) + support - 0.5) + 2
    return max(start, 0), min(stop, length)


class AxisPlace(NamedTuple):
    """One axis of an image in a chunk: its length, its resized length, the crop's
    offset in that, and the window [start, stop) of input the crop reads."""

    length: int
    resized: int
    offset: int
    start: int
    stop: int


@lru_cache(maxsize=1 << 14)  # 8 MB when full
def placement(height: int, width: int, size: tuple[int, int]) -> tuple[AxisPlace, AxisPlace]:
    """Where an image goes in a chunk: its rows, then its columns.

    Kept by image size: 12 us of a GPU actor's one host thread per image here, and
    web images come in a few common sizes (0.2 us when the size was seen before).
    """
    resized, anchor = crop_geometry(height, width, size)
    rows, columns = (
        AxisPlace(length, new, offset, *axis_window(length, new, offset, out))
        for length, new, offset, out in zip((height, width), resized, anchor, size, strict=True)
    )
    return rows, columns


def window_shape(place: tuple[AxisPlace, AxisPlace]) -> tuple[int, int]:
    """(rows, columns) of the input window a `placement` reads."""
    rows, columns = place
    return rows.stop - rows.start, columns.stop - columns.start


def chunk_shape(places: list[tuple[AxisPlace, AxisPlace]]) -> tuple[int, int]:
    """(rows, columns) that hold every window of `places`: their tallest and their widest."""
    tall, wide = (max(dims) for dims in zip(*map(window_shape, places), strict=True))
    return tall, wide


def size_chunks(
    shapes: list[tuple[int, int]], *, most: int, pixels: int = CHUNK_PIXELS
) -> list[list[int]]:
    """Indices of `shapes` in chunks of similar sizes (by longer side): at most `most`
    each, and no more padded pixels than `pixels`, unless one image alone has more."""
    order = sorted(range(len(shapes)), key=lambda i: max(shapes[i]))
    chunks: list[list[int]] = []
    tall = wide = 0
    for index in order:
        height, width = shapes[index]
        grown = max(tall, height) * max(wide, width) * (len(chunks[-1]) + 1) if chunks else 0
        if not chunks or len(chunks[-1]) == most or grown > pixels:
            chunks.append([])
            tall = wide = 0
        chunks[-1].append(index)
        tall, wide = max(tall, height), max(wide, width)
    return chunks


def cubic(x: Any) -> Any:
    """The bicubic convolution kernel torch's antialiased resize weighs with (zero from 2 on)."""
    import torch

    a, x = CUBIC_A, x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def band_span(length: int, resized: int) -> int:
    """The inputs a band of `BAND` neighbouring outputs reads, at most, on an axis
    resized from `length` to `resized` (a few more, for rounding)."""
    scale = length / resized
    return math.ceil(scale * (BAND - 1) + 4 * max(scale, 1.0)) + 4


def band_weights(
    length: Any, resized: Any, offset: Any, start: Any, stop: Any, *, out: int, span: int
) -> tuple[Any, Any]:
    """Each image's weights for its axis window [start, stop) of `length` to `out`
    positions of its `resized` axis from `offset` on, a band of `BAND` positions at a
    time; the five are (images, 1, 1, 1) float tensors.

    Returns the weights, (images, bands, span, BAND), and where each band's `span`
    inputs begin in the window, (images, bands). The weights of an output position
    are the kernel at input centres, stretched by the scale when shrinking (the
    antialias), normalised to sum to one; positions outside the resized axis (the
    crop's padding) get none, so they come out zero.
    """
    import torch

    device, bands = length.device, -(-out // BAND)
    scale = length / resized
    stretch = scale.clamp(min=1.0)
    first = offset + BAND * torch.arange(bands, device=device).view(1, -1, 1, 1)
    begin = torch.floor(scale * (first + 0.5) - 2 * stretch - 0.5) - 1 - start
    begin = begin.clamp(min=0).minimum(stop - start - span).clamp(min=0)
    source = start + begin + torch.arange(span, device=device).view(1, 1, -1, 1)
    position = first + torch.arange(BAND, device=device).view(1, 1, 1, -1)
    weights = cubic((source + 0.5 - scale * (position + 0.5)) / stretch)
    weights = weights * ((source < stop) & (position >= 0) & (position < resized))
    total = weights.sum(2, keepdim=True)
    return weights / torch.where(total == 0, 1.0, total), begin[:, :, 0, 0].long()


def to_device(tensor: Any, device: Any) -> Any:
    """`tensor` on `device`, without waiting for the device.

    A plain copy from host memory to a GPU waits for everything queued on the
    stream first; from pinned memory it is queued behind that work instead.
    """
    import torch

    target = torch.device(device)
    if tensor.device == target:
        return tensor
    if tensor.device.type != "cpu" or target.type != "cuda":
        return tensor.to(target)
    return tensor.pin_memory().to(target, non_blocking=True)


def host_to_device(values: list[Any], device: Any, dtype: Any = None) -> Any:
    """Host values as a tensor (float32 unless `dtype`) on `device`: see `to_device`."""
    import torch

    return to_device(torch.tensor(values, dtype=dtype or torch.float32), device)


def windows(
    images: list[Any], places: list[tuple[AxisPlace, AxisPlace]], tall: int, wide: int
) -> Any:
    """Each image's window, (n, 3, tall, wide) uint8, by one gather for the whole chunk.

    A copy per image into a padded chunk costs a few indexing calls and a kernel
    launch each from Python: host work that grows with the images, on the actor
    whose host work bounded the GPU job. Here the images go end to end into one
    flat buffer, and each row of the chunk is `wide` bytes of it from where that
    row of the window begins. Past a window's right and bottom edges the chunk holds
    whatever lies there (the image's own pixels, or the next image's): the band
    weights are zero past each window's end, so it is never counted.
    """
    import torch

    device = images[0].device
    rows_of, offset = [], 0
    for image, (rows, columns) in zip(images, places, strict=True):
        line = [rows.start, rows.stop - rows.start, columns.length, offset + columns.start]
        rows_of.append([*line, rows.length * columns.length])
        offset += image.numel()
    first, height, width, begin, plane = host_to_device(rows_of, device, torch.long).T
    # A row past a window's bottom edge repeats its last one: every read stays in bounds.
    row = torch.arange(tall, device=device).view(1, -1).minimum(height.view(-1, 1) - 1)
    line = (first.view(-1, 1) + row) * width.view(-1, 1) + begin.view(-1, 1)  # (n, tall)
    channel = torch.arange(3, device=device).view(1, 3, 1) * plane.view(-1, 1, 1)
    row_starts = line.view(-1, 1, tall) + channel
    flat = torch.cat([image.reshape(-1) for image in images] + [images[0].new_zeros(wide)])
    return flat.unfold(0, wide, 1)[row_starts]


def resize_crop(
    images: list[Any], size: tuple[int, int], places: list[tuple[AxisPlace, AxisPlace]]
) -> Any:
    """uint8 CHW tensors on one device to one unrounded float (n, 3, *size) batch.

    `places` are the images' `placement`s. Each pass is a batched product per band
    of `BAND` outputs with just the inputs that band reads: a dense product with
    each whole window would spend most of its arithmetic on zero weights. Nothing
    here waits for the device, and the ops launched do not grow with the images
    (`windows`).
    """
    import torch

    count, device = len(images), images[0].device
    # Both axes' weights in one call (half the kernels), so with one span, which the
    # chunk is at least as tall and wide as: what a band reads past a window counts zero.
    # A span longer than every window reads them whole: that is as far as it need go.
    tall, wide = chunk_shape(places)
    spans = (band_span(axis.length, axis.resized) for place in places for axis in place)
    span = min(max(spans), max(tall, wide))
    tall, wide = max(tall, span), max(wide, span)
    axes = [rows for rows, _ in places] + [columns for _, columns in places]
    table = host_to_device(axes, device).T.reshape(5, 2 * count, 1, 1, 1)
    weights, starts = band_weights(*table, out=max(size), span=span)
    (vertical, horizontal), (top, left) = weights.split(count), starts.split(count)
    pixels = windows(images, places, tall, wide).float().view(count, 3 * tall, wide)
    every = torch.arange(count, device=device).view(-1, 1)
    # Columns first: per band, (3*tall, span) @ (span, BAND), rounded to 8 bits
    # before the second pass as PIL does (and torch's uint8 kernel after it): on
    # sharp edges, the first pass's overshoot is clipped before the second.
    bands = pixels.unfold(2, span, 1)[every, :, left]  # (n, bands, 3*tall, span)
    narrow = torch.matmul(bands, horizontal).clamp_(0, 255).round_()
    narrow = narrow.view(count, -1, 3, tall, BAND).permute(0, 3, 2, 1, 4)
    narrow = narrow.reshape(count, tall, 3, -1)[..., : size[1]].reshape(count, tall, -1)
    # Then rows: per band, (BAND, span) @ (span, 3*w).
    bands = narrow.unfold(1, span, 1)[every, top]  # (n, bands, 3*w, span)
    out = torch.matmul(vertical.transpose(2, 3), bands.transpose(2, 3))
    out = out.reshape(count, -1, 3, size[1])[:, : size[0]]
    return out.permute(0, 2, 1, 3)
