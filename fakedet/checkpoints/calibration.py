"""Calibrated realness and the operating threshold a checkpoint stores.

A detector's raw score is not a probability. Calibration maps it to one, fitted on held-out
images: identity (the raw score, kept when no map beats it out of fold), temperature (one
parameter on the score's logit, keeps the ranking), Platt (a slope and an offset on the logit)
or isotonic (a monotone step function). The threshold is where "real" begins on the calibrated
score, chosen by a rule: `fixed:X`, `eer` (real and fake error rates equal), `fpr:R` (at most a
share R of new real images called fake, with 95% confidence) or `fnr:R` (likewise for fakes
called real).

This module only stores and applies: numpy alone, because scoring imports it. Fitting lives in
`fakedet.evaluation.calibration`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fakedet.config import threshold_rule_parts
from fakedet.errors import UsageError

METHODS = ("temperature", "platt", "isotonic")
# What --method accepts: `auto` chooses among identity and METHODS by cross-validation.
METHOD_CHOICES = ("auto", "identity", *METHODS)
RULE_KINDS = ("fixed", "eer", "fpr", "fnr")
# Logits are taken of realness clipped to [EPSILON, 1 - EPSILON]: a sigmoid output of exactly 0
# or 1 (float rounding) would give an infinite logit.
EPSILON = 1e-6
# Temperatures outside this range mean a degenerate fit (all scores equal, one class).
TEMPERATURE_BOUNDS = (0.05, 20.0)
# The quality numbers stored beside the map, each before and after it (in-sample).
QUALITY_NAMES = ("ece", "ece_mass", "brier")


def logit(realness: np.ndarray) -> np.ndarray:
    clipped = np.clip(realness, EPSILON, 1.0 - EPSILON)
    return np.log(clipped / (1.0 - clipped))


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


@dataclass
class Guarantee:
    """What an `fpr:R` / `fnr:R` threshold promises: the error rate on new images of one class
    stays at or under `rate` with probability `confidence`, if they come from the same source."""

    kind: str  # "fpr" (reals called fake) or "fnr" (fakes called real)
    rate: float
    confidence: float
    rank: int  # the threshold is the rank-th lowest real (fpr) or highest fake (fnr) score
    reference_images: int  # real (fpr) or fake (fnr) calibration images it was read from
    # Processing kinds each image was also scored after (calibrate --processing): the bound is
    # then on an image's worst version, the original or any of these, so it holds for each.
    versions: str = ""

    def describe(self) -> str:
        share = "real images called fake" if self.kind == "fpr" else "fake images called real"
        worst = f" in their worst version (as they are or after {self.versions})"
        return (
            f"at most {self.rate:.3g} of new {share}{worst if self.versions else ''} with "
            f"{self.confidence:.0%} confidence (order statistic {self.rank} of "
            f"{self.reference_images}; holds for images from the same source as the "
            "calibration images)"
        )


@dataclass
class InputProfile:
    """What the calibration images looked like, so predict can say when new ones differ."""

    images: int
    min_side: int  # smallest width or height seen
    max_side: int  # largest width or height seen
    formats: list[str]  # Pillow format names: JPEG, PNG, WEBP, ...
    jpeg_quality: list[int] | None = None  # [lowest, highest] estimated quality of the JPEGs

    def describe(self) -> str:
        quality = ""
        if self.jpeg_quality is not None:
            quality = f", JPEG quality {self.jpeg_quality[0]}-{self.jpeg_quality[1]}"
        return (
            f"{self.images} images, sides {self.min_side}-{self.max_side} px, "
            f"{'/'.join(self.formats)}{quality}"
        )


@dataclass
class Calibration:
    """How to read a checkpoint's score: the map to calibrated realness and the threshold.

    `ece_before` / `ece_after` are the 15-bin equal-width expected calibration error of the raw
    and calibrated scores on the calibration images; `quality` holds those and the equal-mass
    ECE and Brier score (keys `<name>_before` / `<name>_after`), `intervals` their bootstrap
    95% intervals. Older checkpoints store only the first fields; the rest default to empty.
    """

    method: str = "identity"
    params: dict[str, Any] = field(default_factory=dict)
    fitted_on: str = ""
    n_images: int = 0
    ece_before: float | None = None
    ece_after: float | None = None
    threshold: float = 0.5
    rule: str = "fixed:0.5"
    chosen_by: str = ""  # "forced", or how `auto` chose the method
    selection: dict[str, float] = field(default_factory=dict)  # method -> out-of-fold Brier
    quality: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    fpr: float | None = None  # on the calibration images, at the threshold
    fnr: float | None = None
    guarantee: Guarantee | None = None
    inputs: InputProfile | None = None

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
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        if known.get("guarantee") is not None:
            fields = Guarantee.__dataclass_fields__  # a later version's fields are left out
            known["guarantee"] = Guarantee(
                **{key: value for key, value in known["guarantee"].items() if key in fields}
            )
        if known.get("inputs") is not None:
            known["inputs"] = InputProfile(**known["inputs"])
        return cls(**known)

    def describe(self) -> str:
        """One line: method and parameters, threshold and rule, ECE before -> after."""
        ece = ""
        if self.ece_before is not None and self.ece_after is not None:
            ece = f"; ECE {self.ece_before:.4f} -> {self.ece_after:.4f}"
        if self.is_identity:
            if not self.n_images:  # no fit at all: a checkpoint without calibration
                return f"none (raw scores), threshold {self.threshold:g} ({self.rule})"
            return (
                f"identity (raw scores kept: {self.chosen_by}) on {self.n_images} images of "
                f"{self.fitted_on}; threshold {self.threshold:.4g} ({self.rule}){ece}"
            )
        params = ", ".join(
            f"{name} {value:.4g}"
            for name, value in self.params.items()
            if isinstance(value, int | float)
        )
        return (
            f"{self.method}{f' ({params})' if params else ''} on {self.n_images} images of "
            f"{self.fitted_on}; threshold {self.threshold:.4g} ({self.rule}){ece}"
        )

    def details(self) -> list[str]:
        """Lines beyond `describe`: how the method was chosen, the quality numbers with their
        intervals, the error rates at the threshold and what the threshold guarantees."""
        lines = []
        if self.selection:
            scores = ", ".join(f"{name} {value:.4f}" for name, value in self.selection.items())
            lines.append(f"method: {self.chosen_by}; out-of-fold Brier: {scores}")
        labels = {"ece": "ECE (15 equal-width bins)", "ece_mass": "ECE (15 equal-mass bins)"}
        for name in QUALITY_NAMES:
            if f"{name}_before" not in self.quality:
                continue
            cells = []
            for when in ("before", "after"):
                key = f"{name}_{when}"
                low, high = self.intervals.get(key, (None, None))
                interval = f" [{low:.4f}, {high:.4f}]" if low is not None else ""
                cells.append(f"{self.quality[key]:.4f}{interval}")
            lines.append(f"{labels.get(name, 'Brier score')}: {cells[0]} -> {cells[1]}")
        if self.fpr is not None and self.fnr is not None:
            worst = (
                " (each in its worst version)" if self.guarantee and self.guarantee.versions else ""
            )
            lines.append(
                f"on the calibration images{worst} at threshold {self.threshold:.4g}: "
                f"FPR {self.fpr:.4f}, FNR {self.fnr:.4f}"
            )
        if self.guarantee is not None:
            lines.append(f"guarantee: {self.guarantee.describe()}")
        if self.inputs is not None:
            lines.append(f"calibration images: {self.inputs.describe()}")
        return lines


IDENTITY = Calibration()


def parse_rule(rule: str) -> tuple[str, float | None]:
    """`fixed:0.5` -> ("fixed", 0.5), `eer` -> ("eer", None), `fpr:0.01` -> ("fpr", 0.01),
    `fnr:0.05` -> ("fnr", 0.05).

    Raises:
        UsageError: any other spelling, or a value out of [0, 1].
    """
    parts = threshold_rule_parts(rule)
    if parts is not None:
        return parts
    raise UsageError(
        f"--threshold-rule {rule!r} is not fixed:X, eer, fpr:R or fnr:R (X and R in [0, 1]; "
        "e.g. fixed:0.5, eer, fpr:0.05)."
    )


def check_method(method: str) -> str:
    if method not in METHOD_CHOICES:
        raise UsageError(f"--method {method!r} is not one of {', '.join(METHOD_CHOICES)}.")
    return method
