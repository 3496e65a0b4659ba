"""JPEG decode and preprocessing on tensors: nvJPEG on the GPU, the same code on the CPU.

On a GPU actor, JPEG bytes are decoded in batches by nvJPEG
(`torchvision.io.decode_jpeg(device="cuda")`) and resized, cropped and
normalised there, following the model's own preprocess config (shorter side to
the model's size, bicubic with antialias, centre crop, mean/std): a chunk of
images at a time as matrix products rounded between their passes as PIL rounds
(`resize`); on the CPU, image by image with torch's uint8 kernel, which is
PIL's math. Bytes that are not JPEG, or
that nvJPEG refuses, go the PIL way row by row, which also gives them their
status. Scores stay within 0.01 of the PIL path; the tests check that on the
CPU, and on a GPU where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.images.extreme import ThinCrop, preprocess_config, resized_too_large
from pipeline.images.resize import (
    crop_geometry,
    host_to_device,
    placement,
    resize_crop,
    size_chunks,
    to_device,
    window_shape,
)

# Images resized and cropped (and stacked into the batch) at once: a chunk bounds the
# memory they hold.
STACK_CHUNK = 64


@dataclass(frozen=True, kw_only=True)
class TensorPreprocess:
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, model: Any) -> TensorPreprocess | None:
        """The model's preprocess as tensor ops, or None when it is not the usual resize+crop."""
        crop = ThinCrop.of(model)  # the same Resize(shorter side) + CenterCrop
        if crop is None or crop.interpolation != "bicubic":
            return None
        config = preprocess_config(model)
        return cls(size=crop.size, mean=tuple(config["mean"]), std=tuple(config["std"]))

    def crop(self, image: Any) -> Any:
        """uint8 CHW of any size to CHW of the model's size, on the image's device.

        torchvision's Resize(shorter side) + CenterCrop geometry, with torch's own
        kernel called directly: torchvision's wrapper costs more than the kernel
        launch. The result is unrounded on a GPU (CUDA has no uint8 bicubic), and for
        a thin image, resized by its crop's window alone (`extreme`); the caller
        rounds the whole batch at once.
        """
        from torch.nn.functional import interpolate
        from torchvision.transforms.v2.functional import center_crop_image

        height, width = self.size
        if resized_too_large(*image.shape[-2:], self.size):  # resized whole, it would not fit
            return resize_crop([image], self.size, [placement(*image.shape[-2:], self.size)])[0]
        new_size, (top, left) = crop_geometry(*image.shape[-2:], self.size)
        if new_size != tuple(image.shape[-2:]):
            pixels = image if image.device.type == "cpu" else image.float()
            image = interpolate(
                pixels[None], size=new_size, mode="bicubic", align_corners=False, antialias=True
            )[0]
        if new_size[0] < height or new_size[1] < width:
            return center_crop_image(image, [height, width])
        return image[:, top : top + height, left : left + width]

    def __call__(self, images: list[Any], device: str, *, batched: bool | None = None) -> Any:
        """uint8 CHW tensors (or RGB PIL images) to one normalised float NCHW batch on `device`.

        On a GPU (or with `batched`), a chunk of images of similar sizes is resized
        and cropped at once (`resize_crop`), so the kernels launched do not grow with
        the images; on the CPU, image by image with torch's uint8 kernel, which is
        exact and cheaper than a chunk's padded matrix products there. Either way a
        chunk bounds the memory held, and rounding, clamping and normalisation run
        once on the whole batch.
        """
        import torch

        height, width = self.size
        target = torch.device(device)
        batched = target.type == "cuda" if batched is None else batched
        batch = torch.empty((len(images), 3, height, width), device=target)
        if batched:
            self._chunked(images, batch)
        else:
            for start in range(0, len(images), STACK_CHUNK):
                chunk = images[start : start + STACK_CHUNK]
                crops = [self.crop(to_device(as_tensor(image), target)) for image in chunk]
                torch.stack(crops, out=batch[start : start + len(chunk)])
        mean = host_to_device(self.mean, target).view(1, 3, 1, 1) * 255
        std = host_to_device(self.std, target).view(1, 3, 1, 1) * 255
        return batch.clamp_(0, 255).round_().sub_(mean).div_(std)

    def _chunked(self, images: list[Any], batch: Any) -> None:
        """Resize and crop `images` into `batch` a chunk of similar windows at a time."""
        import torch

        places = [placement(*_shape(image), self.size) for image in images]
        for rows in size_chunks([window_shape(p) for p in places], most=STACK_CHUNK):
            chunk = [to_device(as_tensor(images[row]), batch.device) for row in rows]
            resized = resize_crop(chunk, self.size, [places[row] for row in rows])
            batch.index_copy_(0, host_to_device(rows, batch.device, torch.long), resized)


def _shape(image: Any) -> tuple[int, int]:
    """(height, width) of a CHW tensor or a PIL image."""
    return tuple(image.shape[-2:]) if hasattr(image, "shape") else image.size[::-1]


def as_tensor(image: Any) -> Any:
    """A uint8 CHW tensor as it is, or an RGB PIL image as one."""
    import torch

    if isinstance(image, torch.Tensor):
        return image
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(image)


def orient(image: Any, orientation: int) -> Any:
    """A CHW tensor as PIL's `exif_transpose` turns the image for its EXIF Orientation."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, (-2, -1))
    return image


def decode_jpegs(encoded: list[Any], device: str) -> list[Any | None]:
    """1-D uint8 CPU tensors of JPEG bytes to uint8 RGB CHW tensors on `device`, as stored
    (no EXIF orientation: nvJPEG has none, so `orient` does it on every device); None
    where decoding failed.

    One bad image fails its whole batch: the halves are retried, so a batch of
    1,024 with one bad image costs about twenty batched calls, not 1,024 single ones.

    On a GPU, nvJPEG writes on a stream of its own into memory it takes from the
    current stream's pool, where a block freed while work queued on that stream
    still reads it (the last batch's resize) can be handed out at once: the
    current stream is waited for first, so nvJPEG never writes over memory in use.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not encoded:
        return []
    if torch.device(device).type == "cuda":
        torch.cuda.current_stream().synchronize()
    options = {"mode": ImageReadMode.RGB, "device": device}
    try:
        return list(decode_jpeg(encoded, **options))
    except RuntimeError:
        if len(encoded) == 1:
            return [None]
        middle = len(encoded) // 2
        return decode_jpegs(encoded[:middle], device) + decode_jpegs(encoded[middle:], device)
