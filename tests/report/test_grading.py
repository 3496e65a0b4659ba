from __future__ import annotations

import numpy as np
import pytest

from pipeline.report.grading import best_threshold, kept_set_quality, roc_auc


def test_roc_auc_known_values():
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0])) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    # one inversion out of four positive-negative pairs
    assert roc_auc(np.array([0.9, 0.3, 0.4, 0.1]), np.array([1, 1, 0, 0])) == 0.75


def test_unscored_rows_rank_lowest():
    assert roc_auc(np.array([0.2, np.nan, 0.1]), np.array([1, 0, 0])) == 1.0


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError):
        roc_auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_kept_set_quality_and_threshold():
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.2])
    clean = np.array([1, 1, 0, 1, 0])
    assert kept_set_quality(scores >= 0.5, clean) == {
        "kept": 3,
        "precision": 2 / 3,
        "recall": 2 / 3,
    }
    assert best_threshold(scores, clean) == 0.3
