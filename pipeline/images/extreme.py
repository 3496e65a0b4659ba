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

from dataclasses import dataclass
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


def preprocess_config(model: Any) -> dict[str, Any]:
    """open_clip's preprocess config of a model (size, mean, std, interpolation, mode)."""
    return getattr(model.visual, "preprocess_cfg", None) or {}


@dataclass(frozen=True, kw_only=True)
class ThinCrop:
    """A model's Resize(shorter side) + CenterCrop, for the PIL images it would not fit."""

    size: tuple[int, int]
    interpolation: str  # "bicubic" or "bilinear", as open_clip's preprocess config says

    @classmethod
    def of(cls, model: Any) -> ThinCrop | None:
        """None where the model's preprocess does not resize the shorter side."""
        config = preprocess_config(model)
        interpolation = config.get("interpolation")
        if config.get("resize_mode", "shortest") != "shortest" or interpolation not in (
            "bicubic",
            "bilinear",
        ):
            return None
        size = config["size"]
        return cls(
            size=(size, size) if isinstance(size, int) else tuple(size), interpolation=interpolation
        )

    def fit(self, image: Any) -> Any:
        """The image as it is, or, if thin, already resized and cropped to the model's size."""
        width, height = image.size
        if not resized_too_large(height, width, self.size):
            return image
        return crop_box_resize(image, self.size, self.interpolation)


def crop_box_resize(image: Any, size: tuple[int, int], interpolation: str = "bicubic") -> Any:
    """An RGB PIL image resized and centre-cropped to `size` in one resize of the source box
    the crop reads, as Resize(shorter side) + CenterCrop place it."""
    from PIL import Image

    width, height = image.size
    (new_height, new_width), (top, left) = crop_geometry(height, width, size)
    across, down = width / new_width, height / new_height
    box = (left * across, top * down, (left + size[1]) * across, (top + size[0]) * down)
    resample = Image.Resampling[interpolation.upper()]
    return image.resize((size[1], size[0]), resample, box=box)
