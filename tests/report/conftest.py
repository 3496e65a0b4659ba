from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.run import run
from pipeline.synth.dataset import SynthSpec, write_synthetic
from tests.builders import DEMO_CHECKPOINT


@pytest.fixture(scope="package")
def demo_run(tmp_path_factory, local_ray) -> Path:
    """A demo-sized run (generated noisy shards, the demo model, a threshold, a head and a
    concept) to look at."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("demo-run")
    write_synthetic(str(root / "in"), SynthSpec(shards=3, rows_per_shard=60, seed=99))
    torch.manual_seed(0)
    head = torch.nn.Linear(128, 1)  # the demo model's width; LAION's v1 layout
    save_file(
        {k: v.contiguous() for k, v in head.state_dict().items()}, str(root / "head.safetensors")
    )
    config = parse_config(
        {
            "input": {"path": str(root / "in")},
            "output": {"path": str(root / "out")},
            "models": [{"name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT)}],
            "filters": [{"type": "score_threshold", "value": 0.7}],
            "heads": [{"name": "aesthetic", "weights": str(root / "head.safetensors")}],
            "concepts": [{"name": "red", "prompts": ["a red shape"], "against": ["a shape"]}],
        }
    )
    result = run(config)
    assert result.failed == []
    return root / "out"
