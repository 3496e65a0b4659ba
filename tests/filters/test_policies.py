"""Each row policy on tiny tables with known answers, ties and empty input included."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import ConfigError, parse_config
from pipeline.filters.apply import evaluate
from pipeline.filters.curate import build_policies
from pipeline.filters.score_top_fraction import TopFractionPolicy
from pipeline.schema import IMAGE_BYTES
from tests.builders import jpeg


def policy(spec: dict, *, heads: list[dict] | None = None):
    config = parse_config(
        {
            "input": {"path": "x"},
            "output": {"path": "y"},
            "models": [{"name": "ViT-B-32"}],
            "filters": [spec],
            "heads": heads or [],
        }
    )
    return next(p for p in build_policies(config) if p.spec.type == spec["type"])


def kept(p, table: pa.Table) -> list[bool]:
    return p.decide(table).keep.tolist()


def test_status_keeps_ok_by_default_and_what_allow_lists():
    table = pa.table(
        {
            "winnow_status": ["ok", "decode_error", "upstream_failed", "missing_caption"],
            "winnow_error": [None, "bad bytes", "HTTP 404", "caption is null"],
        }
    )
    verdict = policy({"type": "status"}).decide(table)
    assert verdict.keep.tolist() == [True, False, False, False]
    assert verdict.reasons[1] == "status decode_error: bad bytes"
    relaxed = policy({"type": "status", "allow": ["ok", "missing_caption"]})
    assert kept(relaxed, table) == [True, False, False, True]


def test_status_policy_is_first_unless_placed():
    config = parse_config(
        {
            "input": {"path": "x"},
            "output": {"path": "y"},
            "models": [{"name": "ViT-B-32"}],
            "filters": [{"type": "caption", "min_words": 2}],
        }
    )
    assert [p.name for p in build_policies(config)] == ["status", "caption"]


def test_caption_bounds_are_inclusive():
    table = pa.table({"caption": ["one two three", "one two", "a", None, "x" * 21, "  six  "]})
    p = policy({"type": "caption", "min_words": 3})
    assert kept(p, table) == [True, False, False, False, False, False]
    p = policy({"type": "caption", "min_chars": 3, "max_chars": 20})
    assert kept(p, table) == [True, True, False, False, False, True]
    assert p.decide(table).reasons[4] == "21 characters > max_chars 20"


def test_score_threshold_keeps_ties_and_rejects_missing_scores():
    # Scores are stored as float32: a stored 0.28 ties with the threshold 0.28 and is kept.
    table = pa.table({"clip_score": pa.array([0.28, 0.2799, 0.5, None], pa.float32())})
    p = policy({"type": "score_threshold", "value": 0.28})
    assert kept(p, table) == [True, False, True, False]
    assert p.decide(table).reasons[3] == "no score"


def test_score_threshold_cuts_any_score_column_between_min_and_max():
    table = pa.table(
        {
            "aesthetic": pa.array([5.0, 4.99, 7.0, None], pa.float32()),
            "punsafe": pa.array([0.1, 0.1, 0.5, 0.2], pa.float32()),
        }
    )
    heads = [
        {"name": "aesthetic", "weights": "a.pth"},
        {"name": "punsafe", "weights": "p.safetensors"},
    ]
    aesthetic = policy({"type": "score_threshold", "column": "aesthetic", "min": 5}, heads=heads)
    assert aesthetic.name == "score_threshold:aesthetic"
    assert kept(aesthetic, table) == [True, False, True, False]
    assert aesthetic.decide(table).reasons[1:4:2] == ["aesthetic 4.9900 < 5.0", "no aesthetic"]
    safe = policy({"type": "score_threshold", "column": "punsafe", "max": 0.5}, heads=heads)
    assert kept(safe, table) == [True, True, False, True]
    assert safe.decide(table).reasons[2] == "punsafe 0.5000 >= max 0.5"
    band = policy(
        {"type": "score_threshold", "column": "aesthetic", "min": 5, "max": 6}, heads=heads
    )
    assert kept(band, table) == [True, False, False, False]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"column": "aesthetic", "min": 5}, "'aesthetic' is not a score column of this config"),
        ({"alias": "clip"}, "a score_threshold needs value, min or max"),
        ({"value": 0.3, "min": 0.2}, "give value or min, not both"),
    ],
)
def test_score_threshold_refuses_what_it_cannot_cut_on(spec, message):
    with pytest.raises(ConfigError, match=message):
        policy({"type": "score_threshold", **spec})


def test_caption_words_keeps_captions_naming_an_imagenet_class():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    assert "goldfish" in IMAGENET_CLASSNAMES and "great white shark" in IMAGENET_CLASSNAMES
    captions = [
        "A Goldfish in a bowl",
        "then we left",  # "hen" is a class, inside another word it does not count
        "a great white shark!",
        "a great shark",
        None,
    ]
    p = policy({"type": "caption_words", "word_list": "imagenet1k"})
    assert kept(p, pa.table({"caption": captions})) == [True, False, True, False, False]
    assert p.decide(pa.table({"caption": ["nothing here"]})).reasons == [
        f"names none of the {len(set(IMAGENET_CLASSNAMES))} listed words"
    ]
    own = policy({"type": "caption_words", "words": ["Red Car"]})
    assert kept(own, pa.table({"caption": ["a red car", "a red bike"]})) == [True, False]


def test_top_fraction_decides_from_its_fitted_threshold_ties_included():
    p = policy({"type": "score_top_fraction", "fraction": 0.5})
    assert isinstance(p, TopFractionPolicy)
    p.threshold = 0.3
    table = pa.table({"clip_score": pa.array([0.3, 0.31, 0.29, None], pa.float32())})
    assert kept(p, table) == [True, True, False, False]


def test_image_size_prefers_original_sizes_and_falls_back_to_the_header():
    table = pa.table(
        {
            "original_width": [300, 100, 900, None],
            "original_height": [200, 400, 200, None],
            IMAGE_BYTES: [None, None, None, jpeg(1, (40, 30))],
        }
    )
    p = policy({"type": "image_size", "min_side": 150, "max_aspect_ratio": 3.0})
    verdict = p.decide(table)
    assert verdict.keep.tolist() == [True, False, False, False]
    assert verdict.reasons[2] == "aspect ratio 4.50 > 3.0"
    assert verdict.reasons[3] == "shorter side 30 < min_side 150"


def test_image_size_without_any_size_is_rejected_with_a_reason():
    table = pa.table({IMAGE_BYTES: pa.array([b"not an image"], pa.binary())})
    verdict = policy({"type": "image_size", "min_side": 1}).decide(table)
    assert verdict.reasons == ["image size unknown"]


def test_language_detects_offline():
    table = pa.table(
        {
            "caption": [
                "a red circle on a grey background in the morning",
                "ein roter Kreis auf einem grauen Hintergrund am Morgen",
                "",
            ]
        }
    )
    verdict = policy({"type": "language", "languages": ["en"]}).decide(table)
    assert verdict.keep.tolist() == [True, False, False]
    assert verdict.reasons[1] == "language de"
    assert kept(policy({"type": "language", "languages": ["de", "en"]}), table)[:2] == [True, True]


@pytest.mark.parametrize("rows", [0, 3])
def test_evaluate_records_the_first_failing_policy(rows):
    config = parse_config(
        {
            "input": {"path": "x"},
            "output": {"path": "y"},
            "models": [{"name": "ViT-B-32"}],
            "filters": [
                {"type": "caption", "min_words": 2},
                {"type": "score_threshold", "value": 0.5},
            ],
        }
    )
    table = pa.table(
        {
            "winnow_status": ["ok", "ok", "decode_error"][:rows],
            "winnow_error": [None, None, "x"][:rows],
            "caption": ["two words", "one", "two words"][:rows],
            "clip_score": pa.array([0.6, 0.9, None][:rows], pa.float32()),
        }
    )
    keep, by, reasons = evaluate(table, build_policies(config))
    assert keep.tolist() == [True, False, False][:rows]
    assert by == [None, "caption", "status"][:rows]
    assert reasons[:rows] == [None, "1 word(s) < min_words 2", "status decode_error: x"][:rows]
