"""The label rule of the training snapshot: a model's probability becomes a 0/1 prediction.

One copy for the component scripts in components/src (evaluate_model.py chooses the threshold
and measures the model with it, fairness.py measures each group with it), imported beside them
as fairness.py is: Azure ML uploads this folder as the component's code, and the local runner
runs the scripts from it.
"""

from __future__ import annotations

import numpy as np


def predicted_labels(probabilities: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """1 when the probability is at least the threshold, else 0 (int64; broadcasts, so a column
    of thresholds labels the same rows at each).

    Mirrors `predicted_labels` in components/serving/src/model_scoring.py, which labels what a
    deployment serves with the threshold chosen here (the model's `test_threshold` tag): on
    Azure the two folders are separate code snapshots and cannot share a module, so
    tests/unit/test_one_place_for_each_fact.py checks the two label alike, boundary included."""
    return (np.asarray(probabilities) >= threshold).astype(np.int64)
