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
    """As published: safetensors, or a plain state dict for torch.load."""
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    torch.save(state, path) if path.suffix == ".pth" else save_file(state, str(path))
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


@pytest.fixture(scope="module")
def in_pass(tmp_path_factory, tiny_checkpoint, local_ray):
    """Two shards scored with three heads (v2 and v1 layouts, image and text) and a concept
    in the pass, float16 embeddings stored: the modules, the config data, the output."""
    root = tmp_path_factory.mktemp("heads")
    torch.manual_seed(7)
    modules = {
        "aesthetic": aesthetic_v2(32),
        "punsafe": aesthetic_v1(32),
        "sharp": aesthetic_v1(32),
    }
    heads = [
        {"name": "aesthetic", "weights": saved(modules["aesthetic"], root / "a.safetensors")},
        {
            "name": "punsafe",
            "weights": saved(modules["punsafe"], root / "p.safetensors"),
            "activation": "sigmoid",
        },
        {"name": "sharp", "input": "text", "weights": saved(modules["sharp"], root / "s.pth")},
    ]
    write_dataset(root / "in", shards=2, rows=10)
    data = config_data(
        root / "in", root / "a", tiny_checkpoint, output={"embedding_dtype": "float16"}
    )
    data["heads"], data["concepts"] = heads, [WATERMARK]
    assert run(parse_config(data)).failed == []
    return modules, data, root


def test_heads_and_a_concept_in_the_pass_match_plain_torch_and_open_clip(in_pass, tiny_checkpoint):
    modules, _, root = in_pass
    activations = {"punsafe": "sigmoid"}
    for path in sorted((root / "in").glob("*.parquet")):
        scored = pq.read_table(root / "a" / "scored" / path.name)
        source = pq.read_table(path)
        _, image, text = reference_scores(
            tiny_checkpoint, source["jpg"].to_pylist(), source["caption"].to_pylist()
        )
        np.testing.assert_allclose(embeddings(scored, "clip_image_embedding"), image, atol=1e-3)
        for name, tower in (("aesthetic", image), ("punsafe", image), ("sharp", text)):
            assert scored.schema.field(name).type == "float"
            expected = plain(modules[name], tower, activations.get(name, "none"))
            np.testing.assert_allclose(scored[name].to_numpy(), expected, rtol=1e-4, atol=1e-5)
        watermark = scored["watermark"].to_numpy()
        expected = zero_shot(tiny_checkpoint, image, WATERMARK)
        np.testing.assert_allclose(watermark, expected, atol=1e-5)
        assert ((watermark > 0) & (watermark < 1)).all()
        # The filtered output carries the new columns too.
        filtered = pq.read_table(root / "a" / "filtered" / path.name)
        assert {"aesthetic", "punsafe", "sharp", "watermark"} <= set(filtered.column_names)


def test_filter_adds_heads_from_stored_embeddings_once_and_filters_on_them(
    in_pass, tiny_checkpoint
):
    modules, in_pass_data, root = in_pass
    # Scored without heads; `winnow filter` adds them afterwards and filters on one.
    later = config_data(
        root / "in", root / "b", tiny_checkpoint, output={"embedding_dtype": "float16"}
    )
    assert run(parse_config(later)).failed == []
    later["heads"], later["concepts"] = in_pass_data["heads"], in_pass_data["concepts"]
    later["filters"] = [{"type": "score_threshold", "column": "aesthetic", "min": 0.0}]
    assert run(parse_config(later), score=False).failed == []
    added = {"aesthetic", "punsafe", "sharp", "watermark"}
    shards = sorted((root / "in").glob("*.parquet"))
    for path in shards:
        a = pq.read_table(root / "a" / "scored" / path.name)
        b = pq.read_table(root / "b" / "scored" / path.name)
        assert b.num_rows == a.num_rows and b["key"].equals(a["key"])
        for name in added:
            # In the pass from float32 embeddings, afterwards from the stored float16 ones.
            np.testing.assert_allclose(b[name].to_numpy(), a[name].to_numpy(), atol=2e-3)
        text = embeddings(b, "clip_text_embedding").astype(np.float32)
        np.testing.assert_allclose(b["sharp"].to_numpy(), plain(modules["sharp"], text), atol=1e-5)
        kept = pq.read_table(root / "b" / "filtered" / path.name)
        assert kept["key"].to_pylist() == [
            k
            for k, v in zip(b["key"].to_pylist(), b["aesthetic"].to_pylist(), strict=True)
            if v >= 0
        ]
        record = json.loads((root / "b" / "stats" / f"{path.stem}.json").read_text())
        assert set(record["columns"]) == added
    # A third run finds them there and computes nothing again.
    scored = root / "b" / "scored" / shards[0].name
    before = scored.stat().st_mtime_ns
    assert run(parse_config(later), score=False).failed == []
    assert scored.stat().st_mtime_ns == before
