"""The doctor's rules: each a pure function of a run's history and a few config numbers, with
its thresholds as named constants that say why."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import PurePath
from typing import Any

from fakedet.advisor import (
    advised_lr,
)
from fakedet.doctor.findings import (
    CONSTANT_SCORE_REGRESSION,
    SEED_LR_RANGE_FINE_TUNING,
    Finding,
    Row,
    Severity,
    best_row,
    finite_number,
    flag_value,
    four_digits,
    new_run_command,
    rounded_value,
    seed_lr_range,
    series,
    stopped_early,
)

# Not learning. The first epochs: the default-LR demo run ran 3. By its 3rd epoch the
# quickstart (lr 1e-3) had its train loss 60% below the constant-score loss and the default-LR
# run 9%; a quarter lies well between them, and the rule also needs an LR below the range. The
# spectrum read, fitted before the first step, starts a model below the constant score where
# the spectrum separates the classes: on the demo at 128 px a run at lr 2e-6 still fell only 19%
# in 3 epochs (val AUC 0.96 from the read alone), and the rule fired.
NOT_LEARNING_EPOCHS = 3
NOT_LEARNING_MIN_DROP = 0.25

# Unstable. A val loss more than 1.5x the previous validation's: overfitting raises it a few per
# cent per validation and the quickstart's last epochs moved it by 0.04, so a jump of half is
# neither. Jumps inside the warmup are left out: the LR is still rising and BatchNorm's running
# statistics lag the weights (the healthy quickstart jumps 0.51 -> 1.33 at epoch 2 of its 2.5
# warmup epochs, then falls to 0.12).
SPIKE_JUMP = 0.5
# Accuracy that changes direction at least twice by 15 points or more after the warmup: one
# 160-image val set flips single images by 0.6 points, so 15 points is many images at once.
ACCURACY_SWING = 0.15
ACCURACY_REVERSALS = 2
# Halving a weight or the LR is a step one rerun can show, without switching the term off.
UNSTABLE_FACTOR = 0.5

# Poor separation. AUC is the chance that a random fake scores below a random real: one minus
# the overlap of the two classes' realness histograms (the history keeps no histograms, so AUC
# stands in for them). Below 0.8 one pair in five is ordered wrongly; the quickstart ends at 0.99.
POOR_AUC = 0.8
# The regression term a fifth below the constant score's 0.25: the scores have moved toward their
# labels, so the model learns and what fails is the ordering (otherwise: not learning).
LEARNING_REGRESSION = 0.8 * CONSTANT_SCORE_REGRESSION
# Doubling a weight is a step one rerun can show; a weight of 0 restarts at the seed's default.
RAISE_FACTOR = 2.0
SEED_RANKING_WEIGHT = 0.2
SEED_REGRESSION_WEIGHT = 1.0

# Inaccurate scores. Classes that separate (AUC >= 0.9) but an MSE of 0.1 or more: a typical
# image's realness sits a third of the scale (sqrt 0.1 = 0.32) from its label, so the scores are
# ordered well but cannot be read as confidence. The quickstart ends at 0.047.
SEPARATING_AUC = 0.9
HIGH_REGRESSION = 0.1
# Expected calibration error: 0.05 is usual for a good classifier; at 0.1 the stated realness
# is 10 points from the observed share of real images on average (0.8 may mean real 70% of the
# time), enough to mislead anyone who reads a score as a probability.
HIGH_ECE = 0.1
# The binned ECE is noisy on a small val set: a perfectly calibrated detector still shows about
# sqrt(2 / pi) * 0.5 * sqrt(bins / n) (half-width of each bin's binomial error, averaged), 0.12
# at the demo's 160 val images. The rule asks for HIGH_ECE above that floor, so a small healthy
# run is not called miscalibrated. The bins are fakedet/evaluation/metrics.py's ECE_BINS (a test holds them
# equal; the doctor does not import the engine).
CALIBRATION_BINS = 15


def ece_noise_floor(n_images: float | None) -> float:
    """The ECE a perfectly calibrated detector shows by chance on `n_images` (0 when unknown)."""
    if not n_images:
        return 0.0
    return math.sqrt(2.0 / math.pi) * 0.5 * math.sqrt(CALIBRATION_BINS / n_images)


# Overfitting: val loss above its best for this many validations in a row while the train loss
# went on falling, and by at least a tenth (less is within the noise of a small val set).
OVERFIT_VALIDATIONS = 3
OVERFIT_MIN_RISE = 0.1
# Augmentation to try: the seed's blur and JPEG probabilities (0.1) doubled.
AUGMENT_PROBABILITY = 0.2


def not_learning(
    history: Sequence[Row],
    lr: float,
    amp_active: bool,
    effective_batch: int,
    start_loss: float,
    epochs: int,
    early_stopping_patience: int = 0,
    run_dir: str = "RUN_DIR",
) -> Finding | None:
    """The train loss barely fell over the first epochs, at an LR below the seed's range.

    Args:
        history: the run's rows.
        lr: the run's peak LR.
        amp_active: whether autocast really ran (the range with AMP applies only then).
        effective_batch: batch size x gradient accumulation.
        start_loss: the loss of a constant 0.5 score (`constant_score_loss`).
        epochs: the epochs the run was configured for.
        early_stopping_patience: the run's patience (0: off), to tell whether it has stopped.
        run_dir: the run folder, for the resume line.
    """
    losses = series(history, "train_loss")
    window = losses[:NOT_LEARNING_EPOCHS]
    low, high = seed_lr_range(amp_active, effective_batch)
    if lr >= low or not window or len(window) < min(NOT_LEARNING_EPOCHS, epochs):
        return None
    epoch, loss = window[-1]
    drop = (start_loss - loss) / start_loss
    if drop >= NOT_LEARNING_MIN_DROP:
        return None
    new_lr = advised_lr(amp_active, effective_batch)
    tuning_low, tuning_high = SEED_LR_RANGE_FINE_TUNING
    precision = "with AMP" if amp_active else "without AMP"
    last_epoch = int(history[-1]["epoch"])
    # A run that has stopped (all epochs done, or early stopping) needs more epochs, as many
    # again, and a fresh warmup: --reset-lr alone would keep the old curve, whose cosine is near
    # min_lr by then. A run still under way just goes on at the new LR.
    stopped = last_epoch >= epochs or stopped_early(history, early_stopping_patience)
    more = f" --epochs {last_epoch}" if stopped else ""
    scheduler = " --reset-scheduler" if stopped else ""
    return Finding(
        rule="not_learning",
        severity="warning",
        evidence={
            "lr": lr,
            "seed_lr_low": four_digits(low),
            "seed_lr_high": four_digits(high),
            "effective_batch": effective_batch,
            "amp_active": amp_active,
            "epoch": epoch,
            "train_loss": four_digits(loss),
            "constant_score_loss": four_digits(start_loss),
            "loss_drop": four_digits(drop),
        },
        advice=(
            f"After {epoch} epoch(s) the train loss is {drop:.0%} below that of a constant 0.5 "
            f"score: the model barely learns. LR {flag_value(lr)} is below the seed's range {precision} "
            f"({flag_value(low)} to {flag_value(high)} at effective batch {effective_batch}); the advisor's LR "
            f"is {flag_value(new_lr)} (for fine-tuning a trained model the seed says {flag_value(tuning_low)} to "
            f"{flag_value(tuning_high)}). Continue this run at that LR, or start again with "
            f"`{new_run_command(run_dir, 'lr', f'--lr {flag_value(new_lr)}')}`."
        ),
        flags=f"fakedet resume {run_dir}{more} --lr {flag_value(new_lr)} --reset-lr{scheduler}",
    )


def _reversals(points: list[tuple[int, float]], swing: float) -> int:
    """How often a series changes direction, counting only moves of at least `swing`."""
    moves = [b - a for (_, a), (_, b) in pairwise(points)]
    big = [move for move in moves if abs(move) >= swing]
    return sum(1 for a, b in pairwise(big) if (a > 0) != (b > 0))


def unstable(
    history: Sequence[Row],
    lr: float,
    amp_active: bool,
    effective_batch: int,
    classification_weight: float,
    warmup_epochs: float,
    nonfinite_steps: int = 0,
    run_dir: str = "RUN_DIR",
) -> Finding | None:
    """Val loss spikes or swinging accuracy after the warmup, or non-finite steps.

    Args:
        warmup_epochs: the warmup the run really had (`effective_warmup`): only validations
            after it count, both sides of a jump.
        nonfinite_steps: optimizer steps skipped for a non-finite loss or gradient. A GradScaler's
            own overflow skips are not counted there, so every one is real.
    """
    after_warmup = [(e, v) for e, v in series(history, "val_loss") if e > warmup_epochs]
    pairs = pairwise(after_warmup)
    jumps = [(e, v / prev - 1.0) for (_, prev), (e, v) in pairs if prev > 0]
    spikes = [(e, jump) for e, jump in jumps if jump > SPIKE_JUMP]
    accuracy = [(e, v) for e, v in series(history, "val_accuracy") if e > warmup_epochs]
    reversals = _reversals(accuracy, ACCURACY_SWING)
    if not spikes and reversals < ACCURACY_REVERSALS and nonfinite_steps == 0:
        return None
    evidence: dict[str, float | int | bool | None] = {
        "val_loss_spikes": len(spikes),
        "largest_val_loss_jump": four_digits(max((j for _, j in jumps), default=0.0)),
        "accuracy_reversals": reversals,
        "nonfinite_steps": nonfinite_steps,
        "lr": lr,
        "classification_weight": classification_weight,
    }
    signs = []
    if spikes:
        epoch, jump = max(spikes, key=lambda spike: spike[1])
        evidence["spike_epoch"] = epoch
        signs.append(f"val loss jumped {jump:+.0%} at epoch {epoch}")
    if reversals >= ACCURACY_REVERSALS:
        signs.append(
            f"val accuracy changed direction {reversals} times by {ACCURACY_SWING:.0%} or more"
        )
    if nonfinite_steps:
        signs.append(f"{nonfinite_steps} optimizer step(s) were skipped as non-finite")
    new_weight = classification_weight * UNSTABLE_FACTOR
    flags = [f"--classification-weight {flag_value(new_weight)}"]
    high = seed_lr_range(amp_active, effective_batch)[1]
    lower_lr = lr * UNSTABLE_FACTOR
    if lr > high:  # above the seed's range, the LR is the likelier cause: lower both
        flags.append(f"--lr {flag_value(lower_lr)}")
        lr_text = f"and, as LR {flag_value(lr)} is above the seed's range (up to {flag_value(high)}), the LR"
    else:
        lr_text = f"then the LR ({flag_value(lr)} -> {flag_value(lower_lr)})"
    amp_text = ""
    if nonfinite_steps and amp_active:
        flags.append("--no-use-amp")
        amp_text = "; non-finite steps under AMP: try without it (the seed's advice)"
    return Finding(
        rule="unstable",
        severity="warning",
        evidence=evidence,
        advice=(
            f"Unstable training: {'; '.join(signs)}. Lower classification_weight "
            f"({flag_value(classification_weight)} -> {flag_value(new_weight)}, the seed's rule for "
            f"unstable training) {lr_text}{amp_text}."
        ),
        flags=new_run_command(run_dir, "stable", " ".join(flags)),
    )


def poor_separation(
    history: Sequence[Row], ranking_weight: float, run_dir: str = "RUN_DIR"
) -> Finding | None:
    """AUC low at the best epoch although the regression term shows the model learns."""
    best = best_row(history)
    if best is None:
        return None
    auc, regression = finite_number(best, "val_auc"), finite_number(best, "val_regression")
    if auc is None or regression is None:
        return None
    if auc >= POOR_AUC or regression >= LEARNING_REGRESSION:
        return None
    new_weight = ranking_weight * RAISE_FACTOR if ranking_weight > 0 else SEED_RANKING_WEIGHT
    return Finding(
        rule="poor_separation",
        severity="warning",
        evidence={
            "best_epoch": int(best["epoch"]),
            "val_auc": four_digits(auc),
            "val_ap": rounded_value(best, "val_ap"),
            "val_regression": four_digits(regression),
            "val_ranking": rounded_value(best, "val_ranking"),
            "ranking_weight": ranking_weight,
        },
        advice=(
            f"Poor separation of the classes: val AUC {auc:.3f} at the best epoch (epoch "
            f"{best['epoch']}) while the regression term ({regression:.3f}, a constant score "
            f"gives {CONSTANT_SCORE_REGRESSION}) shows the scores moved toward their labels: "
            f"real and fake realness still overlap. Raise ranking_weight "
            f"({flag_value(ranking_weight)} -> {flag_value(new_weight)}, the seed's rule)."
        ),
        flags=new_run_command(run_dir, "ranking", f"--ranking-weight {flag_value(new_weight)}"),
    )


def inaccurate_scores(
    history: Sequence[Row],
    regression_weight: float,
    calibration: Mapping[str, Any] | None = None,
    run_dir: str = "RUN_DIR",
) -> Finding | None:
    """Classes that separate but scores far from their labels, or a high calibration error.

    Args:
        calibration: the checkpoint's calibration (method, ece_before, ece_after, threshold,
            rule), or None when the run was not calibrated.
    """
    best = best_row(history)
    auc = finite_number(best, "val_auc") if best is not None else None
    regression = finite_number(best, "val_regression") if best is not None else None
    ece_before = finite_number(calibration, "ece_before") if calibration is not None else None
    ece_after = finite_number(calibration, "ece_after") if calibration is not None else None
    scores_off = (
        auc is not None
        and regression is not None
        and auc >= SEPARATING_AUC
        and regression >= HIGH_REGRESSION
    )
    images = finite_number(calibration, "n_images") if calibration is not None else None
    high_ece = HIGH_ECE + ece_noise_floor(images)
    raw_off = ece_before is not None and ece_before >= high_ece
    calibrated_off = ece_after is not None and ece_after >= high_ece
    if not (scores_off or raw_off or calibrated_off):
        return None
    new_weight = (
        regression_weight * RAISE_FACTOR if regression_weight > 0 else SEED_REGRESSION_WEIGHT
    )
    signs = []
    if scores_off:
        signs.append(
            f"val AUC {auc:.3f} separates the classes but the regression term is "
            f"{regression:.3f} (scores {math.sqrt(regression):.2f} from their labels, RMS)"
        )
    if raw_off or calibrated_off:
        method = calibration.get("method") if calibration is not None else None
        text = f"calibration error {ece_before:.3f}" if ece_before is not None else "calibration"
        if ece_after is not None:
            text += f" -> {ece_after:.3f} after {method or 'calibration'}"
        signs.append(text)
    # Calibration that brings the error down leaves only the raw scores off: a mild finding.
    fixed_by_calibration = raw_off and not scores_off and ece_after is not None
    severity: Severity = "info" if fixed_by_calibration and not calibrated_off else "warning"
    effect = (
        " Calibration corrects the scores that predict reports; the raw scores stay off."
        if severity == "info"
        else ""
    )
    return Finding(
        rule="inaccurate_scores",
        severity=severity,
        evidence={
            "best_epoch": int(best["epoch"]) if best is not None else None,
            "val_auc": four_digits(auc) if auc is not None else None,
            "val_regression": four_digits(regression) if regression is not None else None,
            "ece_before": ece_before,
            "ece_after": ece_after,
            "ece_threshold": four_digits(high_ece),
            "regression_weight": regression_weight,
        },
        advice=(
            f"Inaccurate scores: {'; '.join(signs)}. Raise regression_weight "
            f"({flag_value(regression_weight)} -> {flag_value(new_weight)}, the seed's rule).{effect}"
        ),
        flags=new_run_command(
            run_dir, "regression", f"--regression-weight {flag_value(new_weight)}"
        ),
    )


def overfitting(
    history: Sequence[Row],
    early_stopping_patience: int,
    hflip: bool,
    blur_prob: float,
    jpeg_prob: float,
    run_dir: str = "RUN_DIR",
) -> Finding | None:
    """Val loss above its best for several validations while the train loss kept falling."""
    best = best_row(history)
    if best is None:
        return None
    best_epoch, best_loss = int(best["epoch"]), float(best["val_loss"])
    after = [(e, v) for e, v in series(history, "val_loss") if e > best_epoch]
    train = dict(series(history, "train_loss"))
    if len(after) < OVERFIT_VALIDATIONS or best_epoch not in train:
        return None
    last_epoch, last_loss = after[-1]
    rise = last_loss / best_loss - 1.0 if best_loss > 0 else 0.0
    train_fell = train.get(last_epoch, math.inf) < train[best_epoch]
    if rise < OVERFIT_MIN_RISE or not train_fell:
        return None
    flags = [f"--epochs {best_epoch}"]
    if not hflip:
        flags.append("--hflip")
    if blur_prob < AUGMENT_PROBABILITY:
        flags.append(f"--blur-prob {flag_value(AUGMENT_PROBABILITY)}")
    if jpeg_prob < AUGMENT_PROBABILITY:
        flags.append(f"--jpeg-prob {flag_value(AUGMENT_PROBABILITY)}")
    if early_stopping_patience == 0 or early_stopping_patience > OVERFIT_VALIDATIONS:
        flags.append(f"--early-stopping-patience {OVERFIT_VALIDATIONS}")
    return Finding(
        rule="overfitting",
        severity="warning",
        evidence={
            "best_epoch": best_epoch,
            "best_val_loss": four_digits(best_loss),
            "last_epoch": last_epoch,
            "last_val_loss": four_digits(last_loss),
            "val_loss_rise": four_digits(rise),
            "train_loss_at_best": four_digits(train[best_epoch]),
            "train_loss_last": four_digits(train[last_epoch]),
            "early_stopping_patience": early_stopping_patience,
        },
        advice=(
            f"Overfitting: val loss rose {rise:.0%} over the {len(after)} validations after its "
            f"best (epoch {best_epoch}, {best_loss:.4f}) while the train loss kept falling "
            f"({train[best_epoch]:.4f} -> {train[last_epoch]:.4f}). Use "
            f"{PurePath(run_dir) / 'best_model.pt'} (epoch {best_epoch}); to train again, stop "
            "sooner and augment more."
        ),
        flags=new_run_command(run_dir, "regularized", " ".join(flags)),
    )
