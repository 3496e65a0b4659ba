from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.builders import TINY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights for the tiny test architecture, saved the way users ship checkpoints."""
    import torch
    from safetensors.torch import save_file

    from pipeline.models.loader import open_clip

    torch.manual_seed(1234)
    model = open_clip().create_model(TINY)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the in-process runs of the whole session (starting it costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
