"""A batch of large images is decoded a part at a time: memory stays bounded, scores do not move.

A batch decoded at once holds every image at full size until it is preprocessed
(on a GPU actor, in GPU memory): 1,024 twelve-megapixel photos are 37 GB.
"""

from __future__ import annotations

from threading import current_thread

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.scoring.checks import pixel_parts
from pipeline.scoring.local import actor_input, score_table, scorer_for
from pipeline.synth.dataset import IMG2DATASET_SCHEMA
from tests.builders import TINY, bomb_png, encode, jpeg, photo, row
from tests.images.devices import DEVICES
from tests.isolated import run_script

# The same rows scored with a budget that holds the batch and one of a few images.
WHOLE, SMALL = 2**40, 3 * 400 * 300


@pytest.mark.parametrize(
    ("pixels", "budget", "parts"),
    [
        ([5, 5, 5, 5], 10, [(0, 2), (2, 4)]),
        ([5, 5, 5], 12, [(0, 2), (2, 3)]),
        ([3, 20, 3, 3], 10, [(0, 1), (1, 2), (2, 4)]),  # over the budget: alone
        ([20, 20], 10, [(0, 1), (1, 2)]),
        ([0, 0, 7, 0, 0], 7, [(0, 5)]),  # rows without an image cost nothing
        ([4, 4, 4], 100, [(0, 3)]),
        ([], 10, [(0, 0)]),
    ],
)
def test_parts_cover_every_row_once_in_order_within_the_budget(pixels, budget, parts):
    assert pixel_parts(pixels, budget) == parts


def _config(checkpoint, *, decode: str, budget: int, models: int = 1, **images):
    return parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [
                {"alias": f"m{i}", "name": TINY, "pretrained": str(checkpoint), "batch_size": 4}
                for i in range(models)
            ],
            "images": {"decode": decode, "max_decoded_pixels": budget, **images},
        }
    )


def mixed_rows() -> pa.Table:
    """Large and small JPEGs between rows that fail in every way, and a PNG (PIL's way)."""
    cmyk = encode(photo(5, (300, 200)).convert("CMYK"))
    rows = [
        row("0", jpeg(1, (400, 300)), "a large photo"),
        row("1", None, "failed download", status="failed_to_download", error="timeout"),
        row("2", jpeg(2, (64, 48)), "a small photo"),
        row("3", b"\xff\xd8\xff not a jpeg", "corrupt bytes"),
        row("4", jpeg(3, (400, 300)), None),
        row("5", encode(photo(4, (300, 400)), "PNG"), "a large png"),
        row("6", bomb_png(), "a bomb"),
        row("7", cmyk, "a cmyk photo"),
        row("8", jpeg(6, (400, 300)), "another large photo"),
        row("9", jpeg(7, (400, 300))[:-2000], "cut off"),
        row("10", jpeg(8, (400, 300)), "the last large photo"),
    ]
    return pa.Table.from_pylist(rows, schema=IMG2DATASET_SCHEMA)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_a_batch_decoded_in_parts_scores_as_when_decoded_at_once(tiny_checkpoint, decode, device):
    """On a GPU the tensor path's resize chunks differ with the parts (bf16 there, too)."""
    table = mixed_rows()
    out = {}
    for budget in (WHOLE, SMALL):
        config = _config(tiny_checkpoint, decode=decode, budget=budget)
        out[budget] = score_table(table, config, scorer_for(config, device=device))
    whole, parts = out[WHOLE], out[SMALL]
    statuses = whole["_winnow_status"].to_pylist()
    assert statuses.count("ok") == 6, statuses
    assert parts["_winnow_status"].to_pylist() == statuses
    assert parts["_winnow_error"].to_pylist() == whole["_winnow_error"].to_pylist()
    for column in ("m0_score", "m0_image_embedding", "m0_text_embedding"):
        assert parts[column].is_null().to_pylist() == whole[column].is_null().to_pylist()
        np.testing.assert_allclose(
            np.asarray([v for v in parts[column].to_pylist() if v is not None], np.float64),
            np.asarray([v for v in whole[column].to_pylist() if v is not None], np.float64),
            atol=1e-6 if device == "cpu" else 1e-3,
        )


def test_pil_rows_decoded_on_the_threads_configured_score_as_on_one(tiny_checkpoint):
    """`images.decode_threads` sizes the actor's PIL decode pool; rows keep their order."""
    table, out, used = mixed_rows(), {}, {}
    for threads in (1, 3):
        config = _config(tiny_checkpoint, decode="pil", budget=WHOLE, decode_threads=threads)
        scorer = scorer_for(config)
        assert scorer.preparer.decode_threads == threads
        used[threads], preprocess = set(), scorer.preparer._preprocessed

        def traced(image, names=used[threads], preprocess=preprocess):
            names.add(current_thread().name)
            return preprocess(image)

        scorer.preparer._preprocessed = traced
        out[threads] = score_table(table, config, scorer)
    assert used[1] == {"MainThread"}
    assert used[3] and all(name.startswith("decode") for name in used[3]), used[3]
    assert out[3]["_winnow_status"].to_pylist() == out[1]["_winnow_status"].to_pylist()
    assert out[3]["_winnow_status"].to_pylist().count("ok") == 6
    for column in ("m0_score", "m0_image_embedding"):
        assert out[3][column].to_pylist() == out[1][column].to_pylist(), column


