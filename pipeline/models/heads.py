"""Heads and concepts: one float32 column each, from an alias's L2-normalised embeddings.

A head is a stack of linear layers read from a state dict. The stack comes from
the keys and shapes alone, so the published layouts load as they are: LAION's
aesthetic predictor v1 (`weight`, `bias`: one linear layer) and the improved
predictor (`layers.0`, `.2`, `.4`, `.6`, `.7`: 768-1024-128-64-16-1; its dropouts
act only in training and it has no activations). A concept is CLIP's zero-shot
softmax over its prompts and their opposites, summed over the prompts. One code
path computes both, in torch float32: in the model actor on its device, on the
embeddings it has just made, and afterwards on the CPU from the stored ones, so
the two agree to the stored embeddings' precision.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.config_sections import ColumnConfig, ConceptConfig, HeadConfig
from pipeline.models.encoder import Encoder, encoder_for
from pipeline.models.weights_file import (
    WeightsFileError,
    check_weights_file,
    file_sha256,
    local_copy,
)


class HeadError(ValueError):
    """Why a head's weights cannot make a head, in one line."""


@dataclass(frozen=True, kw_only=True)
class Layer:
    name: str
    weight: Any  # a float32 tensor (outputs, inputs)
    bias: Any  # a float32 tensor (outputs,), or None


class ColumnScorer(ABC):
    """What heads and concepts share: a column from one alias's embeddings of one tower,
    computed by torch where the embeddings are (the actor's device; the CPU afterwards)."""

    def __init__(self, *, name: str, alias: str, tower: str) -> None:
        self.name, self.alias, self.tower = name, alias, tower

    @abstractmethod
    def to(self, device: str) -> ColumnScorer:
        """Its tensors moved to `device`; returns itself."""

    @abstractmethod
    def __call__(self, embeddings: Any) -> Any:
        """float32 values, one per row of `embeddings` (a float32 tensor on its device,
        rows L2-normalised)."""

    def values(self, embeddings: np.ndarray) -> np.ndarray:
        """The same on the CPU, from stored embeddings (float16 or float32)."""
        import torch

        with torch.inference_mode():
            return self(torch.from_numpy(np.asarray(embeddings, np.float32))).numpy()


def _activate(values: Any, kind: str) -> Any:
    import torch

    if kind == "relu":
        return torch.relu(values)
    if kind == "sigmoid":
        return torch.sigmoid(values)
    if kind == "softmax":
        return torch.softmax(values, dim=-1)
    return values


class Head(ColumnScorer):
    def __init__(self, *, config: HeadConfig, layers: list[Layer]) -> None:
        super().__init__(name=config.name, alias=config.alias, tower=config.input)
        self.config, self.layers = config, layers

    @property
    def width(self) -> int:
        """The embedding width the first layer takes."""
        return int(self.layers[0].weight.shape[1])

    def to(self, device: str) -> Head:
        self.layers = [
            Layer(
                name=layer.name,
                weight=layer.weight.to(device),
                bias=None if layer.bias is None else layer.bias.to(device),
            )
            for layer in self.layers
        ]
        return self

    def __call__(self, embeddings: Any) -> Any:
        import torch.nn.functional as F

        values = embeddings
        for index, layer in enumerate(self.layers):
            values = F.linear(values, layer.weight, layer.bias)
            if index < len(self.layers) - 1:
                values = _activate(values, self.config.hidden_activation)
        return _activate(values, self.config.activation)[:, self.config.output]


class Concept(ColumnScorer):
    def __init__(self, *, config: ConceptConfig, texts: np.ndarray, scale: float) -> None:
        """`texts`: the normalised embeddings of the prompts, then of `against`."""
        super().__init__(name=config.name, alias=config.alias, tower="image")
        self.prompts, self.texts, self.scale = len(config.prompts), texts, scale
        self.to("cpu")

    def to(self, device: str) -> Concept:
        import torch

        self.tensor = torch.from_numpy(self.texts).to(device)
        return self

    def __call__(self, embeddings: Any) -> Any:
        import torch

        logits = self.scale * embeddings @ self.tensor.T
        return torch.softmax(logits, dim=-1)[:, : self.prompts].sum(dim=-1)


def placed(values: np.ndarray, rows: np.ndarray, num_rows: int) -> pa.Array:
    """A float32 column over `num_rows` rows from the values of `rows` (the rows that have
    an embedding); null elsewhere."""
    column = np.zeros(num_rows, np.float32)
    valid = np.zeros(num_rows, bool)
    column[rows] = values
    valid[rows] = True
    return pa.array(column, pa.float32(), mask=~valid)


