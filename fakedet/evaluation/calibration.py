"""Fitting a calibration map and choosing the operating threshold on labelled scores.

`auto` chooses the map by cross-validation: every candidate (identity always; temperature, Platt
and isotonic when each class has enough images) is fitted on four fifths of the images and
scored by the Brier score on the fifth it did not see; the simplest candidate within one
standard error of the best wins, so identity stays unless a map beats it out of fold. `fpr:R`
and `fnr:R` thresholds are order statistics of one class's scores, chosen so that the error rate
on new images of that class is at most R with 95% confidence.

The stored map itself (and applying it) lives in `fakedet.checkpoints.calibration`, which needs
only numpy, so scoring never imports the fitting code's SciPy and scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fakedet.checkpoints.calibration import (
    METHODS,
    QUALITY_NAMES,
    TEMPERATURE_BOUNDS,
    Calibration,
    Guarantee,
    check_method,
    logit,
    parse_rule,
)
from fakedet.errors import UsageError
from fakedet.evaluation.metrics import ECE_BINS, expected_calibration_error

# Candidates of `auto`, simplest first: a tie within one standard error goes to the simpler.
CANDIDATES = ("identity", *METHODS)
# A gain in out-of-fold Brier score below this counts as a tie too: it is a few thousandths of
# a probability, and a near-separable set's standard error can be smaller still.
BRIER_TOLERANCE = 1e-4
# Images each class needs before a map is a candidate of `auto`: a map with more freedom needs
# more images before its out-of-fold score means anything (isotonic has one step per block).
MIN_PER_CLASS = {"identity": 0, "temperature": 10, "platt": 20, "isotonic": 50}
CV_FOLDS = 5
# A chosen map whose in-sample ECE exceeds the raw scores' by more than this is passed over
# for the next simpler candidate: calibration must not leave scores visibly worse calibrated.
ECE_SLACK = 0.01
BOOTSTRAP_RESAMPLES = 200
# Confidence of the `fpr:R` / `fnr:R` guarantee.
CONFIDENCE = 0.95


def brier_score(realness: np.ndarray, is_real: np.ndarray) -> float:
    """Mean squared difference between calibrated realness and the 0/1 label."""
    return float(np.mean((realness - is_real) ** 2))


def equal_mass_ece(realness: np.ndarray, is_real: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over `bins` bins holding (nearly) the same number of images each, by rank: unlike
    equal-width bins it does not lump a confident detector's scores into the two end bins."""
    order = np.argsort(realness, kind="stable")
    return _equal_mass_of_sorted(realness[order], is_real[order], bins)


