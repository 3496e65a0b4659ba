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

    def __call__(self, image: Any) -> Any:
        """uint8 CHW (any device) to a normalised float CHW tensor of the model's size."""
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        height, width = self.size
        resized = F.resize(
            image, [min(height, width)], interpolation=InterpolationMode.BICUBIC, antialias=True
        )
        cropped = F.center_crop(resized, [height, width]).float().div_(255).clamp_(0, 1)
        mean = torch.tensor(self.mean, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=image.device).view(3, 1, 1)
        return (cropped - mean) / std


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
