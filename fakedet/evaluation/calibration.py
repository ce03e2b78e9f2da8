"""Fitting a calibration map and choosing the operating threshold on labelled scores.

The stored map itself (and applying it) lives in `fakedet.checkpoints.calibration`, which needs
only numpy, so scoring never imports the fitting code's SciPy and scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fakedet.checkpoints.calibration import (
    TEMPERATURE_BOUNDS,
    Calibration,
    check_method,
    logit,
    parse_rule,
    sigmoid,
)
from fakedet.errors import UsageError
from fakedet.evaluation.metrics import expected_calibration_error


def fit_map(method: str, realness: np.ndarray, is_real: np.ndarray) -> dict[str, Any]:
    """The parameters of `method` fitted to raw `realness` and labels (1 = real)."""
    if method == "temperature":
        from scipy.optimize import minimize_scalar
        from sklearn.metrics import log_loss

        logits = logit(realness)

        def loss(log_temperature: float) -> float:
            calibrated = sigmoid(logits / np.exp(log_temperature))
            return log_loss(is_real, calibrated, labels=[0, 1])

        bounds = np.log(TEMPERATURE_BOUNDS)
        found = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-5})
        return {"temperature": float(np.exp(found.x))}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        logits = logit(realness)
        # Standardised first: a detector whose logits span 0.01 would otherwise need a slope in
        # the thousands, which the solver reaches slowly or not at all.
        center, scale = float(logits.mean()), float(logits.std()) or 1.0
        # Nearly unregularised: Platt scaling is a maximum-likelihood fit of two numbers.
        fit = LogisticRegression(C=1e6, max_iter=1000)
        fit.fit(((logits - center) / scale)[:, None], is_real)
        slope = float(fit.coef_[0, 0]) / scale
        return {"slope": slope, "offset": float(fit.intercept_[0]) - slope * center}
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(realness, is_real)
    return {"x": fit.X_thresholds_.tolist(), "y": fit.y_thresholds_.tolist()}


def choose_threshold(rule: str, realness: np.ndarray, is_real: np.ndarray) -> float:
    """The calibrated-realness threshold (real at or above it) that `rule` picks on this set."""
    kind, value = parse_rule(rule)
    if kind == "fixed":
        return float(value)  # type: ignore[arg-type]
    reals = np.sort(realness[is_real == 1])
    if kind == "fpr":
        # A real image is called fake when its realness is below the threshold; at the k-th
        # smallest real score exactly the k below it are, so k = floor(R * n) is the most
        # allowed and that score is the highest threshold keeping the rate at or under R.
        allowed = int(np.floor(value * len(reals) + 1e-9))  # type: ignore[operator]
        return float(reals[allowed]) if allowed < len(reals) else 1.0
    from sklearn.metrics import roc_curve

    # EER: fake is the positive class, ranked by 1 - realness; the ROC point where the share of
    # reals called fake equals the share of fakes called real.
    false_positive, true_positive, thresholds = roc_curve(1 - is_real, 1.0 - realness)
    index = int(np.argmin(np.abs(false_positive - (1.0 - true_positive))))
    # roc_curve calls fake every score with fakeness >= its threshold, i.e. realness <= 1 - it;
    # "real at or above the threshold" then needs the next float above that realness.
    return float(np.clip(np.nextafter(1.0 - thresholds[index], 2.0), 0.0, 1.0))


def fit_calibration(
    realness: np.ndarray,
    labels: np.ndarray,
    method: str = "temperature",
    rule: str = "fixed:0.5",
    fitted_on: str = "val split",
) -> Calibration:
    """Fit `method` on raw realness scores with realness labels, then the threshold by `rule`.

    Raises:
        UsageError: a bad method or rule, or a set without both classes.
    """
    check_method(method)
    parse_rule(rule)
    is_real = (np.asarray(labels) >= 0.5).astype(int)
    realness = np.asarray(realness, dtype=np.float64)
    if not np.isfinite(realness).all():
        raise UsageError(
            f"Calibration needs finite scores; the model gives NaN or inf on the {fitted_on} "
            "(its weights diverged: train again with a lower --lr)."
        )
    if is_real.min() == is_real.max():
        raise UsageError(
            f"Calibration needs real and fake images; the {fitted_on} has "
            f"{int(is_real.sum())} real and {int(len(is_real) - is_real.sum())} fake."
        )
    calibration = Calibration(method, fit_map(method, realness, is_real), fitted_on, len(realness))
    calibrated = calibration.apply(realness)
    calibration.ece_before = expected_calibration_error(realness, is_real.astype(float))
    calibration.ece_after = expected_calibration_error(calibrated, is_real.astype(float))
    calibration.threshold = choose_threshold(rule, calibrated, is_real)
    calibration.rule = rule
    return calibration
