from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.config import ConfigError, ModelConfig
from pipeline.models.loader import check_model

PEAK_HOST_MEMORY = """
import json, resource
from pipeline.config import ModelConfig
from pipeline.models.loader import load_model, open_clip

open_clip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loaded = load_model(ModelConfig(name="ViT-B-32"), device="meta")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
params = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
print(json.dumps({"grew_kb": after - before, "params_kb": params // 1024,
                  "device": str(next(loaded.model.parameters()).device)}))
"""


def test_a_model_for_another_device_is_never_built_in_host_memory():
    """A GPU actor's model is built on its GPU: the host does not hold (and randomly
    initialise) it first. The meta device stands in for the GPU this machine lacks."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_HOST_MEMORY], capture_output=True, text=True, check=True
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["device"] == "meta"
    assert measured["params_kb"] > 500_000  # ViT-B-32 in fp32: about 600 MB
    assert measured["grew_kb"] < measured["params_kb"] // 10, measured


KEYS = {"name_key": "models.0.name", "pretrained_key": "models.0.pretrained"}


def hub_cache(root, repo: str, file: str) -> None:
    """A Hugging Face cache holding one file of `repo`, laid out as huggingface_hub lays it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / file).write_bytes(b"")


@pytest.mark.parametrize(
    ("pretrained", "repo"),
    [
        ("openai", "timm/vit_base_patch32_clip_224.openai"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ],
    ids=["tag", "hf-hub"],
)
def test_hub_weights_the_actors_could_not_get_are_refused_before_the_run(
    tmp_path, monkeypatch, pretrained, repo
):
    """Offline (as the tests are), weights not in the cache cannot be had: the run says so
    and which key to change, where the actors would each die with a long traceback."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    config = ModelConfig(name="ViT-B-32", pretrained=pretrained)
    with pytest.raises(ConfigError, match=r"models\.0\.pretrained: the weights .* HF_HUB_OFFLINE"):
        check_model(config, **KEYS)
    hub_cache(tmp_path, repo, "open_clip_model.safetensors")  # fetched once, online
    assert check_model(config, **KEYS) == []
