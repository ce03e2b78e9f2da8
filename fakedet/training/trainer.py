"""The training loop: epochs of accumulated, clipped, (auto)cast steps, validation, early stopping.

The trainer receives its parts (`fakedet/training/build.py`), a state, a checkpointer and a reporter; it
builds nothing and writes files only through the checkpointer.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Sequence
from typing import Any

import torch

from fakedet.checkpoints.schema import Checkpoint, TrainState
from fakedet.config import TrainingConfig
from fakedet.data.transforms import pixels_to_float
from fakedet.distributed.signals import StopSignals, TrainingInterrupted
from fakedet.distributed.torchrun import any_rank, barrier, gather, sync_buffers
from fakedet.errors import TrainingError
from fakedet.evaluation.validation import Scores, evaluate
from fakedet.io import json_safe
from fakedet.models.loading import forward_batch
from fakedet.models.losses import LossSums, mean_loss_terms, zero_loss_sums
from fakedet.training.build import TrainingParts
from fakedet.training.callbacks import Callback, default_callbacks
from fakedet.training.checkpointer import Checkpointer
from fakedet.training.device_decode import decode_on_device
from fakedet.training.logging import Reporter

# How often the loop reads the device on the host, in optimizer steps (and at every epoch's end):
# the running loss for the progress display, the count of skipped steps, the stop signal. Between
# reads a step never waits for the device, so an accelerator's queue stays full; on a CPU a read
# costs nothing, so it reads every step.
ACCELERATOR_READ_EVERY = 32


def accumulation_window(
    batch_index: int, accumulation: int, batches_per_epoch: int
) -> tuple[int, bool]:
    """The size of the accumulation window holding `batch_index`, and whether it ends there.

    Windows restart every epoch; the last one may be partial (5 batches with accumulation 2 are
    windows of 2, 2 and 1), and its loss is divided by its real size, not by `accumulation`.
    """
    window_start = batch_index - batch_index % accumulation
    window_size = min(accumulation, batches_per_epoch - window_start)
    return window_size, batch_index == window_start + window_size - 1


class Trainer:
    """Runs the remaining epochs of `state` with `parts`; `fit()` returns the run's result.

    Side jobs (saving, TensorBoard, early stopping, plots, calibration, the doctor) are
    `callbacks`, called at named hooks; by default those of `default_callbacks(config)`.
    """

    def __init__(
        self,
        config: TrainingConfig,
        parts: TrainingParts,
        state: TrainState,
        checkpointer: Checkpointer,
        reporter: Reporter | None = None,
        callbacks: Sequence[Callback] | None = None,
        stop: StopSignals | None = None,
    ) -> None:
        self.config = config
        self.parts = parts
        self.state = state
        self.checkpointer = checkpointer
        self.reporter = reporter or Reporter()
        self.callbacks = list(default_callbacks(config) if callbacks is None else callbacks)
        self.stop = stop or StopSignals()
        self.dist = parts.runtime.dist
        self.skipped_files: dict[str, str] = dict(parts.index.skipped)
        self.stop_reason: str | None = None  # set by a callback that ends the run early
        device = parts.runtime.device
        self.read_every = 1 if device.type == "cpu" else ACCELERATOR_READ_EVERY
        # On the device: skipped steps since the last host read, and the current run of them.
        self._skipped = torch.zeros((), dtype=torch.int64, device=device)
        self._bad_run = torch.zeros((), dtype=torch.int64, device=device)
        self._unread = False  # steps taken since the last host read

    def checkpoint(self) -> Checkpoint:
        """The run as it stands, ready to save."""
        self.state.capture_rng()
        parts = self.parts
        return Checkpoint(
            config=self.config,
            state=self.state,
            model_state=parts.module.state_dict(),
            optimizer_state=parts.optimizer.state_dict(),
            scheduler_state=parts.schedule.state_dict(),
            scaler_state=parts.scaler.state_dict(),
            batch_size=parts.batch_size,
            steps_per_epoch=parts.steps_per_epoch(self.config.gradient_accumulation_steps),
        )

    def fit(self) -> dict[str, Any]:
        """Train (and validate) the remaining epochs; returns why it stopped, best metrics, paths."""
        state, config = self.state, self.config
        self._call("on_fit_start")
        start = state.epoch + 1 if state.batches_done == 0 else state.epoch
        for epoch in range(start, config.epochs + 1):
            state.epoch = epoch
            row: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
            improved = False
            if epoch % config.validate_interval == 0 or epoch == config.epochs:
                metrics, scores = self.validate()
                row.update(metrics)
                improved = row["val_loss"] < state.best_val_loss
                if improved:
                    state.best_val_loss, state.best_epoch = row["val_loss"], epoch
                    state.epochs_without_improvement = 0
                else:
                    state.epochs_without_improvement += 1
                self._call("on_validation_end", epoch, scores)
            state.history.append(json_safe(row))
            self._call("on_epoch_end", state.history[-1], improved)
            self.reporter.epoch_end(epoch, state.history[-1])
            if self.stop_reason:
                break
        self._write_skipped()
        result = {
            "stop_reason": self.stop_reason or "completed",
            "epochs_run": state.epoch,
            "best_epoch": state.best_epoch,
            "best_val_loss": state.best_val_loss,
            "best_metrics": state.best_row,
            "last_metrics": state.history[-1] if state.history else {},
            "nonfinite_steps": state.nonfinite_steps,
            "skipped_files": len(self.skipped_files),
            "output_dir": str(self.checkpointer.output_dir),
            "plots": [],
        }
        self._call("on_fit_end", result)
        return result

    def close(self) -> None:
        """Close every callback's files; safe to call on any path out of the run."""
        for callback in self.callbacks:
            callback.close()

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the train loader (from `state.batches_done` when resuming mid-epoch)."""
        config, parts, state = self.config, self.parts, self.state
        device, precision = parts.runtime.device, parts.runtime.precision
        parts.model.train()
        skip_batches = state.batches_done
        parts.train_loader.batch_sampler.sampler.set_epoch(
            epoch, skip=skip_batches * parts.batch_size
        )
        batches = parts.batches_per_epoch
        self.reporter.epoch_start(epoch, config.epochs, batches)
        # Running sums live in the state so an interruption mid-epoch can save them; the
        # batches' terms gather on the device in between host reads.
        sums, running = state.epoch_sums, LossSums()
        window_finite: torch.Tensor | None = None
        started, images_before, seen = time.perf_counter(), sums["images"], 0
        # The LR of the last step taken, for the epoch's row: a resume that finds every batch
        # of its epoch done (stopped after the last step, before the row) trains none here.
        lr = parts.schedule.lr_at(state.global_step - 1 if skip_batches else state.global_step)
        for batch_index, batch in enumerate(parts.train_loader, start=skip_batches):
            batch = decode_on_device(batch, device)  # JPEGs left encoded (gpu_decode)
            self._note_skipped(batch["skipped"])
            window_size, window_end = accumulation_window(
                batch_index, config.gradient_accumulation_steps, batches
            )
            if batch["images"] is not None:
                lr = parts.schedule.lr_at(state.global_step)
                for group, scale in zip(parts.optimizer.param_groups, parts.lr_scales, strict=True):
                    group["lr"] = lr * scale
                # (B, 3, S, S) in [0, 1], or a list where images smaller than S join the batch
                images = pixels_to_float(batch["images"], device)
                if parts.augment is not None and isinstance(images, list):
                    images = [parts.augment(one[None], state.global_step)[0] for one in images]
                elif parts.augment is not None:
                    images = parts.augment(images, state.global_step)
                if config.channels_last and isinstance(images, torch.Tensor):
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = batch["labels"].to(device, non_blocking=True)
                # Under DDP, gradients are averaged over the ranks once per window, not per batch.
                with self._sync_context(window_end):
                    with torch.autocast(device.type, precision.dtype, enabled=precision.enabled):
                        outputs = forward_batch(parts.model, images)
                    terms = parts.loss(outputs, labels)
                    # A non-finite loss is not tested on the host (that would wait for the
                    # device): its gradients are non-finite too, and the step is skipped on the
                    # device. Every rank runs its backward, so DDP's all-reduce always matches.
                    finite = torch.isfinite(terms.objective)
                    window_finite = finite if window_finite is None else window_finite & finite
                    # Dividing by the window size makes 8 x 2 accumulated equal to one of 16.
                    parts.scaler.scale(terms.objective / window_size).backward()
                    running.add(terms, len(labels), finite)
                    seen += len(labels)
            elif self.dist.enabled:
                with self._sync_context(window_end):
                    self._zero_backward()
            if window_end:
                self._optimizer_step(window_finite)
                window_finite = None
                state.global_step += 1
                state.batches_done = batch_index + 1
                self._call(
                    "on_optimizer_step", terms.total if batch["images"] is not None else None
                )
                if state.global_step % self.read_every == 0 or batch_index + 1 == batches:
                    self._host_read(running)
            elapsed = max(time.perf_counter() - started, 1e-9)
            self.reporter.batch_end(
                batch_index + 1,
                {
                    "loss": sums["loss"] / max(sums["images"], 1),
                    "lr": lr,
                    "img_per_s": seen / elapsed,
                },
            )
        # Normally a no-op (the last batch ended a window and read); a loader that ran short of
        # `batches` would otherwise leave its last steps unread.
        self._host_read(running, checks=False)
        state.batches_done = 0
        elapsed = time.perf_counter() - started
        if self.dist.enabled:  # the epoch's loss over every rank's images
            sums = {key: sum(part[key] for part in gather(self.dist, sums)) for key in sums}
        images_now = sums["images"] - images_before * self.dist.world_size
        state.epoch_sums = zero_loss_sums()
        return {
            **mean_loss_terms(sums, "train"),
            "lr": lr,
            "images_per_sec": images_now / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
        }

    def _optimizer_step(self, window_finite: torch.Tensor | None) -> None:
        """Unscale, clip, step and zero the gradients, without waiting for the device: a window
        with a non-finite loss or gradient is skipped by the optimizer itself and counted on the
        device (read by `_host_read`)."""
        parts = self.parts
        # A window without images (every file unreadable) steps as well: under DDP its rank
        # joined the all-reduce and must take the same step as the others.
        bad = torch.zeros((), dtype=torch.bool, device=self._skipped.device)
        if window_finite is not None:
            bad = ~window_finite
        parts.scaler.unscale_(parts.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(parts.module.parameters(), max_norm)
        if parts.runtime.precision.use_scaler:
            # With a GradScaler, inf gradients are normal early on: the scaler skips them (on
            # the device, for a fused optimizer) and backs off.
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        else:
            bad = bad | ~torch.isfinite(grad_norm)
            if parts.optimizer.param_groups[0].get("fused"):
                # The fused AdamW kernel skips the update (and its step count) where found_inf
                # is set: the skip happens on the device.
                parts.optimizer.found_inf = bad.float()  # type: ignore[attr-defined]
                parts.optimizer.step()
                del parts.optimizer.found_inf  # type: ignore[attr-defined]
            elif not bool(bad):  # no fused kernel for this device: a host read
                parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        bad_count = bad.to(torch.int64)
        self._skipped += bad_count
        self._bad_run = (self._bad_run + 1) * bad_count
        self._unread = True

    def _host_read(self, running: LossSums, checks: bool = True) -> None:
        """Bring the device's running sums and skip counts to the host; with `checks`, stop the
        run after too many skipped steps in a row, or for a signal."""
        running.drain_into(self.state.epoch_sums)
        if not self._unread:
            return
        self._unread = False
        skipped, bad_run = torch.stack([self._skipped, self._bad_run]).tolist()
        self._skipped.zero_()
        self.state.nonfinite_steps += skipped
        if not checks:
            return
        # Every rank decides alike: under a GradScaler a rank counts only its own non-finite
        # losses, so the counts can differ, and a rank that stopped alone would hang the rest.
        if any_rank(self.dist, bad_run >= self.config.max_nonfinite_steps):
            self._abort_nonfinite(bad_run)
        if any_rank(self.dist, self.stop.received is not None):
            self._save_interrupted()

    def validate(self) -> tuple[dict[str, float], Scores]:
        """val_-prefixed loss terms and detection metrics over the whole val split (all ranks)."""
        parts = self.parts
        self.reporter.validation_start(len(parts.val_loader))
        # The bare module: DDP's forward would broadcast buffers, a collective that ranks
        # with different numbers of val batches could not match. So sync them once, here.
        sync_buffers(self.dist, parts.module)
        metrics, scores = evaluate(
            parts.module,
            parts.val_loader,
            parts.runtime.device,
            parts.runtime.precision,
            parts.loss,
            on_skipped=self._note_skipped,
            parts=lambda mine: gather(self.dist, mine),
        )
        return {f"val_{name}": value for name, value in metrics.items()}, scores

    def _sync_context(self, window_end: bool) -> Any:
        if self.dist.enabled and not window_end:
            return self.parts.model.no_sync()
        return contextlib.nullcontext()

    def _zero_backward(self) -> None:
        """A backward pass that adds nothing, so this rank joins DDP's gradient all-reduce."""
        (sum(p.sum() for p in self.parts.module.parameters()) * 0.0).backward()

    def _note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in self.skipped_files:
                self.skipped_files[path] = reason
                self.reporter.warning(f"skipped unreadable image {path}: {reason}")

    def _write_skipped(self) -> None:
        """skipped_files.txt and the summary's count, with every rank's unreadable files."""
        if self.dist.enabled:  # each rank met the unreadable files of its own share
            for part in gather(self.dist, self.skipped_files):
                self.skipped_files.update(part)
        self.checkpointer.write_dataset_summary(
            self.parts.index, self.config.data_root, self.skipped_files
        )

    def _abort_nonfinite(self, count: int) -> None:
        latest = self.checkpointer.save_latest(self.checkpoint())
        advice = "try a lower --lr"
        if self.parts.runtime.precision.enabled:
            advice = "try without --use-amp or with a lower --lr"
        raise TrainingError(
            f"Training stopped: {count} optimizer steps in a row had a non-finite loss or gradient "
            f"(at global step {self.state.global_step}); {advice}. The last good state is in "
            f"{latest}."
        )

    def _save_interrupted(self) -> None:
        self._write_skipped()
        latest = self.checkpointer.save_latest(self.checkpoint())
        barrier(self.dist)
        raise TrainingInterrupted(self.stop.received or signal.SIGTERM, latest)
