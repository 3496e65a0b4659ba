"""A head added to a scored shard from its stored embeddings alone: no image, no model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.config import parse_config
from pipeline.io.writer import METADATA_KEY
from pipeline.scoring.from_embeddings import add_columns
from tests.builders import config_data


def scored_shard(path, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A scored shard as scoring writes it: float16 embeddings, null where a row has none."""
    vectors = np.random.default_rng(3).normal(size=(rows, width)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    valid = np.arange(rows) % 4 != 1
    flat = pa.array(vectors.astype(np.float16).reshape(-1))
    image = pa.FixedSizeListArray.from_arrays(flat, width, mask=pa.array(~valid))
    table = pa.table({"key": [f"{i:04d}" for i in range(rows)], "clip_image_embedding": image})
    metadata = {METADATA_KEY: json.dumps({"models": [{"alias": "clip"}]}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path, row_group_size=7)
    return vectors, valid


def test_a_head_is_added_from_stored_embeddings_without_images_or_a_model(
    tmp_path, tiny_checkpoint, monkeypatch
):
    import PIL.Image

    import pipeline.models.loader as loader

    def refused(*args, **kwargs):
        raise AssertionError("a head computed afterwards needs no image and no model")

    monkeypatch.setattr(loader, "open_clip", refused)
    monkeypatch.setattr(PIL.Image, "open", refused)
    torch.manual_seed(5)
    module = nn.Linear(32, 1)
    weights = tmp_path / "head.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(weights))
    path = tmp_path / "00000.parquet"
    vectors, valid = scored_shard(path, rows=20, width=32)
    data = config_data(tmp_path / "in", tmp_path, tiny_checkpoint)
    data["heads"] = [{"name": "aesthetic", "weights": str(weights)}]
    add_columns(str(path), parse_config(data), ["aesthetic"], {}, {"aesthetic": "digest"})

    out = pq.ParquetFile(path)
    assert [out.metadata.row_group(i).num_rows for i in range(out.num_row_groups)] == [7, 7, 6]
    table = out.read()
    assert table.column_names == ["key", "clip_image_embedding", "aesthetic"]
    assert table["key"].to_pylist() == [f"{i:04d}" for i in range(20)]
    values = table["aesthetic"]
    assert values.is_valid().to_pylist() == valid.tolist()
    with torch.no_grad():
        expected = module(torch.from_numpy(vectors[valid]))[:, 0].numpy()
    np.testing.assert_allclose(values.drop_null().to_numpy(), expected, atol=2e-3)
    recorded = json.loads(out.schema_arrow.metadata[METADATA_KEY])
    assert recorded == {"models": [{"alias": "clip"}], "columns": {"aesthetic": "digest"}}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
