"""Validation metrics: loss terms, accuracy per class, and AUC/AP with fake as the positive class."""

from __future__ import annotations

import math

import numpy as np


def detection_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy (score >= threshold = real), per-class accuracy, AUC and AP.

    AUC and AP treat fake as the positive class and rank by 1 - realness, as the field reports
    them; they are NaN when the labels hold one class only.
    """
    # Imported here: sklearn.metrics takes ~2 s to import, which `predict` never needs.
    from sklearn.metrics import average_precision_score, roc_auc_score

    is_real = labels >= 0.5
    predicted_real = scores >= threshold
    correct = predicted_real == is_real
    metrics = {
        "accuracy": float(correct.mean()) if len(correct) else math.nan,
        "real_acc": float(correct[is_real].mean()) if is_real.any() else math.nan,
        "fake_acc": float(correct[~is_real].mean()) if (~is_real).any() else math.nan,
    }
    if is_real.all() or (~is_real).all() or not np.isfinite(scores).all():
        # One class, or a diverged model's NaN scores: no ranking to measure (never a crash).
        metrics.update(auc=math.nan, ap=math.nan)
    else:
        fake_target = (~is_real).astype(int)
        fakeness = 1.0 - scores
        metrics.update(
            auc=float(roc_auc_score(fake_target, fakeness)),
            ap=float(average_precision_score(fake_target, fakeness)),
        )
    return metrics


# Equal-width bins of the expected calibration error: 15 as in Guo et al. (2017), the usual
# choice; fewer hides miscalibration, more leaves bins empty on test sets of a few hundred.
ECE_BINS = 15
TEST_METRICS = (
    "n_real",
    "n_fake",
    "accuracy",
    "real_acc",
    "fake_acc",
    "ap",
    "auc",
    "eer",
    "tpr_at_fpr_1",
    "tpr_at_fpr_5",
    "ece",
    "ece_raw",
)


def expected_calibration_error(realness: np.ndarray, is_real: np.ndarray) -> float:
    """Bin-weighted |observed share of real - mean realness| over ECE_BINS equal-width bins.

    scikit-learn's `calibration_curve` gives the per-bin means but not the bin sizes, which the
    weighting needs, so the bins are counted here with the same edges.
    """
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    bins = np.clip(np.digitize(realness, edges[1:-1]), 0, ECE_BINS - 1)
    total = 0.0
    for index in np.unique(bins):
        members = bins == index
        total += members.sum() * abs(is_real[members].mean() - realness[members].mean())
    return float(total / len(realness))


def group_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float = 0.5,
    raw_scores: np.ndarray | None = None,
) -> tuple[dict[str, float | int | None], list[str]]:
    """The field's metrics of one group, fake as the positive class (ranked by 1 - realness).

    Returns the metrics (TEST_METRICS; None where undefined) and notes saying why any is None.
    Accuracy is at `threshold`: realness at or above it is "real". `ece` is of `scores`
    (calibrated) and `ece_raw` of `raw_scores` (the model's own; `scores` when not given), and
    the ranking metrics (AP, AUC, EER, TPR at FPR) are of `raw_scores`.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    is_real = labels >= 0.5
    n_real, n_fake = int(is_real.sum()), int((~is_real).sum())
    correct = (scores >= threshold) == is_real
    metrics: dict[str, float | int | None] = dict.fromkeys(TEST_METRICS)
    metrics.update(n_real=n_real, n_fake=n_fake)
    notes: list[str] = []
    if len(scores):
        metrics["accuracy"] = float(correct.mean())
        metrics["ece"] = expected_calibration_error(scores, is_real.astype(float))
        raw = scores if raw_scores is None else raw_scores
        metrics["ece_raw"] = expected_calibration_error(raw, is_real.astype(float))
    if n_real:
        metrics["real_acc"] = float(correct[is_real].mean())
    if n_fake:
        metrics["fake_acc"] = float(correct[~is_real].mean())
    if not np.isfinite(scores).all() or (
        raw_scores is not None and not np.isfinite(raw_scores).all()
    ):
        notes.append("the model gives NaN or inf scores (diverged weights): nothing to rank")
        return metrics, notes
    if not (n_real and n_fake):
        notes.append(
            f"one class only ({n_real} real, {n_fake} fake): ap, auc, eer and tpr_at_fpr_* "
            "need both"
        )
        return metrics, notes
    fake_target = (~is_real).astype(int)
    # The ranking metrics use the model's own scores: a calibration map is monotone but may tie
    # scores (isotonic steps, a degenerate fit), which would blur a ranking it cannot improve.
    fakeness = 1.0 - (scores if raw_scores is None else raw_scores)
    false_positive, true_positive, _ = roc_curve(fake_target, fakeness)
    # EER: where the false-positive rate meets the miss rate, linearly interpolated between the
    # two ROC points that straddle it.
    miss = 1.0 - true_positive
    crossing = int(np.argmax(false_positive >= miss))
    if crossing == 0:
        eer = float(false_positive[0])
    else:
        before, after = crossing - 1, crossing
        gap_before = miss[before] - false_positive[before]
        gap_after = false_positive[after] - miss[after]
        weight = gap_before / (gap_before + gap_after) if gap_before + gap_after else 0.0
        eer = float(
            false_positive[before] + weight * (false_positive[after] - false_positive[before])
        )
    metrics.update(
        ap=float(average_precision_score(fake_target, fakeness)),
        auc=float(roc_auc_score(fake_target, fakeness)),
        eer=eer,
        tpr_at_fpr_1=float(true_positive[false_positive <= 0.01].max()),
        tpr_at_fpr_5=float(true_positive[false_positive <= 0.05].max()),
    )
    return metrics, notes
