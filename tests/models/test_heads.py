"""Heads from the published state-dict layouts, checked against plain torch on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.config_sections import HeadConfig
from pipeline.models.heads import HeadError, load_head


def aesthetic_v1(width: int) -> nn.Module:
    """LAION's aesthetic predictor v1: one linear layer (keys `weight`, `bias`)."""
    return nn.Linear(width, 1)


def aesthetic_v2(width: int) -> nn.Module:
    """The improved aesthetic predictor as its repository defines it: `layers.N` linears
    768-1024-128-64-16-1, dropout between some of them, no activations."""

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(width, 1024),
                nn.Dropout(0.2),
                nn.Linear(1024, 128),
                nn.Dropout(0.2),
                nn.Linear(128, 64),
                nn.Dropout(0.1),
                nn.Linear(64, 16),
                nn.Linear(16, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    return MLP()


def unit_rows(rows: int, width: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def reference(module: nn.Module, embeddings: np.ndarray, activation: str = "none") -> np.ndarray:
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(embeddings))
    out = torch.sigmoid(out) if activation == "sigmoid" else out
    return out[:, 0].numpy()


def save(module: nn.Module, path, *, torch_format: bool) -> str:
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if torch_format:
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("torch_format", [False, True], ids=["safetensors", "pth"])
@pytest.mark.parametrize(
    ("build", "keys"),
    [
        (aesthetic_v1, {"weight": [1, 768], "bias": [1]}),
        (
            aesthetic_v2,
            {
                "layers.0.weight": [1024, 768],
                "layers.2.weight": [128, 1024],
                "layers.4.weight": [64, 128],
                "layers.6.weight": [16, 64],
                "layers.7.weight": [1, 16],
            },
        ),
    ],
    ids=["aesthetic-v1", "aesthetic-v2"],
)
def test_laion_aesthetic_layouts_load_as_published_and_match_torch(
    tmp_path, build, keys, torch_format
):
    torch.manual_seed(0)
    module = build(768)
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    assert {k: shapes[k] for k in keys} == keys  # the real key names and shapes
    suffix = ".pth" if torch_format else ".safetensors"
    weights = save(module, tmp_path / f"head{suffix}", torch_format=torch_format)
    head = load_head(HeadConfig(name="aesthetic", weights=weights))
    assert head.width == 768
    embeddings = unit_rows(64, 768)
    np.testing.assert_allclose(
        head.values(embeddings), reference(module, embeddings), rtol=1e-5, atol=1e-5
    )
    # Stored fp16 embeddings give the same values to fp16 precision.
    np.testing.assert_allclose(
        head.values(embeddings.astype(np.float16)), reference(module, embeddings), atol=2e-3
    )


def test_activations_and_the_chosen_output_match_torch(tmp_path):
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    weights = save(module, tmp_path / "nsfw.safetensors", torch_format=False)
    embeddings = unit_rows(10, 32)
    with torch.no_grad():
        logits = module(torch.from_numpy(embeddings))
    config = {"name": "punsafe", "weights": weights, "hidden_activation": "relu"}
    sigmoid = load_head(HeadConfig(**config, activation="sigmoid"))
    np.testing.assert_allclose(sigmoid.values(embeddings), torch.sigmoid(logits)[:, 0], rtol=1e-5)
    softmax = load_head(HeadConfig(**config, activation="softmax", output=1))
    np.testing.assert_allclose(softmax.values(embeddings), logits.softmax(-1)[:, 1], rtol=1e-5)
    with pytest.raises(HeadError, match="output 2 asked for, but its last layer has 2"):
        load_head(HeadConfig(**config, output=2))


@pytest.mark.parametrize(
    ("state", "cause"),
    [
        (
            {"layers.0.weight": torch.zeros(8, 32), "layers.2.weight": torch.zeros(1, 9)},
            "layers.2 takes 9 inputs, but layers.0 gives 8",
        ),
        ({"weight": torch.zeros(1, 32), "bias": torch.zeros(2)}, "bias has shape [2] for 1"),
        ({"norm.running_mean": torch.zeros(32)}, "not a linear layer's weight or bias"),
        ({"conv.weight": torch.zeros(4, 3, 3, 3)}, "conv's weight has shape [4, 3, 3, 3]"),
    ],
    ids=["chain", "bias", "batchnorm", "conv"],
)
def test_a_state_dict_that_is_not_a_linear_stack_is_refused_with_its_cause(tmp_path, state, cause):
    path = tmp_path / "head.safetensors"
    save_file(state, str(path))
    with pytest.raises(HeadError, match=cause.replace("[", r"\[").replace("]", r"\]")):
        load_head(HeadConfig(name="bad", weights=str(path)))
