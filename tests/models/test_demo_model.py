"""The demo CLIP: training makes the loss fall; the committed checkpoint separates noise."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.models.loader import open_clip
from pipeline.report.grading import roc_auc
from pipeline.scoring.local import score_table, scorer_for
from pipeline.synth.dataset import SynthSpec, generate_rows
from pipeline.synth.train import TrainSpec, build_pool, train
from tests.builders import DEMO_CHECKPOINT, TINY


def test_a_few_training_steps_make_the_loss_fall():
    spec = TrainSpec(model=TINY, steps=60, batch_size=32, learning_rate=3e-3, warmup=5, seed=5)
    _, _, preprocess = open_clip().create_model_and_transforms(TINY)
    pool = build_pool(spec, preprocess, open_clip().get_tokenizer(TINY), size=64, seed=5)
    result = train(spec, pool=pool, log=lambda _: None)
    assert len(result.losses) == 60
    assert np.mean(result.losses[-5:]) < 0.75 * np.mean(result.losses[:5])


@pytest.mark.slow
def test_committed_checkpoint_loads_through_the_user_path_and_separates_noise():
    config = parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [{"name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT)}],
        }
    )
    rows = list(generate_rows(SynthSpec(rows_per_shard=300, noise_fraction=0.5, seed=424242), 0))
    table = pa.Table.from_pylist(rows)
    scores = score_table(table, config, scorer_for(config))["clip_score"]
    values = np.asarray(scores.to_numpy(zero_copy_only=False), np.float64)
    clean = table["gt_clean"].to_numpy(zero_copy_only=False)
    assert roc_auc(values, clean) >= 0.9
    hard = np.asarray(table["gt_noise"].to_pylist()) == "hard_negative"
    assert roc_auc(values[hard | clean], clean[hard | clean]) >= 0.85
