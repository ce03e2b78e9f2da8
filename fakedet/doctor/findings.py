"""What the doctor's rules share: the Finding they return and helpers over history rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any, Literal

from fakedet.advisor import (
    SEED_LR_RANGE_AMP,
    SEED_LR_RANGE_FP32,
    TARGET_EFFECTIVE_BATCH,
    HardwareInfo,
)
from fakedet.hardware import cuda_amp_dtype

Severity = Literal["info", "warning"]
Row = Mapping[str, Any]

# The seed's LR table lives in the advisor; like it, the doctor scales the ranges by effective
# batch / TARGET_EFFECTIVE_BATCH, so the advisor's LR always lies inside the range checked here.
SEED_LR_RANGE_FINE_TUNING = (1e-5, 5e-5)

# Where every run starts: a model that scores every image 0.5 with equal logits has an MSE of
# 0.25 against 0/1 labels, a cross-entropy of ln 2 and a ranking hinge of exactly the margin. The
# demo's first batch (0.507 at the defaults, where this gives 0.518) confirms it.
CONSTANT_SCORE_REGRESSION = 0.25
CONSTANT_SCORE_CLASSIFICATION = math.log(2.0)


@dataclass(frozen=True)
class Finding:
    """One piece of advice: which rule, how serious, the numbers behind it, what to try."""

    rule: str
    severity: Severity
    evidence: dict[str, float | int | bool | None]
    advice: str
    flags: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flag_value(value: float) -> str:
    """A number as a flag value: 3 significant digits, no trailing zeros (1e-04 -> 0.0001)."""
    return f"{value:.3g}"


def four_digits(value: float) -> float:
    return float(f"{value:.4g}")


def finite_number(row: Row, key: str) -> float | None:
    """A finite number under `key`, else None: rows lack val_ keys between validations, and the
    history stores NaN as null."""
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def series(history: Sequence[Row], key: str) -> list[tuple[int, float]]:
    """(epoch, value) of the rows where `key` holds a finite number."""
    found = []
    for row in history:
        value = finite_number(row, key)
        if value is not None:
            found.append((int(row["epoch"]), value))
    return found


def best_row(history: Sequence[Row]) -> Row | None:
    """The validated row of lowest val_loss: what best_model.pt holds."""
    validated = [row for row in history if finite_number(row, "val_loss") is not None]
    return min(validated, key=lambda row: row["val_loss"], default=None)


def rounded_value(row: Row, key: str) -> float | None:
    value = finite_number(row, key)
    return four_digits(value) if value is not None else None


def stopped_early(history: Sequence[Row], patience: int) -> bool:
    """Whether early stopping ended the run: `patience` validations after the best one."""
    best = best_row(history)
    if not patience or best is None:
        return False
    return sum(1 for epoch, _ in series(history, "val_loss") if epoch > best["epoch"]) >= patience


def new_run_command(run_dir: str, suffix: str, flags: str) -> str:
    """The run again from its own config.yaml with `flags` changed, into a sibling folder."""
    config = PurePath(run_dir) / "config.yaml"
    return f"fakedet train --config {config} {flags} --output-dir {run_dir}-{suffix}"


def effective_warmup(warmup_epochs: float, epochs: int) -> float:
    """The warmup the run really had: the schedule cuts one as long as the run to half of it."""
    return warmup_epochs if warmup_epochs < epochs else epochs / 2


def seed_lr_range(amp_active: bool, effective_batch: int) -> tuple[float, float]:
    """The seed's LR range for the precision that ran, scaled to the effective batch."""
    low, high = SEED_LR_RANGE_AMP if amp_active else SEED_LR_RANGE_FP32
    scale = effective_batch / TARGET_EFFECTIVE_BATCH
    return low * scale, high * scale


def constant_score_loss(
    regression_weight: float, classification_weight: float, ranking_weight: float, margin: float
) -> float:
    """The loss of a model that scores every image 0.5: where training starts."""
    return (
        regression_weight * CONSTANT_SCORE_REGRESSION
        + classification_weight * CONSTANT_SCORE_CLASSIFICATION
        + ranking_weight * margin
    )


def amp_runs(use_amp: bool, amp_dtype: str, info: HardwareInfo | None) -> bool:
    """Whether `--use-amp` really autocasts on `info` (the rules of fakedet/runtime.py).

    Unknown hardware (None) takes the config's word.
    """
    if not use_amp:
        return False
    if info is None:
        return True
    if info.device == "cuda":
        capability = info.compute_capability or (0, 0)
        return cuda_amp_dtype(capability, amp_dtype) is not None
    if info.device == "cpu":
        return info.cpu_bf16 and amp_dtype != "fp16"
    return False
