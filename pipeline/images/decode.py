"""Image bytes to an RGB PIL image, or a per-row status and reason.

Nothing here raises for bad input: corrupt, truncated, empty, non-image and
oversized images each come back as a status the output records. Pixel limits
are checked on the header, before any pixel is allocated.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pipeline.status import RowStatus

# The size check below replaces PIL's own global limit, which warns or raises
# at fixed thresholds; ours is per run and reports a row status instead.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True, slots=True)
class Decoded:
    # An RGB PIL image here; in the scorer also an nvJPEG tensor, or a PIL image's pixels
    # once preprocessed in the same call as its decode.
    image: Any
    status: RowStatus
    error: str | None = None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16- and 32-bit single-channel images down instead of letting convert() clip."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8))
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.max() > 1.0 else 1.0
        return Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8))
    return image


def _header_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) from the header PIL reads; raises what PIL raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as image:
            return image.size


def declared_size(data: bytes | memoryview | None) -> tuple[int, int]:
    """(width, height) from PIL's header, without decoding; (0, 0) where no header reads
    (its decode will fail and say why)."""
    if not data:
        return 0, 0
    try:
        return _header_size(data)
    except Exception:
        return 0, 0


def probe(data: bytes | None, *, max_pixels: int) -> Decoded | None:
    """The failure that ends the row, read from the header alone; None if it may be decoded."""
    if data is None:
        return Decoded(None, RowStatus.MISSING_IMAGE, "image bytes are null")
    if len(data) == 0:
        return Decoded(None, RowStatus.DECODE_ERROR, "image bytes are empty")
    try:
        width, height = _header_size(data)
    except Image.UnidentifiedImageError:
        return Decoded(None, RowStatus.DECODE_ERROR, "not an image (unrecognised format)")
    except Exception as error:
        return Decoded(None, RowStatus.DECODE_ERROR, f"cannot decode image: {error}")
    return over_limit(width, height, max_pixels=max_pixels)


def over_limit(width: int, height: int, *, max_pixels: int) -> Decoded | None:
    """The row's failure when its header declares more pixels than the run allows."""
    if width * height <= max_pixels:
        return None
    message = f"{width}x{height} = {width * height} pixels is over images.max_pixels ({max_pixels})"
    return Decoded(None, RowStatus.IMAGE_TOO_LARGE, message)


def decode_image(data: bytes | None, *, max_pixels: int) -> Decoded:
    failure = probe(data, max_pixels=max_pixels)
    if failure is not None:
        return failure
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_8bit(image)
            if image.mode != "RGB":
                image = image.convert("RGB")
    except Exception as error:  # truncated data, bad headers, codec errors
        return Decoded(None, RowStatus.DECODE_ERROR, f"cannot decode image: {error}")
    return Decoded(image, RowStatus.OK)
