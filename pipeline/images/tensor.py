"""JPEG decode and preprocessing on tensors: nvJPEG on the GPU, the same code on the CPU.

On a GPU actor, JPEG bytes are decoded in batches by nvJPEG
(`torchvision.io.decode_jpeg(device="cuda")`) and resized, cropped and
normalised there, following the model's own preprocess config (shorter side to
the model's size, bicubic with antialias, centre crop, mean/std). Bytes that
are not JPEG, or that nvJPEG refuses, go the PIL way row by row, which also
gives them their status. Scores stay within 0.01 of the PIL path; the tests
check that on the CPU, and on a GPU where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TensorPreprocess:
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, model: Any) -> TensorPreprocess | None:
        """The model's preprocess as tensor ops, or None when it is not the usual resize+crop."""
        config = getattr(model.visual, "preprocess_cfg", None) or {}
        if (
            config.get("resize_mode", "shortest") != "shortest"
            or config.get("interpolation") != "bicubic"
        ):
            return None
        size = config["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(size=size, mean=tuple(config["mean"]), std=tuple(config["std"]))

    def crop(self, image: Any) -> Any:
        """uint8 CHW of any size to uint8 CHW of the model's size, on the image's device."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        height, width = self.size
        resized = F.resize(
            image, [min(height, width)], interpolation=InterpolationMode.BICUBIC, antialias=True
        )
        return F.center_crop(resized, [height, width])

    def __call__(self, images: list[Any], device: str) -> Any:
        """uint8 CHW tensors (or RGB PIL images) to one normalised float NCHW batch on `device`.

        Resize and crop go image by image; the float conversion and normalisation
        run once on the whole batch, which saves most of the per-image kernels.
        """
        import torch
        from torchvision.transforms.v2.functional import pil_to_tensor

        tensors = [
            image if isinstance(image, torch.Tensor) else pil_to_tensor(image) for image in images
        ]
        batch = torch.stack([self.crop(image.to(device)) for image in tensors])
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return batch.float().div_(255).sub_(mean).div_(std)


def decode_jpegs(data: list[bytes], device: str) -> list[Any | None]:
    """uint8 RGB CHW tensors on `device`, EXIF orientation applied; None where decoding failed."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
    options = {"mode": ImageReadMode.RGB, "device": device, "apply_exif_orientation": True}
    try:
        return list(decode_jpeg(encoded, **options))
    except RuntimeError:
        decoded: list[Any | None] = []
        for one in encoded:
            try:
                decoded.append(decode_jpeg(one, **options))
            except RuntimeError:
                decoded.append(None)
        return decoded
