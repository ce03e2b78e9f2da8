"""Validation metrics: fake is the positive class for AUC/AP."""

from __future__ import annotations

import math

import numpy as np

from fakedet.evaluation.metrics import detection_metrics


def test_perfect_separation_gives_auc_and_ap_of_one() -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    labels = np.array([1.0, 1.0, 0.0, 0.0])
    metrics = detection_metrics(scores, labels)
    assert metrics["auc"] == 1.0 and metrics["ap"] == 1.0 and metrics["accuracy"] == 1.0


def test_inverted_scores_give_auc_zero_and_per_class_accuracy() -> None:
    scores = np.array([0.1, 0.2, 0.9, 0.6])
    labels = np.array([1.0, 1.0, 0.0, 0.0])
    metrics = detection_metrics(scores, labels)
    assert metrics["auc"] == 0.0
    assert metrics["real_acc"] == 0.0 and metrics["fake_acc"] == 0.0


def test_one_class_gives_nan_auc_not_an_error() -> None:
    metrics = detection_metrics(np.array([0.3, 0.7]), np.array([1.0, 1.0]))
    assert math.isnan(metrics["auc"]) and metrics["real_acc"] == 0.5
