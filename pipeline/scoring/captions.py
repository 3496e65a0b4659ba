"""Caption checks and tokenization, run in CPU tasks ahead of the model actors.

Tokenizing is as costly as the text tower itself, so it happens here, in
parallel tasks, and only token ids (a few hundred bytes a row) reach the actor.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.models.encoder import encoder_for
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


def tokenize(texts: list[str], model: ModelConfig) -> np.ndarray:
    family = encoder_for(model)
    return family.tokenizer(family.tokenizer_key(model))(texts)


def tokenize_stage(table: pa.Table, *, models: list[ModelConfig]) -> pa.Table:
    """Ray Data stage: caption bytes in, per-model token ids and a caption status out."""
    checked = [check_caption(value) for value in table[CAPTION].to_pylist()]
    texts = [text for text, _, _ in checked]
    table = table.drop_columns([CAPTION])
    table = table.append_column(CAPTION_STATUS, pa.array([s.value for _, s, _ in checked]))
    table = table.append_column(CAPTION_ERROR, pa.array([e for _, _, e in checked], pa.string()))
    # Models whose family and tokenizer are the same share one tokenization.
    groups: dict[tuple[type, str], list[ModelConfig]] = {}
    for model in models:
        family = encoder_for(model)
        groups.setdefault((family, family.tokenizer_key(model)), []).append(model)
    for (family, key), members in groups.items():
        ids = family.tokenizer(key)(texts)
        flat = pa.array(ids.reshape(-1), pa.int32())
        column = pa.FixedSizeListArray.from_arrays(flat, ids.shape[1])
        for model in members:
            table = table.append_column(tokens_column(model.alias), column)
    return table
