"""Every column name Winnow reads or writes, so that no stage imports another for a name.

Internal columns, prefixed `_winnow_`, travel between a run's stages (read
tasks, model actors, the writer, the filters) and never reach an output file
under that name. Public ones are named from a model alias (`clip_score`) or by
the config (`output.status_column` and the other `output.*_column` keys), and
the output contract promises them. img2dataset's own columns that Winnow reads
when a shard has them are named here as well.
"""

from __future__ import annotations

INTERNAL = "_winnow_"

# A read task's rows (io/reader): where each came from, what the actor needs of it.
SHARD = "_winnow_shard"  # the shard's index in the run
ROW = "_winnow_row"  # the row's index in its shard
IMAGE = "_winnow_image"
CAPTION = "_winnow_caption"
UPSTREAM_OK = "_winnow_upstream_ok"
UPSTREAM_ERROR = "_winnow_upstream_error"

# Caption checks and token ids, made in the read tasks (scoring/captions).
CAPTION_STATUS = "_winnow_caption_status"
CAPTION_ERROR = "_winnow_caption_error"

# Image headers, read in the read tasks (images/headers).
WIDTH = "_winnow_width"
HEIGHT = "_winnow_height"
# The EXIF orientation (1-8) of a JPEG the batched decoder takes; 0 for a row that goes
# to PIL (not a JPEG, CMYK or stored as RGB, lossless or arithmetic-coded, cut off, or
# headers PIL reads otherwise).
BATCH_JPEG = "_winnow_batch_jpeg"
# A progressive JPEG: on a GPU, the decode threads take it (see `check_rows`).
PROGRESSIVE = "_winnow_progressive"

# The model actor's outcome per row; written as `output.status_column` / `error_column`.
STATUS = "_winnow_status"
ERROR = "_winnow_error"

# Filtering: the rows a policy sees (filters/), and the pool it fits on.
SHARD_NAME = "_winnow_shard_name"
IMAGE_BYTES = "_winnow_image_bytes"
CLUSTER = "_winnow_cluster"
BUCKET = "_winnow_bucket"
VISITOR = "_winnow_visitor"  # a row compared in a cluster it lies near, not in
# A dedup's drops on their way to the drop lists: why, and the row each matched (its id,
# shard and row), so that of two reasons for one row the smaller match is kept.
REASON = "_winnow_reason"
MATCH = ("_winnow_match_id", "_winnow_match_shard", "_winnow_match_row")
# The drop lists, OUT/_pool/<policy>/<shard>.parquet: a row of the shard, and why it goes.
DROP_ROW = "row"
DROP_REASON = "reason"

# The report's and notebooks' samples: which shard and row each sampled row is.
SAMPLE_SHARD = "shard"
SAMPLE_ROW = "row"

# img2dataset's columns, read where a shard has them.
ORIGINAL_WIDTH = "original_width"
ORIGINAL_HEIGHT = "original_height"
RESIZED_WIDTH = "width"
RESIZED_HEIGHT = "height"
URL = "url"
SHA256 = "sha256"

TOWERS = ("image", "text")


def tokens_column(alias: str) -> str:
    """A model's token ids, made in the read tasks."""
    return f"{INTERNAL}tokens_{alias}"


def score_column(alias: str) -> str:
    return f"{alias}_score"


def embedding_column(alias: str, tower: str) -> str:
    """`tower`: "image" or "text"."""
    return f"{alias}_{tower}_embedding"


def model_columns(alias: str) -> list[str]:
    """What a model adds to the scored output: its score and both embeddings."""
    return [score_column(alias), *(embedding_column(alias, tower) for tower in TOWERS)]
