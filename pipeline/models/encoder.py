"""The one interface a model family implements: everything a run needs of a model.

The driver checks, describes and sizes a model through it before any work,
without loading it; the read tasks tokenize captions through it; the scoring
actor loads one encoder per model and asks it for image preprocessing (PIL,
and a tensor path where the family has one) and for both towers' embeddings.
open_clip is the first family (`open_clip_encoder`). A new family is one file
in this package with an `Encoder` subclass that claims the configs it handles
(`handles`); families added later are asked first, open_clip last.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from pipeline.config import ModelConfig


def resolve_precision(precision: str, device: str) -> str:
    """`auto`: bf16 on a GPU, fp32 on the CPU."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


class Encoder(ABC):
    FAMILIES: ClassVar[list[type[Encoder]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Encoder.FAMILIES.insert(0, cls)

    def __init__(self, *, alias: str, dim: int, dtype: Any) -> None:
        self.alias, self.dim, self.dtype = alias, dim, dtype

    @classmethod
    def handles(cls, config: ModelConfig) -> bool:
        """Whether this family loads `config`'s model."""
        return True

    # The driver's side: nothing is loaded.
    @classmethod
    @abstractmethod
    def check(cls, config: ModelConfig, *, name_key: str, pretrained_key: str) -> list[str]:
        """Refuse a model that cannot load (ConfigError naming the keys); return warnings."""

    @classmethod
    @abstractmethod
    def describe(cls, config: ModelConfig) -> dict[str, Any]:
        """What the output's metadata records: enough to reproduce the scores."""

    @classmethod
    @abstractmethod
    def width(cls, config: ModelConfig) -> int:
        """The embedding width."""

    # The read tasks' side: token ids, without loading the model.
    @classmethod
    @abstractmethod
    def tokenizer_key(cls, config: ModelConfig) -> str:
        """Models with the same key share their token ids."""

    @classmethod
    @abstractmethod
    def tokenizer(cls, key: str) -> Callable[[list[str]], np.ndarray]:
        """Captions to int32 token ids, one row each."""

    # The actor's side.
    @classmethod
    @abstractmethod
    def load(cls, config: ModelConfig, *, device: str) -> Encoder: ...

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """The (height, width) of the pixels `encode_images` takes."""

    @abstractmethod
    def pil_preprocess(self) -> Callable[[Any], Any]:
        """A PIL image to a CHW float tensor."""

    @abstractmethod
    def preprocess_key(self) -> Any:
        """Encoders whose keys are equal preprocess alike and share their pixels."""

    @abstractmethod
    def tensor_preprocess(self) -> Any:
        """The same preprocess as tensor ops (`images.tensor.TensorPreprocess`), or None."""

    @abstractmethod
    def thin_crop(self) -> Any:
        """The crop a thin PIL image is resized to first (`images.extreme.ThinCrop`), or None."""

    @abstractmethod
    def encode_images(self, pixels: Any) -> Any:
        """Image embeddings (not yet normalised) of a batch of pixels on the device."""

    @abstractmethod
    def encode_texts(self, tokens: Any) -> Any:
        """Text embeddings (not yet normalised) of a batch of token ids on the device."""

    @abstractmethod
    def logit_scale(self) -> float:
        """What zero-shot classification multiplies cosine similarities by (CLIP's 100)."""


def encoder_for(config: ModelConfig) -> type[Encoder]:
    """The family that loads `config`'s model."""
    for family in Encoder.FAMILIES:
        if family.handles(config):
            return family
    raise LookupError(f"no model family loads {config.name!r}")
