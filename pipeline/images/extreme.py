"""Thin images, whose resized whole would be huge: resized to just their centre crop.

A model's preprocess resizes the shorter side to its size, then crops the centre. A
line of 1 x 65,535 pixels is a PNG of a few hundred bytes, under any pixel limit, yet
resized to a 224 px shorter side it is 224 x 14.7 M pixels (10 GB) before the crop
keeps 224 x 224: one such row would take down a CPU actor. Past `MOST_RESIZED` times
the crop's pixels, the crop's own source box is resized instead, which holds nothing
larger than the crop. PIL then resamples in another order of its two passes, so these
rows can land a few grey levels off the whole-image resize; no usual photo comes near
the bound (an aspect ratio of 64 to 1).
"""

from __future__ import annotations

from typing import Any

from pipeline.images.resize import crop_geometry

# Resized pixels, in crops' worth, past which a thin image is resized by its crop's box.
MOST_RESIZED = 64


def resized_too_large(height: int, width: int, size: tuple[int, int]) -> bool:
    """Whether resizing the whole image to the crop's shorter side makes it over the bound
    (and covers the crop: where CenterCrop pads, the box would leave the image)."""
    (new_height, new_width), _ = crop_geometry(height, width, size)
    covers = new_height >= size[0] and new_width >= size[1]
    return covers and new_height * new_width > MOST_RESIZED * size[0] * size[1]


def crop_box_resize(image: Any, size: tuple[int, int]) -> Any:
    """An RGB PIL image resized (bicubic) and centre-cropped to `size` in one resize of the
    source box the crop reads, as Resize(shorter side) + CenterCrop place it."""
    from PIL import Image

    width, height = image.size
    (new_height, new_width), (top, left) = crop_geometry(height, width, size)
    across, down = width / new_width, height / new_height
    box = (left * across, top * down, (left + size[1]) * across, (top + size[0]) * down)
    return image.resize((size[1], size[0]), Image.Resampling.BICUBIC, box=box)
