"""open_clip model loading: a name plus an open_clip tag, a checkpoint file, or an hf-hub id.

Every checkpoint goes through open_clip's own loader with weights_only=True
(or safetensors), so loading never executes code from the file. Winnow's own
architectures (the tiny test model) are registered with open_clip here, which
makes them loadable by name exactly like a built-in one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.config import ModelConfig
from pipeline.models.architectures import CONFIG_DIR, architecture
from pipeline.models.encoder import resolve_precision
from pipeline.models.weights_file import (
    WeightsFileError,
    check_weights_file,
    file_sha256,
    is_remote,
    local_copy,
)

HF_HUB = "hf-hub:"
OPEN_CLIP_PRECISION = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


@cache
def open_clip() -> Any:
    import open_clip as module

    module.add_model_config(CONFIG_DIR)
    return module


def model_identifier(config: ModelConfig) -> tuple[str, str | None]:
    """(open_clip model name, pretrained argument) for a model entry."""
    if config.pretrained and config.pretrained.startswith(HF_HUB):
        return config.pretrained, None
    return config.name, config.pretrained


def tokenizer_name(config: ModelConfig) -> str:
    return model_identifier(config)[0]


def get_tokenizer(name: str) -> Any:
    return open_clip().get_tokenizer(name)


def is_checkpoint_path(pretrained: str | None) -> bool:
    return bool(pretrained) and (is_remote(pretrained) or Path(pretrained).is_file())


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    alias: str
    model: Any
    preprocess: Any
    dtype: Any
    dim: int


def describe(config: ModelConfig) -> dict[str, Any]:
    """What the output metadata records about a model: enough to reproduce its scores."""
    name, pretrained = model_identifier(config)
    info: dict[str, Any] = {"alias": config.alias, "name": name, "pretrained": pretrained}
    if pretrained and is_checkpoint_path(pretrained):
        info["checkpoint_sha256"] = file_sha256(local_copy(pretrained))
    return info


def load_model(config: ModelConfig, *, device: str) -> LoadedModel:
    import torch

    name, pretrained = model_identifier(config)
    if pretrained and is_checkpoint_path(pretrained):
        pretrained = local_copy(pretrained)
    precision = resolve_precision(config.precision, device)
    # Built where it runs: open_clip builds every model on the CPU, random init
    # included (seconds and gigabytes of host memory for ViT-L-14), and then moves it;
    # built on the GPU, the init is quick and the host never holds it.
    with torch.device(device):
        model, _, preprocess = open_clip().create_model_and_transforms(
            name,
            pretrained=pretrained,
            precision=OPEN_CLIP_PRECISION[precision],
            device=device,
            weights_only=True,
        )
    model.eval()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    dim = _probe_dim(model, device)
    return LoadedModel(alias=config.alias, model=model, preprocess=preprocess, dtype=dtype, dim=dim)


def _probe_dim(model: Any, device: str) -> int:
    import torch

    with torch.inference_mode():
        probe = torch.zeros((1, model.context_length), dtype=torch.long, device=device)
        return int(model.encode_text(probe).shape[-1])


def _architecture(name: str) -> dict[str, Any] | None:
    """From the JSON configs when they have it; only then from open_clip itself."""
    return architecture(name) or open_clip().get_model_config(name)


def embedding_dim(config: ModelConfig) -> int:
    """The embedding width, from the architecture's config when open_clip has it."""
    name, _ = model_identifier(config)
    known = _architecture(name)
    if known and "embed_dim" in known:
        return int(known["embed_dim"])
    return _probe_dim(open_clip().create_model(name, load_weights=False), "cpu")


def check_model(config: ModelConfig, *, name_key: str, pretrained_key: str) -> list[str]:
    """Refuse a model entry that cannot load, before any work; return warnings worth showing.

    The keys are what the user set them with (a config key, a command-line flag): the
    errors name them."""
    from pipeline.config import ConfigError

    name, pretrained = model_identifier(config)
    if name.startswith(HF_HUB):
        _check_hub_weights(name[len(HF_HUB) :], _weight_files(HUB_WEIGHTS), key=pretrained_key)
        return []
    if _architecture(name) is None:
        close = [m for m in open_clip().list_models() if name.lower()[:5] in m.lower()][:8]
        raise ConfigError(
            f"{name_key}: {name!r} is not an open_clip architecture"
            + (f"; similar: {', '.join(close)}" if close else "; see open_clip.list_models()")
        )
    if pretrained is None:
        return [f"{pretrained_key}: none given, so {name} scores with random weights"]
    if is_remote(pretrained):
        import fsspec

        fs, path = fsspec.core.url_to_fs(pretrained)
        if fs.exists(path):
            return []
    elif Path(pretrained).is_file():
        try:
            check_weights_file(pretrained)
        except WeightsFileError as error:
            raise ConfigError(f"{pretrained_key}: {pretrained} cannot be loaded: {error}") from None
        return []
    module = open_clip()
    if module.is_pretrained_cfg(name, pretrained):
        hub = module.get_pretrained_cfg(name, pretrained).get("hf_hub", "")
        if hub:
            repo, file = os.path.split(hub)
            _check_hub_weights(repo, _weight_files(file or HUB_WEIGHTS), key=pretrained_key)
        return []
    tags = module.list_pretrained_tags_by_model(name)
    raise ConfigError(
        f"{pretrained_key}: {pretrained!r} is neither an existing checkpoint file nor a "
        f"pretrained tag of {name}"
        + (f" (tags: {', '.join(tags)})" if tags else "")
        + "; use a tag, a checkpoint path, or hf-hub:org/repo"
    )


# open_clip's weights in a hub repo, and the safetensors it looks for first.
HUB_WEIGHTS = "open_clip_pytorch_model.bin"
HUB_SAFETENSORS = "open_clip_model.safetensors"


def _weight_files(file: str) -> tuple[str, ...]:
    stem, extension = os.path.splitext(file)
    safe = HUB_SAFETENSORS if file == HUB_WEIGHTS else f"{stem}.safetensors"
    return (file,) if extension == ".safetensors" else (safe, file)


def _check_hub_weights(repo: str, files: tuple[str, ...], *, key: str) -> None:
    """Refuse weights that the actors could neither find in the Hugging Face cache nor
    download, before the run starts them: each would fail with a long traceback."""
    from huggingface_hub import constants, file_exists, try_to_load_from_cache

    from pipeline.config import ConfigError

    if any(isinstance(try_to_load_from_cache(repo, file), str) for file in files):
        return
    offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)()
    where = f"{key}: the weights ({repo}, {' or '.join(files)})"
    if offline:
        raise ConfigError(
            f"{where} are not in the Hugging Face cache, and HF_HUB_OFFLINE forbids "
            "downloading them: fetch them once where there is a network, or give a "
            "checkpoint path"
        )
    try:
        found = any(file_exists(repo, file) for file in files)
    except Exception as error:  # no network, a gated repo without a token
        raise ConfigError(f"{where} cannot be downloaded: {error}") from None
    if not found:
        raise ConfigError(f"{where} are not in that Hugging Face repo")
