"""The driver's model checks read open_clip's JSON configs without importing it: same answers."""

from __future__ import annotations

import subprocess
import sys

from pipeline.models.architectures import architecture, known_architectures
from pipeline.models.loader import open_clip
from tests.builders import TINY


def test_the_json_configs_are_the_ones_open_clip_knows():
    module = open_clip()
    assert sorted(known_architectures()) == sorted(module.list_models())
    for name in ("ViT-B-32", "ViT-L-14", TINY):
        assert architecture(name) == module.get_model_config(name)
    assert architecture("ViT-Q-99") is None


def test_checking_a_checkpoint_model_does_not_import_open_clip(tiny_checkpoint):
    probe = (
        "import sys\n"
        "from pipeline.config import ModelConfig\n"
        "from pipeline.models.loader import check_model, embedding_dim\n"
        f"model = ModelConfig(alias='clip', name={TINY!r}, pretrained={str(tiny_checkpoint)!r})\n"
        "keys = {'name_key': 'models.0.name', 'pretrained_key': 'models.0.pretrained'}\n"
        "assert check_model(model, **keys) == []\n"
        "print(embedding_dim(model), 'open_clip' in sys.modules, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["32", "False", "False"]
