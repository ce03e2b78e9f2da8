"""The trainer's side jobs as callbacks: each one a class with named hooks, called in list order.

The loop (`trainer.py`) knows only the hooks; a new side job is a new callback, not a new line in
the loop. Hooks receive the trainer, whose `state`, `parts`, `config`, `checkpointer` and
`reporter` they may read; a callback that ends the run sets `trainer.stop_reason`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakedet.evaluation.validation import Scores

if TYPE_CHECKING:
    from fakedet.config import TrainingConfig
    from fakedet.training.trainer import Trainer


class Callback:
    """Every hook is optional: the base class does nothing."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this process's run (also after a resume)."""

    def on_optimizer_step(self, trainer: Trainer, loss: Any) -> None:
        """After each optimizer step; `loss` is the last batch's total loss as a tensor."""

    def on_validation_end(self, trainer: Trainer, epoch: int, scores: Scores) -> None:
        """After a validation pass, before the epoch's row is final."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        """After an epoch's history row is recorded (`improved`: a new best val loss)."""

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        """After the last epoch; may add keys to `result`."""

    def close(self) -> None:
        """Release files and writers; called on every path out of the run."""


class TensorBoard(Callback):
    """Scalars under train/ and val/ tags: the batch loss per optimizer step, the history row per
    epoch. Writes only where `log_dir` is given (rank 0)."""

    def __init__(self, log_dir: Path | None) -> None:
        from fakedet.training.logging import TensorBoardLogger

        self.logger = TensorBoardLogger(log_dir)

    def on_optimizer_step(self, trainer: Trainer, loss: Any) -> None:
        if self.logger.writer is not None and loss is not None:
            # .item() waits for the GPU, so it is only paid when a writer exists.
            self.logger.scalars({"train/batch_loss": loss.item()}, trainer.state.global_step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        self.logger.epoch(row, trainer.state.nonfinite_steps)

    def close(self) -> None:
        self.logger.close()


class SaveCheckpoints(Callback):
    """latest_model.pt every epoch, best_model.pt on a new best, every-N copies."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        trainer.checkpointer.save_epoch(trainer.checkpoint(), improved)


class EarlyStopping(Callback):
    """Ends the run after `patience` validations without a lower val loss (0: never)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any], improved: bool) -> None:
        if self.patience and trainer.state.epochs_without_improvement >= self.patience:
            trainer.stop_reason = (
                f"early stopping: no val_loss improvement in {self.patience} validations"
            )


class KeepScores(Callback):
    """The validation scores the end of the run needs: of the best epoch when this process saw
    it, and of the last validated epoch (a resumed run may have found its best before)."""

    def __init__(self) -> None:
        self.best: Scores | None = None
        self.last: tuple[int, Scores] | None = None

    def on_validation_end(self, trainer: Trainer, epoch: int, scores: Scores) -> None:
        self.last = (epoch, scores)
        if trainer.state.best_epoch == epoch:
            self.best = scores


class Plots(Callback):
    """The run's figures at the end; a failure to draw is a warning, never a failed run."""

    def __init__(self, scores: KeepScores) -> None:
        self.scores = scores

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        if self.scores.best is not None:
            scores, caption = self.scores.best, f"best epoch {trainer.state.best_epoch}"
        elif self.scores.last is not None:
            scores, caption = self.scores.last[1], f"epoch {self.scores.last[0]}"
        else:
            scores, caption = None, ""
        try:
            written = trainer.checkpointer.write_plots(trainer.state.history, scores, caption)
        except Exception as exc:
            trainer.reporter.warning(f"could not draw the plots ({exc.__class__.__name__}: {exc})")
            written = []
        result["plots"] = [path.name for path in written]


class Calibrate(Callback):
    """Fits the calibration and threshold on the val scores of the models in latest_model.pt and
    best_model.pt and stores them there; `result["calibration"]` is the latest's, in words. A
    failed fit (one class in val) is a warning: the run itself succeeded."""

    def __init__(self, scores: KeepScores, method: str, rule: str, data_root: str) -> None:
        self.scores, self.method, self.rule, self.data_root = scores, method, rule, data_root
        self.fitted: Any = None  # the Calibration stored in latest_model.pt (else best_model.pt)

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        from fakedet.errors import FakedetError
        from fakedet.evaluation.calibration import fit_calibration

        checkpointer = trainer.checkpointer
        fits = []
        if self.scores.last is not None:
            fits.append((checkpointer.latest, self.scores.last[1]))
        if self.scores.best is not None:
            fits.append((checkpointer.output_dir / "best_model.pt", self.scores.best))
        for path, scores in fits:
            try:
                calibration = fit_calibration(
                    scores.scores,
                    scores.labels,
                    self.method,
                    self.rule,
                    fitted_on=f"the val split ({self.data_root})",
                    paths=scores.paths,
                )
            except FakedetError as error:
                trainer.reporter.warning(f"no calibration stored in {path.name}: {error}")
                continue
            checkpointer.store_calibration(path, calibration)
            self.fitted = self.fitted or calibration
        result["calibration"] = self.fitted.describe() if self.fitted else None


class Doctor(Callback):
    """The doctor's findings on the finished run's history, into `result["findings"]`."""

    def __init__(self, calibrate: Calibrate | None) -> None:
        self.calibrate = calibrate

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        from dataclasses import replace

        from fakedet import advisor, doctor

        calibration = self.calibrate.fitted if self.calibrate is not None else None
        parts = trainer.parts
        findings = doctor.diagnose(
            trainer.state.history,
            trainer.config,
            trainer.state.nonfinite_steps,
            calibration=calibration.to_dict() if calibration else None,
            hardware=replace(advisor.detect_hardware(), device=parts.runtime.device.type),
            run_dir=trainer.checkpointer.output_dir,
            amp_active=parts.runtime.precision.enabled,  # whether autocast really ran
            batch_size=parts.batch_size,
        )
        result["findings"] = [finding.as_dict() for finding in findings]


def default_callbacks(config: TrainingConfig, log_dir: Path | None = None) -> list[Callback]:
    """What `fakedet train` runs around the loop, in order: keep the val scores, TensorBoard
    (when `log_dir` is given), save checkpoints, early stopping, then at the end plots (when the
    config asks), calibration and the doctor."""
    scores = KeepScores()
    calibrate = Calibrate(
        scores, config.calibration_method, config.threshold_rule, str(config.data_root)
    )
    callbacks: list[Callback] = [scores, TensorBoard(log_dir), SaveCheckpoints()]
    callbacks.append(EarlyStopping(config.early_stopping_patience))
    if config.plots:
        callbacks.append(Plots(scores))
    return [*callbacks, calibrate, Doctor(calibrate)]
