"""The output folder of a run: checkpoints, history, config, dataset summary, skipped files, plots.

Only the main process writes (rank 0 under DDP); on the other ranks every method does nothing,
so callers never ask which rank they are on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakedet.checkpoints.calibration import Calibration
from fakedet.checkpoints.files import load_checkpoint, save_checkpoint
from fakedet.checkpoints.schema import Checkpoint
from fakedet.config import TrainingConfig
from fakedet.config_files import dump_config_yaml
from fakedet.evaluation.validation import Scores
from fakedet.io import atomic_write_text, ensure_folder
from fakedet.sources.samples import DatasetIndex


class Checkpointer:
    """Writes a run's files into `output_dir`, atomically, on the main process only."""

    def __init__(self, output_dir: Path, is_main: bool = True, save_every: int = 0) -> None:
        self.output_dir = output_dir
        self.is_main = is_main
        self.save_every = save_every
        self.saved_epoch: int | None = None  # the last epoch latest_model.pt holds, this run
        self.audit: dict[str, Any] | None = None  # the dataset audit, kept in every summary
        if is_main:
            ensure_folder(output_dir)

    @property
    def latest(self) -> Path:
        return self.output_dir / "latest_model.pt"

    def write_config(self, config: TrainingConfig) -> None:
        if self.is_main:
            atomic_write_text(self.output_dir / "config.yaml", dump_config_yaml(config))

    def write_dataset_summary(
        self, index: DatasetIndex, data_root: Path, skipped: dict[str, str] | None = None
    ) -> None:
        """dataset_summary.json, and skipped_files.txt when files were left out."""
        if not self.is_main:
            return
        summary = index.summary()
        if skipped is not None:  # the files met at batch time too, at the end of a run
            summary["skipped"] = len(skipped)
            summary["skipped_files"] = [
                {"path": path, "reason": reason} for path, reason in sorted(skipped.items())
            ]
            if skipped:
                lines = [f"{path}\t{reason}" for path, reason in sorted(skipped.items())]
                atomic_write_text(self.output_dir / "skipped_files.txt", "\n".join(lines) + "\n")
        summary["data_root"] = str(data_root)
        if self.audit is not None:
            summary["audit"] = self.audit
        atomic_write_text(
            self.output_dir / "dataset_summary.json", json.dumps(summary, indent=2) + "\n"
        )

    def save_epoch(self, checkpoint: Checkpoint, improved: bool) -> None:
        """latest_model.pt, best_model.pt when val_loss improved, every-N copies, the history."""
        epoch = checkpoint.state.epoch
        self.saved_epoch = epoch
        if not self.is_main:
            return
        save_checkpoint(self.latest, checkpoint)
        if self.save_every and epoch % self.save_every == 0:
            save_checkpoint(self.output_dir / f"checkpoint_epoch_{epoch}.pt", checkpoint)
        if improved:
            save_checkpoint(self.output_dir / "best_model.pt", checkpoint)
        atomic_write_text(
            self.output_dir / "training_history.json",
            json.dumps(checkpoint.state.history, indent=2) + "\n",
        )

    def save_latest(self, checkpoint: Checkpoint) -> Path:
        """latest_model.pt alone: an interruption, or the last good state before a stop."""
        if self.is_main:
            save_checkpoint(self.latest, checkpoint)
        return self.latest

    def store_calibration(self, path: Path, calibration: Calibration) -> None:
        """Add a fitted calibration to a checkpoint this run wrote (rewritten atomically)."""
        if not self.is_main:
            return
        checkpoint = load_checkpoint(path)
        checkpoint.calibration = calibration
        save_checkpoint(path, checkpoint)

    def write_plots(
        self, history: list[dict[str, Any]], scores: Scores | None, caption: str
    ) -> list[Path]:
        """The run's figures; a failure to draw raises, and the trainer reports it as a warning."""
        if not self.is_main:
            return []
        from fakedet import plots  # deferred: matplotlib is slow to import

        written = [plots.plot_curves(history, self.output_dir / "curves.png")] if history else []
        if scores is not None:
            written += plots.write_evaluation_plots(
                self.output_dir, scores.paths, scores.scores, scores.labels, caption
            )
        return written
