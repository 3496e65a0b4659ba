"""Read + tokenize tasks get open_clip's token ids without importing torch or open_clip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.models.loader import open_clip
from pipeline.models.tokenizer import ClipBpe, plain_clip_bpe, vocabulary_file
from pipeline.synth.dataset import SynthSpec, generate_rows
from tests.builders import TINY

HARD = [
    "a photo of a cat",
    "A Photo Of A CAT!!!   on\tthe\nmat",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade",
    "\u65e5\u672c\u8a9e\u306e\u30ad\u30e3\u30d7\u30b7\u30e7\u30f3 \u4e2d\u6587 \ud55c\uad6d\uc5b4",
    "emoji \U0001f431\U0001f436 and \u2764\ufe0f hearts",
    "Tom &amp; Jerry &amp;amp; friends &lt;3 &#39;quoted&#39;",
    "mojibake: caf\u00c3\u00a9 \u00e2\u20ac\u0153smart quotes\u00e2\u20ac\u009d",
    "it's, they're, we've, I'm, you'll, he'd -- don't",
    "1234567890 3.14159 1st 2nd 3rd 4th 100% #hashtag @user",
    "<start_of_text> literally <END_OF_TEXT> and <unk>",
    "zzzzzzzzzzzzzzzzzzzzzzzz qqqqq xkcd aaaaaaaa",
    "word " * 500,
    "x",
    "",
]


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-L-14", TINY, "winnow-tiny"])
def test_same_ids_as_open_clips_tokenizer(name):
    captions = HARD + [row["caption"] for row in generate_rows(SynthSpec(rows_per_shard=60), 0)]
    ours = plain_clip_bpe(name)
    assert ours is not None
    reference = open_clip().get_tokenizer(name)(captions).numpy()
    assert ours(captions).dtype == np.int32
    np.testing.assert_array_equal(ours(captions), reference)


def test_remembered_words_stay_bounded_and_change_no_ids():
    """A reader lives for the whole job and web captions bring new words for ever."""
    unbounded = plain_clip_bpe("ViT-B-32")
    bounded = ClipBpe(vocabulary_file(), context_length=77, cached_words=50)
    captions = [f"word{n}x item{n * 7}y <end_of_text>" for n in range(400)]
    np.testing.assert_array_equal(bounded(captions), unbounded(captions))
    assert len(bounded.words) <= 50


def test_other_tokenizers_are_left_to_open_clip():
    assert plain_clip_bpe("ViT-B-16-SigLIP") is None  # SentencePiece, by name
    assert plain_clip_bpe("hf-hub:timm/ViT-B-16-SigLIP") is None  # config on the hub
    assert plain_clip_bpe("not-a-model") is None


def test_reading_and_tokenizing_imports_neither_torch_nor_open_clip(tmp_path):
    script = """
import json, sys
import pyarrow as pa
from pipeline.config import ModelConfig
from pipeline.schema import CAPTION, tokens_column
from pipeline.scoring.captions import tokenize_stage
table = pa.table({CAPTION: pa.array([b"a red cube on a mat"], pa.large_binary())})
out = tokenize_stage(table, models=[ModelConfig(alias="clip", name="ViT-B-32")])
heavy = sorted(m for m in ("torch", "open_clip", "torchvision", "timm") if m in sys.modules)
print(json.dumps({"ids": out[tokens_column("clip")].to_pylist()[0][:8], "heavy": heavy}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout)
    assert result["heavy"] == []
    reference = open_clip().get_tokenizer("ViT-B-32")(["a red cube on a mat"])[0, :8]
    assert result["ids"] == reference.tolist()
