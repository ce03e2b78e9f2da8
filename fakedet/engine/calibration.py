"""Calibrated realness and the operating threshold a checkpoint stores (SPEC 12).

A detector's raw score is not a probability. Calibration maps it to one, fitted on held-out
images: temperature (one parameter on the score's logit, keeps the ranking), Platt (a slope and
an offset on the logit, by logistic regression) or isotonic (a monotone step function). The
threshold is where "real" begins on the calibrated score, chosen by a rule: `fixed:X`, `eer`
(real and fake error rates equal) or `fpr:R` (the highest threshold that calls at most a share
R of the real images fake).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fakedet.engine.metrics import expected_calibration_error
from fakedet.errors import UsageError

METHODS = ("temperature", "platt", "isotonic")
# Logits are taken of realness clipped to [EPSILON, 1 - EPSILON]: a sigmoid output of exactly 0
# or 1 (float rounding) would give an infinite logit.
EPSILON = 1e-6
# Temperatures outside this range mean a degenerate fit (all scores equal, one class).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _logit(realness: np.ndarray) -> np.ndarray:
    clipped = np.clip(realness, EPSILON, 1.0 - EPSILON)
    return np.log(clipped / (1.0 - clipped))


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


@dataclass
class Calibration:
    """How to read a checkpoint's score: the map to calibrated realness and the threshold."""

    method: str = "identity"
    params: dict[str, Any] = field(default_factory=dict)
    fitted_on: str = ""
    n_images: int = 0
    ece_before: float | None = None
    ece_after: float | None = None
    threshold: float = 0.5
    rule: str = "fixed:0.5"

    @property
    def is_identity(self) -> bool:
        return self.method == "identity"

    def apply(self, realness: np.ndarray) -> np.ndarray:
        """Calibrated realness of raw realness scores (any shape)."""
        realness = np.asarray(realness, dtype=np.float64)
        if self.method == "temperature":
            return _sigmoid(_logit(realness) / self.params["temperature"])
        if self.method == "platt":
            return _sigmoid(self.params["slope"] * _logit(realness) + self.params["offset"])
        if self.method == "isotonic":
            return np.interp(realness, self.params["x"], self.params["y"])
        return realness

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})

    def describe(self) -> str:
        """One line: method and parameters, threshold and rule, ECE before -> after."""
        if self.is_identity:
            return f"none (raw scores), threshold {self.threshold:g} ({self.rule})"
        params = ", ".join(
            f"{name} {value:.4g}"
            for name, value in self.params.items()
            if isinstance(value, int | float)
        )
        ece = ""
        if self.ece_before is not None and self.ece_after is not None:
            ece = f"; ECE {self.ece_before:.4f} -> {self.ece_after:.4f}"
        return (
            f"{self.method}{f' ({params})' if params else ''} on {self.n_images} images of "
            f"{self.fitted_on}; threshold {self.threshold:.4g} ({self.rule}){ece}"
        )


IDENTITY = Calibration()


def parse_rule(rule: str) -> tuple[str, float | None]:
    """`fixed:0.5` -> ("fixed", 0.5), `eer` -> ("eer", None), `fpr:0.01` -> ("fpr", 0.01).

    Raises:
        UsageError: any other spelling, or a value out of [0, 1].
    """
    kind, _, value = rule.strip().lower().partition(":")
    if kind == "eer" and not value:
        return "eer", None
    if kind in ("fixed", "fpr") and value:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if 0.0 <= number <= 1.0:
            return kind, number
    raise UsageError(
        f"--threshold-rule {rule!r} is not fixed:X, eer or fpr:R (X and R in [0, 1]; e.g. "
        "fixed:0.5, eer, fpr:0.01)."
    )


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"--calibration {method!r} is not one of {', '.join(METHODS)}.")
    return method


def fit_map(method: str, realness: np.ndarray, is_real: np.ndarray) -> dict[str, Any]:
    """The parameters of `method` fitted to raw `realness` and labels (1 = real)."""
    if method == "temperature":
        from scipy.optimize import minimize_scalar
        from sklearn.metrics import log_loss

        logits = _logit(realness)

        def loss(log_temperature: float) -> float:
            calibrated = _sigmoid(logits / np.exp(log_temperature))
            return log_loss(is_real, calibrated, labels=[0, 1])

        bounds = np.log(TEMPERATURE_BOUNDS)
        found = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-5})
        return {"temperature": float(np.exp(found.x))}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        logits = _logit(realness)
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