def concept_texts(
    encoder: Encoder, config: ConceptConfig, *, model: ModelConfig, device: str
) -> tuple[np.ndarray, float]:
    """A concept's texts through the alias's own text tower, once: their normalised
    embeddings and the model's logit scale."""
    import torch
    import torch.nn.functional as F

    family = encoder_for(model)
    tokenize = family.tokenizer(family.tokenizer_key(model))
    tokens = torch.from_numpy(tokenize([*config.prompts, *config.against]).astype(np.int64))
    with torch.inference_mode():
        vectors = F.normalize(encoder.encode_texts(tokens.to(device)).float(), dim=-1)
    return vectors.cpu().numpy(), encoder.logit_scale()


def column_scorers(
    *,
    heads: list[HeadConfig],
    concepts: list[ConceptConfig],
    encoders: list[Encoder],
    models: list[ModelConfig],
    device: str,
) -> list[ColumnScorer]:
    """The heads and concepts of a model actor, beside the encoders it has loaded."""
    by_alias = {m.alias: (e, m) for e, m in zip(encoders, models, strict=True)}
    scorers: list[ColumnScorer] = [load_head(head) for head in heads]
    for concept in concepts:
        encoder, model = by_alias[concept.alias]
        texts, scale = concept_texts(encoder, concept, model=model, device=device)
        scorers.append(Concept(config=concept, texts=texts, scale=scale))
    return [scorer.to(device) for scorer in scorers]


def read_state_dict(weights: str) -> dict[str, Any]:
    """A head's tensors in float32 on the CPU, from safetensors or a weights-only torch
    file; nothing in the file runs (`weights_file`)."""
    import torch

    path = local_copy(weights)
    if not Path(path).is_file():
        raise HeadError("no such file")
    check_weights_file(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state: Any = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and set(state) == {"state_dict"}:
        state = state["state_dict"]  # as Lightning and some trainers save them
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise HeadError("it holds no state dict of tensors (a whole pickled model is refused)")
    return {str(k): v.detach().float() for k, v in state.items()}


def _order(prefix: str) -> list[Any]:
    """Natural order of layer names: layers.2 before layers.10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.]", prefix)]


def layer_stack(state: dict[str, Any]) -> list[Layer]:
    """The linear layers a state dict holds, in order, each taking the one before's outputs."""
    weights: dict[str, Any] = {}
    biases: dict[str, Any] = {}
    for key, value in state.items():
        prefix, _, kind = key.rpartition(".")
        if kind not in ("weight", "bias") and key not in ("weight", "bias"):
            raise HeadError(
                f"key {key!r} is not a linear layer's weight or bias: a head is linear "
                "layers (an MLP of them)"
            )
        (weights if (kind or key) == "weight" else biases)[prefix] = value
    if not weights:
        raise HeadError("it holds no layer weights")
    layers = []
    for prefix in sorted(weights, key=_order):
        weight, bias, name = weights[prefix], biases.pop(prefix, None), prefix or "the layer"
        if weight.ndim != 2:
            raise HeadError(f"{name}'s weight has shape {list(weight.shape)}, not 2-D")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise HeadError(
                f"{name}'s bias has shape {list(bias.shape)} for {weight.shape[0]} outputs"
            )
        if layers and layers[-1].weight.shape[0] != weight.shape[1]:
            raise HeadError(
                f"{name} takes {weight.shape[1]} inputs, but {layers[-1].name} gives "
                f"{layers[-1].weight.shape[0]}"
            )
        layers.append(Layer(name=name, weight=weight, bias=bias))
    if biases:
        raise HeadError(f"bias {sorted(biases)[0]!r} has no weight beside it")
    return layers


def load_head(config: HeadConfig) -> Head:
    try:
        head = Head(config=config, layers=layer_stack(read_state_dict(config.weights)))
    except WeightsFileError as error:
        raise HeadError(str(error)) from None
    outputs = head.layers[-1].weight.shape[0]
    if config.output >= outputs:
        raise HeadError(f"output {config.output} asked for, but its last layer has {outputs}")
    return head


def column_digest(entry: ColumnConfig, model: dict[str, Any]) -> str:
    """What a column's values depend on: the entry (a head's weights by their hash, not
    their path) and the model that made the embeddings (`describe`'s record of it)."""
    made_by = [model["alias"], model["name"], model.get("checkpoint_sha256") or model["pretrained"]]
    data = {"entry": entry.model_dump(exclude={"name", "weights"}), "model": made_by}
    if isinstance(entry, HeadConfig):
        data["weights_sha256"] = file_sha256(local_copy(entry.weights))
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
