"""The doctor's rules on how a run moved: not learning, unstable, overfitting. Each a pure
function of a run's history and a few config numbers, with its thresholds as named constants
that say why."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import PurePath

from fakedet.advisor import advised_lr
from fakedet.doctor.findings import (
    SEED_LR_RANGE_FINE_TUNING,
    Finding,
    Row,
    best_row,
    flag_value,
    four_digits,
    new_run_command,
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
