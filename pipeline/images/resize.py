"""Resize (shorter side) + centre crop for a whole chunk of images at once, as matrix products.

A GPU actor that resizes image by image launches a few kernels per image from
Python: host work that grows with the images, and the actor's host work per image
is what bounded the GPU job when it was measured. torch's antialiased bicubic
resize is separable: each output row is a weighted sum of input rows, each
output column one of input columns, with PIL's weights. Written as matrices
(one per image and axis, zero outside the image and the crop), a chunk of
differently sized images, zero-padded to its largest, is resized and cropped by
two batched matrix products and a few elementwise ops, whatever the number of
images; rounded to 8 bits between the passes, as PIL does, its values are PIL's
within a grey level or two. The padding costs arithmetic, which a GPU has to
spare; chunks of similar sizes keep it small.
"""

from __future__ import annotations

from typing import Any

# PIL's and torch's bicubic coefficient for antialiased resizing.
CUBIC_A = -0.5
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


def axis_weights(length: Any, resized: Any, offset: Any, *, out: int, padded: int) -> Any:
    """(images, out, padded) weights taking each image's axis (`length`, zero-padded to
    `padded`) to `out` positions of its `resized` axis from `offset` on; the three are
    (images, 1, 1) float tensors.

    The weights of output position i are the kernel at input centres, stretched by
    the scale when shrinking (the antialias), normalised to sum to one; positions
    outside the resized axis (the crop's padding) get none, so they come out zero.
    """
    import torch

    position = torch.arange(out, device=length.device).view(1, -1, 1) + offset
    source = torch.arange(padded, device=length.device).view(1, 1, -1)
    scale = length / resized
    stretch = scale.clamp(min=1.0)
    weights = cubic((source + 0.5 - scale * (position + 0.5)) / stretch)
    weights = weights * ((source < length) & (position >= 0) & (position < resized))
    total = weights.sum(-1, keepdim=True)
    return weights / torch.where(total == 0, 1.0, total)


def to_device(tensor: Any, device: Any) -> Any:
    """`tensor` on `device`, without waiting for the device.

    A plain copy from host memory to a GPU waits for everything queued on the
    stream first; from pinned memory it is queued behind that work instead.
    """
    import torch

    target = torch.device(device)
    if tensor.device.type != "cpu" or target.type != "cuda":
        return tensor.to(target)
    return tensor.pin_memory().to(target, non_blocking=True)


def host_to_device(values: list[Any], device: Any, dtype: Any = None) -> Any:
    """Host values as a tensor (float32 unless `dtype`) on `device`: see `to_device`."""
    import torch

    return to_device(torch.tensor(values, dtype=dtype or torch.float32), device)


def geometry_table(shapes: list[tuple[int, int]], size: tuple[int, int], device: Any) -> Any:
    """A (6, images) float tensor on `device`, a row per field: each image's height and
    width, resized height and width, and the crop's top and left in the resized image."""
    rows = []
    for height, width in shapes:
        (new_height, new_width), (top, left) = crop_geometry(height, width, size)
        rows.append((height, width, new_height, new_width, top, left))
    return host_to_device(rows, device).T


def resize_crop(images: list[Any], size: tuple[int, int], table: Any) -> Any:
    """uint8 CHW tensors on one device to one unrounded float (n, 3, *size) batch.

    `table` is the images' `geometry_table`. Nothing here waits for the device:
    padding is a copy per image into one zeroed chunk (torch's nested tensors copy
    their size metadata to the GPU with a blocking copy).
    """
    import torch

    count, device = len(images), images[0].device
    tall = max(image.shape[-2] for image in images)
    wide = max(image.shape[-1] for image in images)
    height, width, new_height, new_width, top, left = table.reshape(6, count, 1, 1)
    vertical = axis_weights(height, new_height, top, out=size[0], padded=tall)
    horizontal = axis_weights(width, new_width, left, out=size[1], padded=wide)
    pixels = torch.zeros((count, 3, tall, wide), device=device)
    for index, image in enumerate(images):
        pixels[index, :, : image.shape[-2], : image.shape[-1]] = image
    # Columns first: (n, 3*tall, wide) @ (n, wide, w) -> (n, 3, tall, w), rounded to
    # 8 bits between the passes as PIL does (and torch's uint8 kernel after it): on
    # sharp edges, the first pass's overshoot is clipped before the second.
    narrow = torch.bmm(pixels.view(count, 3 * tall, wide), horizontal.transpose(1, 2))
    narrow = narrow.clamp_(0, 255).round_()
    narrow = narrow.view(count, 3, tall, size[1]).transpose(1, 2).reshape(count, tall, -1)
    # Then rows: (n, h, tall) @ (n, tall, 3*w) -> (n, h, 3, w) -> (n, 3, h, w).
    out = torch.bmm(vertical, narrow).view(count, size[0], 3, size[1])
    return out.permute(0, 2, 1, 3)
