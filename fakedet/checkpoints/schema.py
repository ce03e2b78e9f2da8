"""The typed state of a run and the checkpoint schema: the one reader and writer of its keys.

A checkpoint file holds the seed's keys (`epoch`, `global_step`, `model_state_dict`,
`optimizer_state_dict`, `scheduler_state_dict`, `scaler_state_dict`, `best_val_loss`,
`train_history`, `val_history`) plus ours (`config`, `mode`, `fakedet_version`, RNG states,
early-stopping and mid-epoch counters). It is parsed once into a `Checkpoint` here; past this
module nothing reads a checkpoint key by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import ValidationError

from fakedet import __version__
from fakedet.checkpoints.calibration import Calibration
from fakedet.config import TrainingConfig
from fakedet.config_files import config_to_dict, describe_validation_error
from fakedet.errors import CheckpointError
from fakedet.models.backbones.spec import BackboneChoice, backbone_choice
from fakedet.models.losses import zero_loss_sums

# What every fakedet checkpoint holds (the seed's keys plus ours).
REQUIRED_KEYS = (
    "epoch",
    "global_step",
    "model_state_dict",
    "optimizer_state_dict",
    "scheduler_state_dict",
    "scaler_state_dict",
    "best_val_loss",
    "train_history",
    "val_history",
    "config",
    "mode",
    "fakedet_version",
)


@dataclass
class TrainState:
    """Where a run stands; everything the loop changes besides the weights and the optimizer."""

    epoch: int = 0  # the last epoch started (finished unless batches_done > 0)
    global_step: int = 0  # optimizer steps taken
    batches_done: int = 0  # of the current epoch: > 0 only in a checkpoint saved mid-epoch
    best_val_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    nonfinite_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one merged row per epoch
    # Running loss sums of the current epoch, so a mid-epoch resume reports the whole epoch.
    epoch_sums: dict[str, float] = field(default_factory=zero_loss_sums)
    # Tensors: left out of ==, which would have to compare them element-wise.
    rng_state: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def completed_epochs(self) -> int:
        """Epochs fully trained (an interrupted epoch does not count)."""
        return self.epoch - (1 if self.batches_done else 0)

    @property
    def best_row(self) -> dict[str, Any]:
        return next((row for row in self.history if row["epoch"] == self.best_epoch), {})

    def capture_rng(self) -> None:
        self.rng_state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            self.rng_state["cuda"] = torch.cuda.get_rng_state_all()

    def restore_rng(self) -> None:
        if "torch" in self.rng_state:
            torch.set_rng_state(self.rng_state["torch"])
        if "cuda" in self.rng_state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng_state["cuda"])


def split_history(history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """The seed's train_history and val_history from merged rows."""
    train_rows = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in history]
    val_rows = [
        {"epoch": row["epoch"], **{k: v for k, v in row.items() if k.startswith("val_")}}
        for row in history
        if "val_loss" in row
    ]
    return train_rows, val_rows


def merge_history(train_rows: list[dict], val_rows: list[dict]) -> list[dict[str, Any]]:
    """Merged per-epoch rows from the seed's two lists (the inverse of `split_history`)."""
    val_by_epoch = {row["epoch"]: row for row in val_rows}
    merged = []
    for row in train_rows:
        val = {k: v for k, v in val_by_epoch.get(row["epoch"], {}).items() if k != "epoch"}
        merged.append({**row, **val})
    return merged


