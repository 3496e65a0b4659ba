"""Caption checks and tokenization, run in CPU tasks ahead of the model actors.

Tokenizing is as costly as the text tower itself, so it happens here, in
parallel tasks, and only token ids (a few hundred bytes a row) reach the actor.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.models.loader import get_tokenizer, tokenizer_name
from pipeline.models.tokenizer import plain_clip_bpe
from pipeline.schema import CAPTION, CAPTION_ERROR, CAPTION_STATUS, tokens_column
from pipeline.status import RowStatus

# Far more characters than any tokenizer context holds; cutting first keeps
# a megabyte caption from costing a megabyte of BPE work.
MAX_CAPTION_CHARS = 8192


def check_caption(data: bytes | None) -> tuple[str, RowStatus, str | None]:
    if data is None:
        return "", RowStatus.MISSING_CAPTION, "caption is null"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return "", RowStatus.INVALID_CAPTION, f"caption is not valid UTF-8 ({error.reason})"
    if not text.strip():
        return "", RowStatus.EMPTY_CAPTION, "caption is empty"
    return text[:MAX_CAPTION_CHARS], RowStatus.OK, None


@cache
def _tokenizer(name: str) -> Callable[[list[str]], np.ndarray]:
    """CLIP's own BPE without torch where open_clip would use it; else open_clip's."""
    plain = plain_clip_bpe(name)
    if plain is not None:
        return plain
    tokenizer = get_tokenizer(name)
    return lambda texts: tokenizer(texts).numpy().astype(np.int32)


def tokenize(texts: list[str], model_name: str) -> np.ndarray:
    return _tokenizer(model_name)(texts)


def tokenize_stage(table: pa.Table, *, models: list[ModelConfig]) -> pa.Table:
    """Ray Data stage: caption bytes in, per-model token ids and a caption status out."""
    checked = [check_caption(value) for value in table[CAPTION].to_pylist()]
    texts = [text for text, _, _ in checked]
    table = table.drop_columns([CAPTION])
    table = table.append_column(CAPTION_STATUS, pa.array([s.value for _, s, _ in checked]))
    table = table.append_column(CAPTION_ERROR, pa.array([e for _, _, e in checked], pa.string()))
    for name in dict.fromkeys(tokenizer_name(m) for m in models):
        ids = tokenize(texts, name)
        flat = pa.array(ids.reshape(-1), pa.int32())
        column = pa.FixedSizeListArray.from_arrays(flat, ids.shape[1])
        for model in models:
            if tokenizer_name(model) == name:
                table = table.append_column(tokens_column(model.alias), column)
    return table
