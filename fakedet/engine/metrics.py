"""Validation metrics: loss terms, accuracy per class, and AUC/AP with fake as the positive class."""

from __future__ import annotations

import math

import numpy as np


def detection_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (score >= 0.5 = real), per-class accuracy, AUC and AP.

    AUC and AP treat fake as the positive class and rank by 1 - realness, as the field reports
    them; they are NaN when the labels hold one class only.
    """
    # Imported here: sklearn.metrics takes ~2 s to import, which `predict` never needs.
    from sklearn.metrics import average_precision_score, roc_auc_score

    is_real = labels >= 0.5
    predicted_real = scores >= 0.5
    correct = predicted_real == is_real
    metrics = {
        "accuracy": float(correct.mean()) if len(correct) else math.nan,
        "real_acc": float(correct[is_real].mean()) if is_real.any() else math.nan,
        "fake_acc": float(correct[~is_real].mean()) if (~is_real).any() else math.nan,
    }
    if is_real.all() or (~is_real).all():
        metrics.update(auc=math.nan, ap=math.nan)
    else:
        fake_target = (~is_real).astype(int)
        fakeness = 1.0 - scores
        metrics.update(
            auc=float(roc_auc_score(fake_target, fakeness)),
            ap=float(average_precision_score(fake_target, fakeness)),
        )
    return metrics


def finite_or_none(value: object) -> object:
    """NaN and inf become None (JSON has neither); anything else is returned as it is."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def json_safe(values: dict[str, object]) -> dict[str, object]:
    """NaN and inf become None, so the history stays valid JSON."""
    return {key: finite_or_none(value) for key, value in values.items()}