def test_tensor_path_makes_pil_rows_tensors_on_the_decode_threads(tiny_checkpoint, monkeypatch):
    """A GPU actor's main thread bounds its job: the rows PIL decodes (a PNG, CMYK, a JPEG
    the batched decoder refuses) become tensors on their decode thread, not there."""
    import torchvision.transforms.v2.functional as F

    real, used = F.pil_to_tensor, []

    def traced(image):
        used.append(current_thread().name)
        return real(image)

    monkeypatch.setattr(F, "pil_to_tensor", traced)
    table, out = mixed_rows(), {}
    for threads in (1, 3):
        used.clear()
        config = _config(tiny_checkpoint, decode="tensor", budget=WHOLE, decode_threads=threads)
        out[threads] = score_table(table, config, scorer_for(config))
        assert len(used) == 2, used  # the PNG and the CMYK photo
        expected = "MainThread" if threads == 1 else "decode"
        assert all(name.startswith(expected) for name in used), used
    assert out[3]["_winnow_status"].to_pylist() == out[1]["_winnow_status"].to_pylist()
    for column in ("m0_score", "m0_image_embedding"):
        assert out[3][column].to_pylist() == out[1][column].to_pylist(), column


def test_models_with_one_preprocess_share_their_pixels_across_parts(tiny_checkpoint):
    config = _config(tiny_checkpoint, decode="pil", budget=SMALL, models=2)
    scorer = scorer_for(config)
    prepared = scorer.prepare(actor_input(mixed_rows(), config))
    assert prepared.pixels[0].shape[0] == len(prepared.checks.image_rows) == 7
    assert prepared.pixels[0] is prepared.pixels[1]


def test_a_block_larger_than_a_batch_is_scored_a_batch_at_a_time(tiny_checkpoint):
    """A CPU actor is handed whole blocks: it holds one batch's pixels at a time, and
    every row's result is the one it gets scored alone."""
    config = _config(tiny_checkpoint, decode="pil", budget=WHOLE)  # batches of 4
    scorer = scorer_for(config)
    prepare, prepared = scorer.prepare, []
    scorer.prepare = lambda table: prepared.append(table.num_rows) or prepare(table)
    table = mixed_rows()
    out = score_table(table, config, scorer)
    assert prepared == [4, 4, 3]
    alone = [score_table(table.slice(i, 1), config, scorer_for(config)) for i in range(len(table))]
    for column in ("_winnow_status", "_winnow_error"):
        assert out[column].to_pylist() == [a[column][0].as_py() for a in alone], column
    scores = [a["m0_score"][0].as_py() for a in alone]
    assert out["m0_score"].is_null().to_pylist() == [s is None for s in scores]
    np.testing.assert_allclose(
        [s for s in out["m0_score"].to_pylist() if s is not None],
        [s for s in scores if s is not None],
        atol=1e-6,
    )


PEAK = """
import json, resource, sys
import pyarrow as pa
from pipeline.config import parse_config
from pipeline.scoring.local import score_table, scorer_for
from pipeline.synth.dataset import IMG2DATASET_SCHEMA
from tests.builders import TINY, jpeg, row

decode, budget, count, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
config = parse_config({"input": {"path": "unused"}, "output": {"path": "unused"},
    "models": [{"name": TINY, "batch_size": count}],
    "images": {"decode": decode, "max_decoded_pixels": budget}})
scorer = scorer_for(config)
def table(rows):
    return pa.Table.from_pylist(rows, schema=IMG2DATASET_SCHEMA)
big = jpeg(1, (side, side * 3 // 4))
score_table(table([row("0", jpeg(2), "warm up")]), config, scorer)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = score_table(table([row(str(i), big, "a photo") for i in range(count)]), config, scorer)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_kb": grew, "ok": out["_winnow_status"].to_pylist().count("ok")}))
"""


@pytest.mark.parametrize(("decode", "photos"), [("pil", 2), ("tensor", 2), ("pil", None)])
def test_a_batch_of_large_photos_holds_at_most_the_budget_decoded(decode, photos):
    """24 photos of 2400x1800 are 311 MB decoded; with a budget of two of them, the
    scoring process's peak memory grows by a fraction of that. The PIL path preprocesses
    each image as it decodes it, so it holds a few at most whatever the budget."""
    count, side = 24, 2400
    decoded_kb = count * side * (side * 3 // 4) * 3 // 1024
    budget = WHOLE if photos is None else photos * side * (side * 3 // 4)
    measured = run_script(PEAK, decode, str(budget), str(count), str(side))
    assert measured["ok"] == count
    assert measured["grew_kb"] < decoded_kb // 3, (measured, decoded_kb)


def test_a_photo_over_the_budget_is_still_scored(tiny_checkpoint):
    config = _config(tiny_checkpoint, decode="pil", budget=1000)
    table = pa.Table.from_pylist(
        [row("0", jpeg(1, (400, 300)), "a large photo"), row("1", jpeg(2), "a small photo")],
        schema=IMG2DATASET_SCHEMA,
    )
    out = score_table(table, config, scorer_for(config))
    assert out["_winnow_status"].to_pylist() == ["ok", "ok"]


@pytest.mark.parametrize("device", DEVICES[1:])
def test_a_gpu_actor_holds_at_most_the_budget_decoded_in_gpu_memory(tiny_checkpoint, device):
    """nvJPEG's output comes from torch's allocator: its peak is the decoded part's."""
    import torch

    count, side = 24, 2400
    decoded = count * side * (side * 3 // 4) * 3
    config = _config(tiny_checkpoint, decode="auto", budget=2 * side * (side * 3 // 4))
    scorer = scorer_for(config, device=device)
    big = jpeg(1, (side, side * 3 // 4))
    table = pa.Table.from_pylist(
        [row(str(i), big, "a photo") for i in range(count)], schema=IMG2DATASET_SCHEMA
    )
    score_table(table[:1], config, scorer)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = score_table(table, config, scorer)
    torch.cuda.synchronize()
    assert out["_winnow_status"].to_pylist() == ["ok"] * count
    assert torch.cuda.max_memory_allocated() - before < decoded // 3
