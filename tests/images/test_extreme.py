"""Thin images: a line of pixels resized to the model's shorter side would be gigabytes."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from pipeline.config import parse_config
from pipeline.images.extreme import MOST_RESIZED, ThinCrop, crop_box_resize, resized_too_large
from pipeline.images.resize import crop_geometry
from pipeline.images.tensor import TensorPreprocess
from pipeline.scoring.local import score_table, scorer_for
from pipeline.synth.dataset import IMG2DATASET_SCHEMA
from tests.builders import DEMO_CHECKPOINT, TINY, encode, photo, row
from tests.isolated import run_script

SQUARE = (224, 224)


def test_only_images_whose_resized_whole_passes_the_bound_are_thin():
    assert not resized_too_large(100, 100 * MOST_RESIZED, SQUARE)  # exactly at the bound
    assert resized_too_large(100, 100 * MOST_RESIZED + 2, SQUARE)
    assert resized_too_large(100 * MOST_RESIZED + 2, 100, SQUARE)
    assert not resized_too_large(3000, 4000, SQUARE)
    # A crop wider than the resized image is padded: there the whole is resized as before.
    assert not resized_too_large(100 * MOST_RESIZED * 4, 100, (224, 448))


def model(**preprocess: object) -> SimpleNamespace:
    """What ThinCrop reads of a model: its visual tower's open_clip preprocess config."""
    return SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=preprocess))


def test_thin_crops_follow_the_models_preprocess_config():
    bilinear = ThinCrop.of(model(size=(256, 256), interpolation="bilinear"))
    assert bilinear == ThinCrop(size=(256, 256), interpolation="bilinear")
    assert ThinCrop.of(model(size=224, interpolation="bicubic")).size == SQUARE
    assert ThinCrop.of(model(size=224, resize_mode="squash")) is None  # nothing grows there
    assert ThinCrop.of(model(size=224, interpolation="nearest")) is None
    image = photo(1, (640, 480))
    assert ThinCrop(size=SQUARE, interpolation="bicubic").fit(image) is image
    thin = photo(1, (64, 8000))
    for interpolation in ("bicubic", "bilinear"):
        fitted = ThinCrop(size=SQUARE, interpolation=interpolation).fit(thin)
        assert fitted.tobytes() == crop_box_resize(thin, SQUARE, interpolation).tobytes()


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(90, 9000), (9000, 90), (7, 4000)])
def test_the_crop_box_resize_is_the_centre_crop_of_the_whole_resize(size, interpolation):
    """Within a few grey levels on a photo (PIL orders its two passes differently)."""
    image = photo(3, size)
    width, height = image.size
    (new_height, new_width), (top, left) = crop_geometry(height, width, SQUARE)
    resample = Image.Resampling[interpolation.upper()]
    whole = np.asarray(image.resize((new_width, new_height), resample), np.int16)
    expected = whole[top : top + 224, left : left + 224]
    got = np.asarray(crop_box_resize(image, SQUARE, interpolation), np.int16)
    assert got.shape == expected.shape == (224, 224, 3)
    difference = np.abs(got - expected)
    assert difference.max() <= 4 and difference.mean() < 0.5, (difference.max(), difference.mean())


def _config(decode: str):
    return parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused", "embedding_dtype": "float32"},
            "models": [{"name": TINY, "precision": "fp32"}],
            "images": {"decode": decode},
        }
    )


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_a_thin_photo_scores_as_open_clips_own_preprocess_does(decode):
    """32 x 3,200 (100 to 1): past the bound, so resized by its crop's box."""
    image = photo(5, (3200, 32))
    config = _config(decode)
    torch.manual_seed(0)
    scorer = scorer_for(config)
    table = pa.Table.from_pylist(
        [row("0", encode(image), "a thin banner")], schema=IMG2DATASET_SCHEMA
    )
    out = score_table(table, config, scorer)
    assert out["_winnow_status"].to_pylist() == ["ok"]
    loaded = scorer.models[0]
    assert TensorPreprocess.of(loaded.model).size == (32, 32)
    with torch.inference_mode():
        decoded = Image.open(io.BytesIO(encode(image))).convert("RGB")
        pixels = loaded.preprocess(decoded)[None]
        reference = torch.nn.functional.normalize(loaded.model.encode_image(pixels), dim=-1)
    got = np.asarray(out["clip_image_embedding"].to_pylist()[0], np.float32)
    assert np.abs(got - reference[0].numpy()).max() < 0.01


LINES = """
import io, json, resource, sys
import pyarrow as pa
from PIL import Image
from pipeline.config import parse_config
from pipeline.scoring.local import score_table, scorer_for
from pipeline.synth.dataset import IMG2DATASET_SCHEMA
from tests.builders import encode, jpeg, row

decode, checkpoint = sys.argv[1], sys.argv[2]
config = parse_config({"input": {"path": "unused"}, "output": {"path": "unused"},
    "models": [{"name": "winnow-tiny", "pretrained": checkpoint}], "images": {"decode": decode}})
scorer = scorer_for(config)
def table(rows):
    return pa.Table.from_pylist(rows, schema=IMG2DATASET_SCHEMA)
score_table(table([row("0", jpeg(2), "warm up")]), config, scorer)
lines = [encode(Image.new("RGB", (65535, 1), (200, 40, 40)), "PNG"),
         encode(Image.new("RGB", (1, 65500), (40, 200, 40)), "JPEG")]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = score_table(table([row(str(i), data, "a line") for i, data in enumerate(lines)]), config,
    scorer)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_kb": grew, "status": out["_winnow_status"].to_pylist()}))
"""


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_a_line_of_pixels_is_scored_without_its_resized_whole(decode):
    """1 x 65,535 at the demo model's 64 px is 64 x 4.2 M pixels resized whole (805 MB)."""
    measured = run_script(LINES, decode, str(DEMO_CHECKPOINT))
    assert measured["status"] == ["ok", "ok"]
    assert measured["grew_kb"] < 100 * 1024, measured
