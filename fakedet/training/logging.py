"""Where the engine's progress goes: a Reporter interface the CLI fills, and TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class Reporter:
    """Receives the run's events; the engine never prints. Every method defaults to doing nothing."""

    def warning(self, text: str) -> None:
        """A one-line warning (AMP unavailable, warmup shortened...)."""

    def info(self, text: str) -> None:
        """A one-line note."""

    def dataset(self, summary: dict[str, Any]) -> None:
        """The dataset summary, before training starts."""

    def run_start(self, info: dict[str, Any]) -> None:
        """Device, model, parameters, effective batch, steps: what the run is about to do."""

    def epoch_start(self, epoch: int, epochs: int, num_batches: int) -> None:
        """An epoch begins (1-based), with its number of batches."""

    def batch_end(self, done: int, values: dict[str, float]) -> None:
        """`done` batches of the epoch are finished; values: loss, lr, img_per_s."""

    def validation_start(self, num_batches: int) -> None:
        """Validation begins."""

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """The epoch's merged train/val metrics row (what training_history.json gets)."""

    def run_end(self, result: dict[str, Any]) -> None:
        """The run is over: why it stopped, best epoch and metrics, output folder."""


class TensorBoardLogger:
    """Scalars under fixed train/ and val/ tags; a no-op when disabled or on non-zero ranks."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict[str, float | None], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def epoch(self, row: dict[str, Any], nonfinite_steps: int) -> None:
        """An epoch's history row under train/ and val/ tags, at the epoch number."""

        def finite(value: Any) -> float | None:
            return value if isinstance(value, float) and math.isfinite(value) else None

        tags = {
            "train/total": row.get("train_loss"),
            "train/regression": row.get("train_regression"),
            "train/classification": row.get("train_classification"),
            "train/ranking": row.get("train_ranking"),
            "train/learning_rate": row.get("lr"),
            "train/nonfinite_steps": float(nonfinite_steps),
        }
        if "val_loss" in row:
            tags.update(
                {
                    "val/total": row["val_loss"],
                    "val/regression": row["val_regression"],
                    "val/classification": row["val_classification"],
                    "val/ranking": row["val_ranking"],
                    "val/accuracy": row["val_accuracy"],
                    "val/auc": finite(row["val_auc"]),
                    "val/ap": finite(row["val_ap"]),
                }
            )
        self.scalars(tags, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
