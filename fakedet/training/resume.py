"""Continuing a run from a checkpoint: which settings may change, and what the new run is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakedet.checkpoints.schema import Checkpoint
from fakedet.config import TrainingConfig
from fakedet.config_files import build_config, config_to_dict
from fakedet.errors import ConfigError, DataError, UsageError

# What a resume may change; everything else comes from the checkpoint's config.
RESUME_OVERRIDES = (
    "output_dir",
    "data_root",
    "device",
    "num_workers",
    "batch_size",
    "gradient_accumulation_steps",
)
# These change the steps per epoch, which a resume can absorb only at an epoch boundary.
EPOCH_BOUNDARY_OVERRIDES = ("batch_size", "gradient_accumulation_steps")


def resume_config(
    checkpoint: Checkpoint,
    overrides: dict[str, Any],
    extra_epochs: int | None,
    new_lr: float | None,
) -> TrainingConfig:
    """The config of the continued run.

    Args:
        checkpoint: the checkpoint to continue.
        overrides: settings given again on the command line (only RESUME_OVERRIDES may differ).
        extra_epochs: `--epochs N`: train N more epochs; None finishes the run as configured.
        new_lr: `--lr X` with --reset-lr / --reset-scheduler: the new base LR.

    Raises:
        ConfigError: a setting that cannot change on resume (mode, img_size, ...).
        DataError: the data root no longer exists.
        UsageError: nothing left to train without --epochs.
    """
    state = checkpoint.state
    saved = config_to_dict(checkpoint.config)
    # What the run really used: a batch of "auto" was resolved to a number.
    used = {**saved, "batch_size": checkpoint.batch_size}
    for key, value in overrides.items():
        changed = str(value) != str(used[key]) if key in used else True
        if key in EPOCH_BOUNDARY_OVERRIDES and state.batches_done and changed:
            raise ConfigError(
                f"{key} cannot change in the middle of an epoch (the checkpoint stopped at "
                f"batch {state.batches_done} of epoch {state.epoch}); resume without "
                "it, or from the checkpoint of an earlier epoch."
            )
        if key in RESUME_OVERRIDES:
            saved[key] = value
            continue
        if str(value) != str(saved[key]):
            raise ConfigError(
                f"{key} cannot change when resuming (the checkpoint has {saved[key]!r}, "
                f"you gave {value!r}); start a new run with fakedet train, or drop the flag."
            )
    data_root = Path(saved["data_root"])
    if not data_root.is_dir():
        raise DataError(
            f"The data root {data_root} recorded in the checkpoint no longer exists; "
            "pass --data-root with its new location."
        )
    done = state.completed_epochs
    if extra_epochs is not None:
        saved["epochs"] = done + extra_epochs
    else:
        patience = checkpoint.config.early_stopping_patience
        if patience and state.epochs_without_improvement >= patience:
            raise UsageError(
                f"This run early-stopped after epoch {done} (no val_loss improvement in {patience} "
                "validations); pass --epochs N to train N more epochs."
            )
        if done >= checkpoint.config.epochs:
            raise UsageError(
                f"This run already finished all {saved['epochs']} epochs; "
                "pass --epochs N to train N more epochs."
            )
    if new_lr is not None:
        saved["lr"] = new_lr
        saved["min_lr"] = min(checkpoint.config.min_lr, new_lr)
    return build_config(saved)