def _equal_mass_of_sorted(realness: np.ndarray, is_real: np.ndarray, bins: int) -> float:
    # Bins as np.array_split deals them: the first len % bins bins one image larger.
    count = min(bins, len(realness))
    sizes = np.full(count, len(realness) // count)
    sizes[: len(realness) % count] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gap = np.add.reduceat(is_real - realness, starts)
    return float(np.abs(gap).sum() / len(realness))


def _equal_width_ece(realness: np.ndarray, is_real: np.ndarray) -> float:
    # expected_calibration_error's bins counted with bincount: the same number, fast enough to
    # repeat for every bootstrap resample.
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    bins = np.clip(np.digitize(realness, edges[1:-1]), 0, ECE_BINS - 1)
    gap = np.bincount(bins, is_real - realness, minlength=ECE_BINS)
    return float(np.abs(gap).sum() / len(realness))


QUALITY_FUNCTIONS = {"ece": _equal_width_ece, "ece_mass": equal_mass_ece, "brier": brier_score}


def quality_with_intervals(
    raw: np.ndarray, calibrated: np.ndarray, is_real: np.ndarray, seed: int = 0
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(`<name>_before/after` -> value, the same keys -> a 95% bootstrap interval: the 2.5% and
    97.5% percentiles less the bootstrap's bias) of every quality number, the map held fixed
    and the images resampled."""
    values: dict[str, float] = {}
    for name in QUALITY_NAMES:
        values[f"{name}_before"] = QUALITY_FUNCTIONS[name](raw, is_real)
        values[f"{name}_after"] = QUALITY_FUNCTIONS[name](calibrated, is_real)
    # The stored ECE is the number `validate` reports for the same scores, to the last bit.
    values["ece_before"] = expected_calibration_error(raw, is_real)
    values["ece_after"] = expected_calibration_error(calibrated, is_real)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {key: [] for key in values}
    scores = {"before": raw, "after": calibrated}
    # Sorted once: a resample in sorted order is each sorted image repeated as often as drawn,
    # which spares the equal-mass ECE a sort per resample.
    orders = {when: np.argsort(found, kind="stable") for when, found in scores.items()}
    for _ in range(BOOTSTRAP_RESAMPLES):
        drawn = np.bincount(rng.integers(0, len(raw), len(raw)), minlength=len(raw))
        for when, found in scores.items():
            chosen = np.repeat(orders[when], drawn[orders[when]])
            realness, labels = found[chosen], is_real[chosen]
            draws[f"ece_{when}"].append(_equal_width_ece(realness, labels))
            draws[f"ece_mass_{when}"].append(_equal_mass_of_sorted(realness, labels, ECE_BINS))
            draws[f"brier_{when}"].append(brier_score(realness, labels))
    intervals = {}
    for key, found in draws.items():
        # Percentile interval shifted by the bootstrap's bias: an ECE is biased upwards (every
        # resample adds sampling noise to each bin's gap), so the plain percentile interval of
        # a well-calibrated set can lie wholly above its own value.
        bias = float(np.mean(found)) - values[key]
        low, high = np.percentile(found, [2.5, 97.5]) - bias
        intervals[key] = [max(0.0, float(low)), max(0.0, float(high))]
    return values, intervals


def _fit_temperature(realness: np.ndarray, is_real: np.ndarray) -> dict[str, float]:
    from scipy.optimize import minimize_scalar

    logits = logit(realness)

    def log_loss(log_temperature: float) -> float:
        scaled = logits / np.exp(log_temperature)
        # -log sigmoid(s) = logaddexp(0, -s): stable for the large logits of a sure detector.
        return float(
            np.mean(is_real * np.logaddexp(0, -scaled) + (1 - is_real) * np.logaddexp(0, scaled))
        )

    bounds = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(log_loss, bounds=bounds, method="bounded", options={"xatol": 1e-5})
    return {"temperature": float(np.exp(found.x))}


def fit_map(method: str, realness: np.ndarray, is_real: np.ndarray) -> dict[str, Any]:
    """The parameters of `method` fitted to raw `realness` and labels (1 = real)."""
    if method == "identity":
        return {}
    if method == "temperature":
        return _fit_temperature(realness, is_real)
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


def _folds(is_real: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each image, each class dealt round-robin after a seeded shuffle, so every
    fold holds both classes in the set's proportion."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(is_real), dtype=int)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(is_real == label))
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def out_of_fold_brier(
    method: str, realness: np.ndarray, is_real: np.ndarray, folds: int = CV_FOLDS, seed: int = 0
) -> np.ndarray:
    """Each image's squared error under `method` fitted on the other folds."""
    fold_of = _folds(is_real, folds, seed)
    predicted = np.empty(len(realness))
    for fold in range(folds):
        held_out = fold_of == fold
        fitted = Calibration(method, fit_map(method, realness[~held_out], is_real[~held_out]))
        predicted[held_out] = fitted.apply(realness[held_out])
    return (predicted - is_real) ** 2


def choose_method(
    realness: np.ndarray, is_real: np.ndarray, seed: int = 0
) -> tuple[list[str], dict[str, float], str]:
    """(the candidates in order of preference, each one's mean out-of-fold Brier score, how the
    first was chosen in words).

    The preferred one is the simplest whose out-of-fold Brier score is within one standard
    error (of its per-image difference from the best's), or BRIER_TOLERANCE, of the best's;
    the simpler ones follow, down to identity, for `fit_calibration` to fall back on.
    """
    per_class = int(min(is_real.sum(), len(is_real) - is_real.sum()))
    candidates = [name for name in CANDIDATES if per_class >= MIN_PER_CLASS[name]]
    if len(candidates) == 1:
        need = MIN_PER_CLASS["temperature"]
        return ["identity"], {}, f"fewer than {need} images of a class to fit any map on"
    if realness[is_real == 1].min() > realness[is_real == 0].max():
        # Every map would sharpen towards 0 and 1 without bound (temperature to its limit),
        # and every fold would agree, yet no error was seen to say how sure to be.
        return ["identity"], {}, "every real scores above every fake: no error to calibrate on"
    errors = {name: out_of_fold_brier(name, realness, is_real, seed=seed) for name in candidates}
    means = {name: float(found.mean()) for name, found in errors.items()}
    best = min(candidates, key=means.__getitem__)

    def close_to_best(name: str) -> bool:
        difference = errors[name] - errors[best]
        noise = float(difference.std(ddof=1) / math.sqrt(len(difference)))
        return means[name] <= means[best] + max(noise, BRIER_TOLERANCE)

    position = next(index for index, name in enumerate(candidates) if close_to_best(name))
    chosen, simpler = candidates[position], candidates[:position][::-1]
    how = (
        f"{CV_FOLDS}-fold cross-validation chose {chosen} (lowest out-of-fold Brier score "
        f"within one standard error) among {', '.join(candidates)}"
    )
    return [chosen, *simpler], means, how


def _rank_for(rate: float, count: int, confidence: float = CONFIDENCE) -> int:
    """The largest rank k (1-based, 0 when none works) whose order statistic of `count` scores
    keeps the error rate on new images at or under `rate` with probability `confidence`.

    The rate at the k-th lowest of n scores from a continuous distribution is Beta(k, n-k+1):
    it exceeds `rate` with probability P(Binomial(n, rate) <= k-1), which must stay at most
    1 - confidence. Ties only lower the rate, so the bound holds for discrete scores too.
    """
    from scipy.stats import binom

    if rate <= 0.0 or count == 0:
        return 0
    below = binom.cdf(np.arange(count), count, rate)  # P(Bin <= k - 1) for k = 1..count
    return int(np.count_nonzero(below <= 1.0 - confidence))


def minimum_images(rate: float, confidence: float = CONFIDENCE) -> int | None:
    """Images of one class the `fpr:rate` / `fnr:rate` rule needs at least (None: no number
    suffices, rate 0): the lowest score is a valid threshold once (1 - rate)^n <= 1 - confidence.
    """
    if rate <= 0.0:
        return None
    if rate >= 1.0:
        return 1
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - rate))


def choose_threshold(
    rule: str, realness: np.ndarray, is_real: np.ndarray, fitted_on: str = "calibration set"
) -> tuple[float, Guarantee | None]:
    """The calibrated-realness threshold (real at or above it) that `rule` picks on this set,
    and what it guarantees on new images (`fpr` and `fnr` rules only).

    Raises:
        UsageError: an `fpr`/`fnr` rule with too few images of its class for the guarantee.
    """
    kind, value = parse_rule(rule)
    if kind == "fixed":
        return float(value), None  # type: ignore[arg-type]
    if kind in ("fpr", "fnr"):
        assert value is not None
        reference = realness[is_real == 1] if kind == "fpr" else realness[is_real == 0]
        rank = _rank_for(value, len(reference))
        if rank == 0:
            need = minimum_images(value)
            which = "real" if kind == "fpr" else "fake"
            enough = (
                f"at least {need} {which} images"
                if need is not None
                else "a positive rate (no finite set can promise a rate of 0)"
            )
            raise UsageError(
                f"--threshold-rule {rule} needs {enough} for its {CONFIDENCE:.0%}-confidence "
                f"bound; {fitted_on} has {len(reference)}: add {which} images or allow a higher "
                f"rate (e.g. {kind}:{_rate_for(len(reference))})."
            )
        guarantee = Guarantee(kind, value, CONFIDENCE, rank, len(reference))
        if kind == "fpr":
            # A real image is called fake below the threshold: at the rank-th lowest real score
            # at most rank - 1 of these reals are, and new reals by the bound above.
            return float(np.sort(reference)[rank - 1]), guarantee
        # A fake is called real at or above the threshold: just above the rank-th highest fake.
        highest = float(np.sort(reference)[::-1][rank - 1])
        return float(np.nextafter(highest, np.inf)), guarantee
    from sklearn.metrics import roc_curve

    # EER: fake is the positive class, ranked by 1 - realness; the ROC point where the share of
    # reals called fake equals the share of fakes called real.
    false_positive, true_positive, thresholds = roc_curve(1 - is_real, 1.0 - realness)
    index = int(np.argmin(np.abs(false_positive - (1.0 - true_positive))))
    # roc_curve calls fake every score with fakeness >= its threshold, i.e. realness <= 1 - it;
    # "real at or above the threshold" then needs the next float above that realness.
    return float(np.clip(np.nextafter(1.0 - thresholds[index], 2.0), 0.0, 1.0)), None


def _rate_for(count: int) -> str:
    """The lowest of a few round rates that `count` images of a class can guarantee."""
    for rate in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
        need = minimum_images(rate)
        if need is not None and need <= count:
            return f"{rate:g}"
    return "0.5"


def _at_bound(calibration: Calibration) -> bool:
    """A temperature fitted to (within 1% of) its bound: the likelihood wanted it further."""
    if calibration.method != "temperature":
        return False
    temperature = calibration.params["temperature"]
    return any(abs(temperature / bound - 1.0) < 0.01 for bound in TEMPERATURE_BOUNDS)


def fit_calibration(
    realness: np.ndarray,
    labels: np.ndarray,
    method: str = "auto",
    rule: str = "fixed:0.5",
    fitted_on: str = "val split",
    paths: Sequence[str] | None = None,
    threshold_on: tuple[np.ndarray, np.ndarray] | None = None,
) -> Calibration:
    """Fit `method` (`auto`: chosen by cross-validation) on raw realness scores with realness
    labels, then the threshold by `rule`; with `paths`, also what the images looked like, so
    predict can warn about images unlike them. `threshold_on` (raw realness, labels) is the set
    the rule reads instead of the fitted one (e.g. each image's worst processed version).

    Raises:
        UsageError: a bad method or rule, a set without both classes, or too few images of a
            class for an `fpr`/`fnr` rule.
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
    ece_before = expected_calibration_error(realness, is_real.astype(float))
    if method == "auto":
        preference, selection, chosen_by = choose_method(realness, is_real)
    else:
        preference, selection, chosen_by = [method], {}, "forced"
    for candidate in preference:
        calibration = Calibration(
            candidate, fit_map(candidate, realness, is_real), fitted_on, len(realness)
        )
        calibrated = calibration.apply(realness)
        ece_after = expected_calibration_error(calibrated, is_real.astype(float))
        if method != "auto":
            break
        if _at_bound(calibration):
            chosen_by += f"; {candidate} passed over (temperature at its bound: a degenerate fit)"
        elif ece_after > ece_before + ECE_SLACK:
            chosen_by += f"; {candidate} passed over (in-sample ECE {ece_after:.4f} > raw's)"
        else:
            break
    calibration.chosen_by, calibration.selection = chosen_by, selection
    calibration.quality, calibration.intervals = quality_with_intervals(
        realness, calibrated, is_real.astype(float)
    )
    calibration.ece_before = calibration.quality["ece_before"]
    calibration.ece_after = calibration.quality["ece_after"]
    if threshold_on is not None:
        calibrated = calibration.apply(np.asarray(threshold_on[0], dtype=np.float64))
        is_real = (np.asarray(threshold_on[1]) >= 0.5).astype(int)
    calibration.threshold, calibration.guarantee = choose_threshold(
        rule, calibrated, is_real, f"the {fitted_on}"
    )
    calibration.rule = rule
    called_real = calibrated >= calibration.threshold
    calibration.fpr = float(np.mean(~called_real[is_real == 1]))
    calibration.fnr = float(np.mean(called_real[is_real == 0]))
    if paths is not None:
        from fakedet.inference.drift import profile_images

        calibration.inputs = profile_images(paths)
    return calibration
