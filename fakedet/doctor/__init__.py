"""The doctor: advice from a run's own history, the seed's tuning table turned into rules.

Each rule is a pure function of plain values (history rows as in training_history.json, a few
config numbers) that returns a `Finding` or None; `diagnose` runs them all for one run. Torch-free,
so the end of training, `inspect-checkpoint` and `fakedet doctor` can all call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from fakedet.advisor import HardwareInfo, advised_lr
from fakedet.config import TrainingConfig
from fakedet.doctor.findings import (
    Finding,
    Row,
    amp_runs,
    constant_score_loss,
    effective_warmup,
    seed_lr_range,
    series,
)
from fakedet.doctor.machine import underused_hardware
from fakedet.doctor.progress import NOT_LEARNING_MIN_DROP, not_learning, overfitting, unstable
from fakedet.doctor.scores import inaccurate_scores, poor_separation


def diagnose(
    history: Sequence[Row],
    config: TrainingConfig,
    nonfinite_steps: int = 0,
    calibration: Mapping[str, Any] | None = None,
    hardware: HardwareInfo | None = None,
    run_dir: str | PurePath | None = None,
    *,
    amp_active: bool | None = None,
    batch_size: int | None = None,
) -> list[Finding]:
    """Every rule over one run; warnings first.

    Args:
        history: the run's rows (training_history.json, or a checkpoint's state.history).
        config: the run's config.
        nonfinite_steps: optimizer steps skipped for non-finite values.
        calibration: the checkpoint's calibration dict, if any.
        hardware: the machine the run trained on (device set to the run's); None skips the
            hardware rule.
        run_dir: the run folder, for the commands; "RUN_DIR" when None.
        amp_active: whether autocast really ran; None derives it from `hardware` (`amp_runs`).
        batch_size: the batch the run used, when the config says "auto" (default: the seed's 16).

    Returns:
        The findings that apply; empty for a healthy run.
    """
    run = str(run_dir) if run_dir is not None else "RUN_DIR"
    if amp_active is None:
        amp_active = amp_runs(config.use_amp, config.amp_dtype, hardware)
    if batch_size is None:
        batch_size = config.batch_size if isinstance(config.batch_size, int) else 16
    effective_batch = batch_size * config.gradient_accumulation_steps
    start_loss = constant_score_loss(
        config.regression_weight,
        config.classification_weight,
        config.ranking_weight,
        config.ranking_margin,
    )
    warmup = effective_warmup(config.warmup_epochs, config.epochs)
    findings = [
        not_learning(
            history,
            config.lr,
            amp_active,
            effective_batch,
            start_loss,
            config.epochs,
            config.early_stopping_patience,
            run,
        ),
        unstable(
            history,
            config.lr,
            amp_active,
            effective_batch,
            config.classification_weight,
            warmup,
            nonfinite_steps,
            run,
        ),
        poor_separation(history, config.ranking_weight, run),
        inaccurate_scores(history, config.regression_weight, calibration, run),
        overfitting(
            history,
            config.early_stopping_patience,
            config.hflip,
            config.blur_prob,
            config.jpeg_prob,
            run,
        ),
    ]
    if hardware is not None:
        findings.append(
            underused_hardware(
                [speed for _, speed in series(history, "images_per_sec")],
                config.num_workers,
                config.use_amp,
                hardware.device,
                hardware.os,
                hardware.cpu_cores,
                hardware.cpu_bf16,
                hardware.compute_capability,
                run,
                config.mode if config.backbone is None else "backbone",
            )
        )
    found = [finding for finding in findings if finding is not None]
    return sorted(found, key=lambda finding: finding.severity != "warning")


__all__ = [
    "NOT_LEARNING_MIN_DROP",
    "Finding",
    "advised_lr",
    "amp_runs",
    "constant_score_loss",
    "diagnose",
    "effective_warmup",
    "inaccurate_scores",
    "not_learning",
    "overfitting",
    "poor_separation",
    "seed_lr_range",
    "underused_hardware",
    "unstable",
]