@dataclass
class Checkpoint:
    """A parsed checkpoint: the run's config, its state, and the components' state dicts."""

    config: TrainingConfig
    state: TrainState
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    scaler_state: dict[str, Any]
    batch_size: int  # the batch the run trained with (resolved when the config says "auto")
    steps_per_epoch: int | None  # None in checkpoints that predate it
    fakedet_version: str = __version__
    torch_version: str = str(torch.__version__)
    # How to read the score; None: fitted at the end of training, or a checkpoint from 0.1.0.
    calibration: Calibration | None = None

    @property
    def img_size(self) -> int:
        return self.config.img_size

    @property
    def model_name(self) -> str:
        """The registered model, or the backbone's SOURCE:NAME."""
        return self.config.backbone or self.config.mode

    @property
    def backbone(self) -> BackboneChoice | None:
        """What `build_model` needs to rebuild a backbone detector; None for built-in models."""
        return backbone_choice(self.config)

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so `torch.load(weights_only=True)` reads it back."""
        state = self.state
        train_history, val_history = split_history(state.history)
        return {
            "epoch": state.epoch,
            "global_step": state.global_step,
            "batches_done": state.batches_done,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_sums": dict(state.epoch_sums),
            "model_state_dict": self.model_state,
            "optimizer_state_dict": self.optimizer_state,
            "scheduler_state_dict": self.scheduler_state,
            "scaler_state_dict": self.scaler_state,
            "best_val_loss": state.best_val_loss,
            "best_epoch": state.best_epoch,
            "epochs_without_improvement": state.epochs_without_improvement,
            "nonfinite_steps": state.nonfinite_steps,
            "train_history": train_history,
            "val_history": val_history,
            "config": config_to_dict(self.config),
            "mode": self.config.mode,
            "img_size": self.config.img_size,
            "fakedet_version": self.fakedet_version,
            "torch_version": self.torch_version,
            "rng_state": state.rng_state,
            **({"calibration": self.calibration.to_dict()} if self.calibration else {}),
        }

    @classmethod
    def from_dict(cls, raw: object, source: str) -> Checkpoint:
        """Parse a loaded checkpoint (this version's or fakedet 0.1.0's).

        Raises:
            CheckpointError: not a dict, keys missing, or a stored config this version rejects.
        """
        if not isinstance(raw, dict):
            raise CheckpointError(
                f"{source} is not a fakedet checkpoint (it holds a {type(raw).__name__}, not a "
                "dict)."
            )
        missing = [key for key in REQUIRED_KEYS if key not in raw]
        if missing:
            raise CheckpointError(
                f"{source} is not a fakedet checkpoint: it lacks {', '.join(missing)} "
                "(a bare state_dict or another tool's file?)."
            )
        version = str(raw["fakedet_version"])
        try:
            config = TrainingConfig.model_validate(raw["config"])
            state = TrainState(
                epoch=int(raw["epoch"]),
                global_step=int(raw["global_step"]),
                batches_done=int(raw.get("batches_done", 0)),
                best_val_loss=float(raw["best_val_loss"]),
                best_epoch=int(raw.get("best_epoch", 0)),
                epochs_without_improvement=int(raw.get("epochs_without_improvement", 0)),
                nonfinite_steps=int(raw.get("nonfinite_steps", 0)),
                history=merge_history(list(raw["train_history"]), list(raw["val_history"])),
                epoch_sums={**zero_loss_sums(), **raw.get("epoch_sums", {})},
                rng_state=dict(raw.get("rng_state", {})),
            )
            calibration = (
                Calibration.from_dict(raw["calibration"]) if "calibration" in raw else None
            )
        except (ValidationError, TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, ValidationError):
                first = describe_validation_error(exc)[:300]
            else:
                first = f"{exc.__class__.__name__}: {exc}"[:160]
            raise CheckpointError(
                f"{source} was written by fakedet {version} with contents this version cannot "
                f"read ({first}); use the fakedet version that wrote it."
            ) from None
        saved_batch = raw.get("batch_size", config.batch_size)
        return cls(
            config=config,
            state=state,
            model_state=raw["model_state_dict"],
            optimizer_state=raw["optimizer_state_dict"],
            scheduler_state=raw["scheduler_state_dict"],
            scaler_state=raw["scaler_state_dict"] or {},
            # A config of batch_size "auto" without a recorded batch: the seed's default.
            batch_size=int(saved_batch) if str(saved_batch).isdigit() else 16,
            steps_per_epoch=raw.get("steps_per_epoch"),
            fakedet_version=version,
            torch_version=str(raw.get("torch_version", "unknown")),
            calibration=calibration,
        )
