"""Score a table of input rows in this process, through the same stages the Ray job runs.

For small jobs that need scores without a cluster: evaluating a checkpoint,
grading, tests. The stages and the actor class are the job's own.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.config import WinnowConfig
from pipeline.images.headers import header_stage
from pipeline.io.reader import model_inputs
from pipeline.scoring.captions import tokenize_stage
from pipeline.scoring.scorer import ClipScorer


def scorer_for(config: WinnowConfig, *, device: str = "cpu") -> ClipScorer:
    return ClipScorer(
        models=[m.model_dump() for m in config.models],
        images=config.images.model_dump(),
        heads=[head.model_dump() for head in config.heads],
        concepts=[concept.model_dump() for concept in config.concepts],
        embedding_dtype="float32",
        device=device,
    )


def actor_input(table: pa.Table, config: WinnowConfig, *, shard: int = 0) -> pa.Table:
    """Input rows as the model actor receives them: through the read tasks' stages."""
    inputs = model_inputs(table, {"shard": shard, "first_row": 0}, config.input)
    return header_stage(tokenize_stage(inputs, models=config.models))


def score_table(table: pa.Table, config: WinnowConfig, scorer: ClipScorer) -> pa.Table:
    """Model output columns (status, error, scores, embeddings) for `table`'s rows, in order."""
    return scorer(actor_input(table, config))
