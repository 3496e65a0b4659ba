"""An output takes shards from the models that scored it, and no others."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError
from pipeline.io.identity import check_scored_models
from pipeline.io.layout import OutputLayout

CLIP = {
    "alias": "clip",
    "name": "ViT-B-32",
    "pretrained": "/a/w.safetensors",
    "checkpoint_sha256": "ab",
}


def test_the_same_checkpoint_elsewhere_is_the_same_model_and_another_is_not(tmp_path):
    layout = OutputLayout(root=str(tmp_path), storage_options={})
    records = {"00000": {"models": [CLIP]}}
    moved = {**CLIP, "pretrained": "/b/w.safetensors"}  # copied to another path: same hash
    check_scored_models([moved], records, layout)
    for other in ({**CLIP, "checkpoint_sha256": "cd"}, {**CLIP, "alias": "b32"}):
        with pytest.raises(ConfigError, match="holds shards scored by clip: ViT-B-32"):
            check_scored_models([other], records, layout)
    with pytest.raises(ConfigError, match="shard 00000"):  # a model added to the config
        check_scored_models([CLIP, {**CLIP, "alias": "b32"}], records, layout)


def test_records_from_before_they_named_models_are_judged_by_a_scored_file(tmp_path):
    layout = OutputLayout(root=str(tmp_path), storage_options={})
    (tmp_path / "scored").mkdir()
    metadata = {b"winnow": json.dumps({"models": [CLIP]}).encode()}
    pq.write_table(
        pa.table({"key": ["0"]}).replace_schema_metadata(metadata),
        tmp_path / "scored" / "00000.parquet",
    )
    records = {"00000": {"shard": "00000"}}
    check_scored_models([CLIP], records, layout)
    with pytest.raises(ConfigError, match="this config's models are b32"):
        check_scored_models([{**CLIP, "alias": "b32"}], records, layout)
