from __future__ import annotations

import json
import subprocess
import sys

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
