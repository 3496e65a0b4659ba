"""open_clip's models behind the encoder interface: a name plus a tag, a checkpoint file,
or an hf-hub id (`loader`), tokenized with CLIP's own BPE where open_clip would use it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from pipeline.config import ModelConfig
from pipeline.images.extreme import ThinCrop
from pipeline.images.tensor import TensorPreprocess
from pipeline.models import loader
from pipeline.models.encoder import Encoder
from pipeline.models.tokenizer import plain_clip_bpe


@cache
def _tokenizer(name: str) -> Callable[[list[str]], np.ndarray]:
    """CLIP's own BPE without torch where open_clip would use it; else open_clip's."""
    plain = plain_clip_bpe(name)
    if plain is not None:
        return plain
    tokenizer = loader.get_tokenizer(name)
    return lambda texts: tokenizer(texts).numpy().astype(np.int32)


class OpenClipEncoder(Encoder):
    def __init__(self, *, alias: str, dim: int, dtype: Any, model: Any, preprocess: Any) -> None:
        super().__init__(alias=alias, dim=dim, dtype=dtype)
        self.model, self.preprocess = model, preprocess

    @classmethod
    def check(cls, config: ModelConfig, *, name_key: str, pretrained_key: str) -> list[str]:
        return loader.check_model(config, name_key=name_key, pretrained_key=pretrained_key)

    @classmethod
    def describe(cls, config: ModelConfig) -> dict[str, Any]:
        return loader.describe(config)

    @classmethod
    def width(cls, config: ModelConfig) -> int:
        return loader.embedding_dim(config)

    @classmethod
    def tokenizer_key(cls, config: ModelConfig) -> str:
        return loader.tokenizer_name(config)

    @classmethod
    def tokenizer(cls, key: str) -> Callable[[list[str]], np.ndarray]:
        return _tokenizer(key)

    @classmethod
    def load(cls, config: ModelConfig, *, device: str) -> OpenClipEncoder:
        loaded = loader.load_model(config, device=device)
        return cls(
            alias=loaded.alias,
            dim=loaded.dim,
            dtype=loaded.dtype,
            model=loaded.model,
            preprocess=loaded.preprocess,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.model.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def pil_preprocess(self) -> Callable[[Any], Any]:
        return self.preprocess

    def preprocess_key(self) -> Any:
        return repr(self.preprocess)

    def tensor_preprocess(self) -> TensorPreprocess | None:
        return TensorPreprocess.of(self.model)

    def thin_crop(self) -> ThinCrop | None:
        return ThinCrop.of(self.model)

    def encode_images(self, pixels: Any) -> Any:
        return self.model.encode_image(pixels)

    def encode_texts(self, tokens: Any) -> Any:
        return self.model.encode_text(tokens)

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())
