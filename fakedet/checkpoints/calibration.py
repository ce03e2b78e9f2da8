"""Calibrated realness and the operating threshold a checkpoint stores.

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

from fakedet.errors import UsageError

METHODS = ("temperature", "platt", "isotonic")
# Logits are taken of realness clipped to [EPSILON, 1 - EPSILON]: a sigmoid output of exactly 0
# or 1 (float rounding) would give an infinite logit.
EPSILON = 1e-6
# Temperatures outside this range mean a degenerate fit (all scores equal, one class).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def logit(realness: np.ndarray) -> np.ndarray:
    clipped = np.clip(realness, EPSILON, 1.0 - EPSILON)
    return np.log(clipped / (1.0 - clipped))


def sigmoid(values: np.ndarray) -> np.ndarray:
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
            return sigmoid(logit(realness) / self.params["temperature"])
        if self.method == "platt":
            return sigmoid(self.params["slope"] * logit(realness) + self.params["offset"])
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
