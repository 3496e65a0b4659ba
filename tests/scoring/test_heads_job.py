"""Heads and concepts in the scoring pass and afterwards from stored embeddings, on a real
local Ray, checked against plain torch and open_clip's own zero-shot recipe."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.config import parse_config
from pipeline.models.loader import open_clip
from pipeline.run import run
from tests.builders import TINY, config_data, write_dataset
from tests.models.test_heads import aesthetic_v1, aesthetic_v2
from tests.scoring.test_scoring_job import embeddings, reference_scores

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

WATERMARK = {
    "name": "watermark",
    "prompts": ["a photo with a watermark", "a logo over a photo"],
    "against": ["a photo", "a clean photo"],
}


def saved(module: nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def plain(module: nn.Module, vectors: np.ndarray, activation: str = "none") -> np.ndarray:
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(np.asarray(vectors, np.float32)))[:, 0]
    return (torch.sigmoid(out) if activation == "sigmoid" else out).numpy()


def zero_shot(checkpoint, images: np.ndarray, concept: dict) -> np.ndarray:
    """open_clip's README recipe: normalised features, softmax of the scaled similarities
    (at the model's own logit scale), here summed over the concept's prompts."""
    model, _, _ = open_clip().create_model_and_transforms(TINY, pretrained=str(checkpoint))
    tokenizer = open_clip().get_tokenizer(TINY)
    with torch.no_grad():
        text = model.encode_text(tokenizer([*concept["prompts"], *concept["against"]]))
        text /= text.norm(dim=-1, keepdim=True)
        probs = (model.logit_scale.exp() * torch.from_numpy(images) @ text.T).softmax(dim=-1)
    return probs[:, : len(concept["prompts"])].sum(-1).numpy()


@pytest.fixture()
def heads(tmp_path):
    torch.manual_seed(7)
    modules = {
        "aesthetic": aesthetic_v2(32),
        "punsafe": aesthetic_v1(32),
        "sharp": aesthetic_v1(32),
    }
    entries = {
        "aesthetic": {
            "name": "aesthetic",
            "weights": saved(modules["aesthetic"], tmp_path / "a.safetensors"),
        },
        "punsafe": {
            "name": "punsafe",
            "weights": saved(modules["punsafe"], tmp_path / "p.safetensors"),
            "activation": "sigmoid",
        },
        "sharp": {
            "name": "sharp",
            "input": "text",
            "weights": saved(modules["sharp"], tmp_path / "s.safetensors"),
        },
    }
    return modules, entries


def test_heads_and_a_concept_in_the_pass_match_plain_torch_and_open_clip(
    tmp_path, tiny_checkpoint, heads
):
    modules, entries = heads
    (path,) = write_dataset(tmp_path / "in", shards=1, rows=12)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["heads"] = [entries["aesthetic"], entries["punsafe"]]
    data["concepts"] = [WATERMARK]
    assert run(parse_config(data)).failed == []
    scored = pq.read_table(tmp_path / "out" / "scored" / path.name)
    source = pq.read_table(path)
    _, image, _ = reference_scores(
        tiny_checkpoint, source["jpg"].to_pylist(), source["caption"].to_pylist()
    )
    np.testing.assert_allclose(embeddings(scored, "clip_image_embedding"), image, atol=1e-4)
    for name in ("aesthetic", "punsafe"):
        assert scored.schema.field(name).type == "float"
        expected = plain(modules[name], image, entries[name].get("activation", "none"))
        np.testing.assert_allclose(scored[name].to_numpy(), expected, rtol=1e-4, atol=1e-5)
    watermark = scored["watermark"].to_numpy()
    np.testing.assert_allclose(watermark, zero_shot(tiny_checkpoint, image, WATERMARK), atol=1e-5)
    assert ((watermark > 0) & (watermark < 1)).all()
    # The filtered output carries the new columns too.
    filtered = pq.read_table(tmp_path / "out" / "filtered" / path.name)
    assert {"aesthetic", "punsafe", "watermark"} <= set(filtered.column_names)


def test_filter_adds_a_head_from_stored_embeddings_once_and_filters_on_it(
    tmp_path, tiny_checkpoint, heads
):
    modules, entries = heads
    shards = write_dataset(tmp_path / "in", shards=2, rows=10)
    half = {"embedding_dtype": "float16"}
    # One output gets the heads in the scoring pass ...
    in_pass = config_data(tmp_path / "in", tmp_path / "a", tiny_checkpoint, output=half)
    in_pass["heads"] = [entries["aesthetic"], entries["sharp"]]
    in_pass["concepts"] = [WATERMARK]
    assert run(parse_config(in_pass)).failed == []
    # ... the other is scored without them, and `winnow filter` adds them afterwards.
    later = config_data(tmp_path / "in", tmp_path / "b", tiny_checkpoint, output=half)
    assert run(parse_config(later)).failed == []
    later["heads"], later["concepts"] = in_pass["heads"], in_pass["concepts"]
    later["filters"] = [{"type": "score_threshold", "column": "aesthetic", "min": 0.0}]
    assert run(parse_config(later), score=False).failed == []
    for path in shards:
        a = pq.read_table(tmp_path / "a" / "scored" / path.name)
        b = pq.read_table(tmp_path / "b" / "scored" / path.name)
        assert b.num_rows == a.num_rows and b["key"].equals(a["key"])
        for name in ("aesthetic", "sharp", "watermark"):
            # In the pass from float32 embeddings, afterwards from the stored float16 ones.
            np.testing.assert_allclose(b[name].to_numpy(), a[name].to_numpy(), atol=2e-3)
        text = embeddings(b, "clip_text_embedding").astype(np.float32)
        np.testing.assert_allclose(b["sharp"].to_numpy(), plain(modules["sharp"], text), atol=1e-5)
        kept = pq.read_table(tmp_path / "b" / "filtered" / path.name)
        assert kept["key"].to_pylist() == [
            k
            for k, v in zip(b["key"].to_pylist(), b["aesthetic"].to_pylist(), strict=True)
            if v >= 0
        ]
        record = json.loads((tmp_path / "b" / "stats" / f"{path.stem}.json").read_text())
        assert set(record["columns"]) == {"aesthetic", "sharp", "watermark"}
    # A third run finds them there and computes nothing again.
    scored = tmp_path / "b" / "scored" / shards[0].name
    before = scored.stat().st_mtime_ns
    assert run(parse_config(later), score=False).failed == []
    assert scored.stat().st_mtime_ns == before
