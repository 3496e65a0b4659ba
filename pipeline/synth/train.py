"""Contrastive training of the small demo CLIP on generated scenes.

CLIP's own recipe at toy scale: symmetric InfoNCE with a learnable temperature,
plus one hard-negative caption per image on the text side (as NegCLIP does),
so that the model learns to bind colour to shape rather than to notice either
alone. Images go through the model's own preprocess after a JPEG round trip,
exactly as the scoring job will see them.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from pipeline.synth.scenes import caption, hard_negative, random_scene, render


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    model: str = "winnow-tiny"
    steps: int = 500
    batch_size: int = 256
    pool_size: int = 16384
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 40
    seed: int = 7
    threads: int = 2
    min_side: int = 96
    max_side: int = 192


@dataclass(kw_only=True)
class Pool:
    pixels: Any
    tokens: Any
    negatives: Any


@dataclass(kw_only=True)
class TrainResult:
    model: Any
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def contrastive_loss(image: Any, text: Any, negatives: Any, logit_scale: Any) -> Any:
    """Symmetric InfoNCE; image-to-text also ranks each image's hard-negative captions."""
    import torch
    import torch.nn.functional as F

    labels = torch.arange(image.shape[0], device=image.device)
    scale = logit_scale.exp()
    per_image = scale * image @ torch.cat([text, negatives]).T
    per_text = scale * text @ image.T
    return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


def build_pool(
    spec: TrainSpec, preprocess: Callable, tokenizer: Callable, *, size: int, seed: int
) -> Pool:
    import torch

    rng = np.random.default_rng(seed)
    pixels, texts, negatives = [], [], []
    for _ in range(size):
        scene = random_scene(rng)
        side = int(rng.integers(spec.min_side, spec.max_side + 1))
        buffer = io.BytesIO()
        render(scene, rng, side=side).save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
        pixels.append(preprocess(Image.open(buffer).convert("RGB")))
        texts.append(caption(scene, rng))
        negatives.append(hard_negative(scene, rng)[1])
    return Pool(
        pixels=torch.stack(pixels).to(torch.float16),
        tokens=tokenizer(texts),
        negatives=tokenizer(negatives),
    )


def _learning_rate(spec: TrainSpec, step: int) -> float:
    if step < spec.warmup:
        return spec.learning_rate * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    spec: TrainSpec, *, log: Callable[[str], None] = print, pool: Pool | None = None
) -> TrainResult:
    import torch
    import torch.nn.functional as F

    from pipeline.models.loader import open_clip

    torch.manual_seed(spec.seed)
    torch.set_num_threads(spec.threads)
    model, _, preprocess = open_clip().create_model_and_transforms(spec.model)
    tokenizer = open_clip().get_tokenizer(spec.model)
    started = time.monotonic()
    if pool is None:
        pool = build_pool(spec, preprocess, tokenizer, size=spec.pool_size, seed=spec.seed)
        log(f"generated {spec.pool_size} training pairs in {time.monotonic() - started:.0f}s")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=spec.learning_rate,
    )
    generator = torch.Generator().manual_seed(spec.seed)
    result = TrainResult(model=model)
    model.train()
    for step in range(spec.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(spec, step)
        index = torch.randint(0, pool.pixels.shape[0], (spec.batch_size,), generator=generator)
        image = F.normalize(model.encode_image(pool.pixels[index].float()), dim=-1)
        both = F.normalize(
            model.encode_text(torch.cat([pool.tokens[index], pool.negatives[index]])), dim=-1
        )
        text, negatives = both.split(spec.batch_size)
        loss = contrastive_loss(image, text, negatives, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        result.losses.append(loss.item())
        if step % 50 == 0 or step == spec.steps - 1:
            log(f"step {step:4d}/{spec.steps}  loss {loss.item():.3f}  "
                f"temperature {1 / model.logit_scale.exp().item():.4f}  "
                f"{time.monotonic() - started:.0f}s")  # fmt: skip
    model.eval()
    result.seconds = time.monotonic() - started
    return result


def save_checkpoint(model: Any, path: str) -> None:
    """safetensors in float16: half the size, and loading casts back to the model's precision."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, path, metadata={"format": "pt", "architecture": "winnow-tiny"})
