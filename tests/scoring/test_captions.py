from __future__ import annotations

import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.schema import CAPTION, CAPTION_ERROR, CAPTION_STATUS, tokens_column
from pipeline.scoring.captions import check_caption, tokenize, tokenize_stage
from pipeline.status import RowStatus
from tests.builders import TINY


def test_caption_checks():
    assert check_caption(b"a red cube") == ("a red cube", RowStatus.OK, None)
    assert check_caption(None)[1] is RowStatus.MISSING_CAPTION
    assert check_caption(b"")[1] is RowStatus.EMPTY_CAPTION
    assert check_caption(b"  \n\t ")[1] is RowStatus.EMPTY_CAPTION
    _, status, error = check_caption(b"caf\xe9 \xff")
    assert status is RowStatus.INVALID_CAPTION and "UTF-8" in error
    assert check_caption("日本語のキャプション".encode())[1] is RowStatus.OK


def test_long_caption_is_truncated_by_the_tokenizer_not_refused():
    huge = "word " * 200_000
    text, status, _ = check_caption(huge.encode())
    assert status is RowStatus.OK
    ids = tokenize([text], ModelConfig(name=TINY))
    assert ids.shape == (1, 77)
    assert ids[0, -1] != 0  # filled to the end, EOT included by truncation


def test_tokenize_stage_adds_tokens_and_status_per_model():
    table = pa.table({CAPTION: pa.array([b"a cat", None, b"", b"\xff"], pa.large_binary())})
    models = [ModelConfig(alias="a", name=TINY), ModelConfig(alias="b", name=TINY)]
    out = tokenize_stage(table, models=models)
    assert CAPTION not in out.column_names
    assert out[CAPTION_STATUS].to_pylist() == [
        "ok",
        "missing_caption",
        "empty_caption",
        "invalid_caption",
    ]
    assert out[CAPTION_ERROR].to_pylist()[0] is None
    assert out[tokens_column("a")].type.list_size == 77
    assert out[tokens_column("a")].equals(out[tokens_column("b")])
