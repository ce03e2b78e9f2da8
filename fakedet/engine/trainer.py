"""The Trainer owns a run's lifecycle: data, model, optimizer, loop, validation, checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakedet import __version__
from fakedet.config import TrainingConfig, config_to_dict, dump_config_yaml
from fakedet.data.layouts import DatasetIndex, build_index
from fakedet.data.loader import make_loader
from fakedet.data.transforms import TrainTransform, pixels_to_float
from fakedet.engine.checkpoint import atomic_write_text, save_checkpoint
from fakedet.engine.distributed import (
    any_rank,
    barrier,
    gather,
    init_distributed,
    shutdown,
    sync_buffers,
)
from fakedet.engine.evaluate import Scores, evaluate, make_eval_loader
from fakedet.engine.logging import Reporter, TensorBoardLogger
from fakedet.engine.losses import LossTerms, add_loss_terms, detector_loss, mean_loss_terms
from fakedet.engine.metrics import json_safe
from fakedet.engine.runtime import is_out_of_memory, resolve_device, resolve_precision
from fakedet.engine.schedule import WarmupCosine, build_schedule, resumed_schedule
from fakedet.errors import TrainingError
from fakedet.models import create_model


class TrainingInterrupted(TrainingError):
    """Ctrl-C or SIGTERM: the step finished, latest_model.pt was saved; exit 128 + signal."""

    def __init__(self, signal_number: int, checkpoint: Path) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(
            f"Stopped by {name} after saving {checkpoint}; continue with: fakedet resume {checkpoint}"
        )
        self.exit_code = 128 + signal_number


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases and embeddings (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


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
    """Train a detector as `config` says; `resume_state` (a loaded checkpoint) continues a run.

    When resuming, `config.epochs` is the run's new total, `new_lr` replaces the saved base LR
    (same schedule shape) and `reset_scheduler` starts a fresh warmup + cosine.

    Use as `trainer = Trainer(config, reporter)`, then `trainer.fit()` inside try/finally with
    `trainer.close()`.
    """

    def __init__(
        self,
        config: TrainingConfig,
        reporter: Reporter | None = None,
        resume_state: dict[str, Any] | None = None,
        new_lr: float | None = None,
        reset_scheduler: bool = False,
    ) -> None:
        self.config = config
        self.reporter = reporter or Reporter()
        self.resume_state = resume_state
        self.new_lr = new_lr
        self.reset_scheduler = reset_scheduler
        self.output_dir = Path(config.output_dir)
        self.tensorboard: TensorBoardLogger | None = None
        self.skipped_files: dict[str, str] = {}
        self._stop_signal: int | None = None
        self.saved_epoch: int | None = None  # the last epoch this run wrote latest_model.pt for
        # Validation scores for the plots: of the best epoch when this process saw it, else the
        # last validated epoch (a resumed run may have found its best before the resume).
        self.best_scores: Scores | None = None
        self.plot_scores: tuple[int, Scores] | None = None
        self._previous_handlers: dict[int, Any] = {}

    # ----------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        config = self.config
        seed_everything(config.seed)
        self.device = resolve_device(config.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.dist.local_rank)
                torch.cuda.set_device(self.device)
            if not self.dist.is_main:
                self.reporter = Reporter()  # rank 0 alone prints and writes files
        self.precision, warning = resolve_precision(self.device, config.use_amp, config.amp_dtype)
        if warning:
            self.reporter.warning(warning)

        self.index: DatasetIndex = build_index(
            Path(config.data_root),
            config.use_csv,
            config.val_split,
            config.seed,
            config.skip_missing,
        )
        self.skipped_files.update(dict(self.index.skipped))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.reporter.dataset(self.index.summary())
        if self.dist.is_main:
            self._write_dataset_summary()

        self.batch_size = self._resolve_batch_size()
        on_cuda = self.device.type == "cuda"
        loader_options = {
            "num_workers": config.num_workers,
            "pin_memory": config.pin_memory and on_cuda,
            "persistent_workers": config.persistent_workers,
            "prefetch_factor": config.prefetch_factor,
            # Training on the CPU: workers yield to the model's threads (benchmarks/data.py).
            "worker_nice": 19 if self.device.type == "cpu" else 0,
        }
        self.train_loader = make_loader(
            self.index.train,
            TrainTransform(config.img_size, config.hflip, config.blur_prob, config.jpeg_prob),
            self.batch_size,
            train=True,
            seed=config.seed,
            drop_last=config.drop_last,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            **loader_options,
        )
        self.val_loader = make_eval_loader(
            self.index.val,
            config.img_size,
            self.batch_size,
            config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            **loader_options,
        )
        self.batches_per_epoch = len(self.train_loader)
        self.steps_per_epoch = math.ceil(
            self.batches_per_epoch / config.gradient_accumulation_steps
        )

        # `module` is the bare model (checkpoints, evaluation); `model` is what trains: the same
        # module, or its DDP wrapper that averages gradients over the ranks.
        self.module = create_model(config.mode, img_size=config.img_size).to(self.device)
        self.model: nn.Module = self.module
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.module, config.weight_decay), lr=config.lr
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type,
            init_scale=128.0,
            growth_factor=1.5,
            backoff_factor=0.75,
            growth_interval=100,
            enabled=self.precision.use_scaler,
        )
        self.epoch = 0
        self.global_step = 0
        self.batches_done = 0  # of the current epoch, for a mid-epoch resume
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.epochs_without_improvement = 0
        self.nonfinite_steps = 0
        self.history: list[dict[str, Any]] = []
        self.epoch_sums = dict.fromkeys(
            ("loss", "regression", "classification", "ranking", "images"), 0.0
        )
        if self.resume_state is not None:
            self._restore(self.resume_state)
        else:
            self.schedule, warning = build_schedule(
                config.lr,
                config.min_lr,
                config.warmup_epochs,
                config.epochs,
                self.steps_per_epoch,
                config.scheduler_type,
            )
            if warning:
                self.reporter.warning(warning)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=device_ids)

        if self.dist.is_main:
            atomic_write_text(self.output_dir / "config.yaml", dump_config_yaml(config))
            if config.use_tensorboard:
                self.tensorboard = TensorBoardLogger(self.output_dir / "logs")
        params = sum(p.numel() for p in self.module.parameters())
        self.reporter.run_start(
            {
                "device": str(self.device),
                "precision": self.precision.description,
                "model": config.mode,
                "parameters": params,
                "img_size": config.img_size,
                "batch_size": self.batch_size,
                "accumulation": config.gradient_accumulation_steps,
                "effective_batch": self.batch_size
                * config.gradient_accumulation_steps
                * self.dist.world_size,
                "steps_per_epoch": self.steps_per_epoch,
                "epochs": config.epochs,
                "start_epoch": self.epoch + 1,
                "num_workers": config.num_workers,
                "processes": self.dist.world_size,
                "output_dir": str(self.output_dir),
            }
        )

    def _resolve_batch_size(self) -> int:
        if self.config.batch_size != "auto":
            return int(self.config.batch_size)
        from fakedet.advisor import detect_hardware, measure_memory, recommend

        memory = None
        if self.device.type == "cuda":
            memory = measure_memory(self.config.mode, self.config.img_size, self.precision.enabled)
        recommendation = recommend(detect_hardware(), self.config.mode, memory)
        self.reporter.info(
            f"batch_size auto -> {recommendation.batch_size} ({recommendation.reason})"
        )
        return recommendation.batch_size

    def _restore(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        if state.get("scaler_state_dict"):
            self.scaler.load_state_dict(state["scaler_state_dict"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.batches_done = int(state.get("batches_done", 0))
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state.get("best_epoch", 0))
        self.epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
        patience = self.config.early_stopping_patience
        if patience and self.epochs_without_improvement >= patience:
            # An early-stopped run given more epochs gets a fresh patience window.
            self.epochs_without_improvement = 0
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.history = list(state.get("history", []))
        if self.batches_done:
            self.epoch_sums.update(state.get("epoch_sums", {}))
        saved_schedule = WarmupCosine.from_state_dict(state["scheduler_state_dict"])
        self.schedule, notes = resumed_schedule(
            saved_schedule,
            saved_epochs=int(state["config"]["epochs"]),
            total_epochs=self.config.epochs,
            completed_epochs=self.epoch if self.batches_done == 0 else self.epoch - 1,
            steps_per_epoch=self.steps_per_epoch,
            global_step=self.global_step,
            new_lr=self.new_lr,
            reset_scheduler=self.reset_scheduler,
            warmup_epochs=self.config.warmup_epochs,
            min_lr=self.config.min_lr,
            saved_steps_per_epoch=state.get("steps_per_epoch"),
        )
        before, after = (
            saved_schedule.lr_at(self.global_step),
            self.schedule.lr_at(self.global_step),
        )
        where = f"epoch {self.epoch}" + (
            f" (batch {self.batches_done})" if self.batches_done else ""
        )
        self.reporter.info(
            f"Resuming after {where}, step {self.global_step}: LR {before:.3e} -> {after:.3e}"
            + (f"; {'; '.join(notes)}" if notes else "; schedule unchanged")
        )
        rng = state.get("rng_state", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Run the remaining epochs; returns the run's result (stop reason, best metrics, paths)."""
        self._setup()
        self._install_signal_handlers()
        try:
            stop_reason = self._run_epochs()
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            raise self._out_of_memory_error() from None
        if self.dist.enabled:  # each rank met the unreadable files of its own share
            for part in gather(self.dist, self.skipped_files):
                self.skipped_files.update(part)
        self._write_skipped_files()
        plots = self._write_plots()
        result = {
            "stop_reason": stop_reason,
            "epochs_run": self.epoch,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "best_metrics": next((r for r in self.history if r["epoch"] == self.best_epoch), {}),
            "last_metrics": self.history[-1] if self.history else {},
            "nonfinite_steps": self.nonfinite_steps,
            "skipped_files": len(self.skipped_files),
            "output_dir": str(self.output_dir),
            "plots": [path.name for path in plots],
        }
        self.reporter.run_end(result)
        return result

    def _run_epochs(self) -> str:
        """Train (and validate) the remaining epochs; returns why the run stopped."""
        start_epoch = self.epoch + 1 if self.batches_done == 0 else self.epoch
        for epoch in range(start_epoch, self.config.epochs + 1):
            self.epoch = epoch
            row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch)}
            validated = epoch % self.config.validate_interval == 0 or epoch == self.config.epochs
            improved = False
            if validated:
                metrics, scores = self._validate()
                row.update(metrics)
                self.plot_scores = (epoch, scores)
                improved = row["val_loss"] < self.best_val_loss
                if improved:
                    self.best_val_loss = row["val_loss"]
                    self.best_epoch = epoch
                    self.best_scores = scores
                    self.epochs_without_improvement = 0
                else:
                    self.epochs_without_improvement += 1
            self.history.append(json_safe(row))
            self._log_epoch(row)
            self._save_epoch_files(epoch, improved)
            self.saved_epoch = epoch
            self.reporter.epoch_end(epoch, json_safe(row))
            patience = self.config.early_stopping_patience
            if patience and self.epochs_without_improvement >= patience:
                return f"early stopping: no val_loss improvement in {patience} validations"
        return "completed"

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config = self.config
        self.model.train()
        skip_batches = self.batches_done
        self.train_loader.batch_sampler.sampler.set_epoch(
            epoch, skip=skip_batches * self.batch_size
        )
        self.reporter.epoch_start(epoch, config.epochs, self.batches_per_epoch)
        accumulation = config.gradient_accumulation_steps
        # Running sums live on the trainer so an interruption mid-epoch can save them.
        sums = self.epoch_sums
        window_bad = False
        consecutive_bad = 0
        started = time.perf_counter()
        images_before = sums["images"]
        lr = self.schedule.lr_at(self.global_step)
        for batch_index, batch in enumerate(self.train_loader, start=skip_batches):
            self._note_skipped(batch["skipped"])
            window_size, window_end = accumulation_window(
                batch_index, accumulation, self.batches_per_epoch
            )
            if batch["images"] is not None:
                lr = self.schedule.lr_at(self.global_step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                images = pixels_to_float(batch["images"], self.device)
                labels = batch["labels"].to(self.device, non_blocking=True)
                # Under DDP, gradients are averaged over the ranks once per window, not per batch.
                with self._sync_context(window_end):
                    with torch.autocast(
                        self.device.type, self.precision.dtype, enabled=self.precision.enabled
                    ):
                        outputs = self.model(images)
                    terms = self._loss(outputs, labels)
                    finite = bool(torch.isfinite(terms.total))
                    if any_rank(self.dist, not finite):
                        # Every rank skips together, or DDP's gradient all-reduce would hang.
                        window_bad = True
                        if self.dist.enabled:
                            self._zero_backward()
                    else:
                        # Dividing by the window size makes 8 x 2 accumulated equal to one of 16.
                        self.scaler.scale(terms.total / window_size).backward()
                        add_loss_terms(sums, terms, images.shape[0])
            elif self.dist.enabled:
                any_rank(self.dist, False)  # match the other ranks' collectives
                with self._sync_context(window_end):
                    self._zero_backward()
            if window_end:
                stepped = self._optimizer_step(window_bad)
                consecutive_bad = 0 if stepped else consecutive_bad + 1
                window_bad = False
                self.global_step += 1
                self.batches_done = batch_index + 1
                if self.tensorboard and batch["images"] is not None:
                    self.tensorboard.scalars(
                        {"train/batch_loss": terms.total.item()}, self.global_step
                    )
                if consecutive_bad >= config.max_nonfinite_steps:
                    self._abort_nonfinite(consecutive_bad)
                if any_rank(self.dist, self._stop_signal is not None):
                    self._save_interrupted()
            elapsed = max(time.perf_counter() - started, 1e-9)
            self.reporter.batch_end(
                batch_index + 1,
                {
                    "loss": sums["loss"] / max(sums["images"], 1),
                    "lr": lr,
                    "img_per_s": (sums["images"] - images_before) / elapsed,
                },
            )
        self.batches_done = 0
        elapsed = time.perf_counter() - started
        if self.dist.enabled:  # the epoch's loss over every rank's images
            sums = {key: sum(part[key] for part in gather(self.dist, sums)) for key in sums}
        images_now = sums["images"] - images_before * self.dist.world_size
        self.epoch_sums = dict.fromkeys(sums, 0.0)
        return {
            **mean_loss_terms(sums, "train"),
            "lr": lr,
            "images_per_sec": images_now / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
        }

    def _sync_context(self, window_end: bool) -> Any:
        if self.dist.enabled and not window_end:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _zero_backward(self) -> None:
        """A backward pass that adds nothing, so this rank joins DDP's gradient all-reduce."""
        (sum(p.sum() for p in self.module.parameters()) * 0.0).backward()

    def _loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> LossTerms:
        config = self.config
        return detector_loss(
            outputs["score"],
            outputs["logits"],
            labels,
            config.regression_weight,
            config.classification_weight,
            config.ranking_weight,
            config.ranking_margin,
        )

    def _optimizer_step(self, window_bad: bool) -> bool:
        """Unscale, clip, step and zero the gradients; False when the step was skipped."""
        if window_bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_steps += 1
            return False
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        if not self.precision.use_scaler and not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_steps += 1
            return False
        # With a GradScaler, inf gradients are normal early on: the scaler skips and backs off.
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def _validate(self) -> tuple[dict[str, float], Scores]:
        self.reporter.validation_start(len(self.val_loader))
        # The bare module: DDP's forward would broadcast buffers, a collective that ranks
        # with different numbers of val batches could not match. So sync them once, here.
        sync_buffers(self.dist, self.module)
        metrics, scores = evaluate(
            self.module,
            self.val_loader,
            self.device,
            self.precision,
            self._loss,
            on_skipped=self._note_skipped,
            parts=lambda mine: gather(self.dist, mine),
        )
        return {f"val_{name}": value for name, value in metrics.items()}, scores

    # ----------------------------------------------------------------------------- outputs
    def _note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in self.skipped_files:
                self.skipped_files[path] = reason
                self.reporter.warning(f"skipped unreadable image {path}: {reason}")

    def _log_epoch(self, row: dict[str, Any]) -> None:
        if self.tensorboard is None:
            return
        tags = {
            "train/total": row.get("train_loss"),
            "train/regression": row.get("train_regression"),
            "train/classification": row.get("train_classification"),
            "train/ranking": row.get("train_ranking"),
            "train/learning_rate": row.get("lr"),
            "train/nonfinite_steps": float(self.nonfinite_steps),
        }
        if "val_loss" in row:
            tags.update(
                {
                    "val/total": row["val_loss"],
                    "val/regression": row["val_regression"],
                    "val/classification": row["val_classification"],
                    "val/ranking": row["val_ranking"],
                    "val/accuracy": row["val_accuracy"],
                    "val/auc": row["val_auc"] if math.isfinite(row["val_auc"]) else None,
                    "val/ap": row["val_ap"] if math.isfinite(row["val_ap"]) else None,
                }
            )
        self.tensorboard.scalars(tags, row["epoch"])

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values only (weights_only-loadable)."""
        rng_state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng_state["cuda"] = torch.cuda.get_rng_state_all()
        train_rows = [
            {k: v for k, v in row.items() if not k.startswith("val_")} for row in self.history
        ]
        val_rows = [
            {"epoch": row["epoch"], **{k: v for k, v in row.items() if k.startswith("val_")}}
            for row in self.history
            if "val_loss" in row
        ]
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_done": self.batches_done,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_sums": dict(self.epoch_sums),
            "model_state_dict": self.module.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.schedule.state_dict(),
            "scaler_state_dict": self.scaler.state_dict(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "nonfinite_steps": self.nonfinite_steps,
            "train_history": train_rows,
            "val_history": val_rows,
            "history": self.history,
            "config": config_to_dict(self.config),
            "mode": self.config.mode,
            "img_size": self.config.img_size,
            "fakedet_version": __version__,
            "torch_version": str(torch.__version__),
            "rng_state": rng_state,
        }

    def _save_epoch_files(self, epoch: int, improved: bool) -> None:
        if not self.dist.is_main:
            return
        state = self.checkpoint_state()
        save_checkpoint(self.output_dir / "latest_model.pt", state)
        if self.config.save_every and epoch % self.config.save_every == 0:
            save_checkpoint(self.output_dir / f"checkpoint_epoch_{epoch}.pt", state)
        if improved:
            save_checkpoint(self.output_dir / "best_model.pt", state)
        atomic_write_text(
            self.output_dir / "training_history.json", json.dumps(self.history, indent=2) + "\n"
        )

    def _write_plots(self) -> list[Path]:
        """The run's figures; a failure to draw is a warning, never a failed run."""
        from fakedet import plots

        written: list[Path] = []
        if not self.dist.is_main or not self.config.plots:
            return written
        try:
            if self.history:
                written.append(plots.plot_curves(self.history, self.output_dir / "curves.png"))
            if self.best_scores is not None:
                epoch, scores = self.best_epoch, self.best_scores
                caption = f"best epoch {epoch}"
            elif self.plot_scores is not None:
                epoch, scores = self.plot_scores
                caption = f"epoch {epoch}"
            else:
                return written
            written += plots.write_evaluation_plots(
                self.output_dir, scores.paths, scores.scores, scores.labels, caption
            )
        except Exception as exc:
            self.reporter.warning(f"could not draw the plots ({exc.__class__.__name__}: {exc})")
        return written

    def _write_dataset_summary(self) -> None:
        summary = self.index.summary()
        summary["data_root"] = str(self.config.data_root)
        atomic_write_text(
            self.output_dir / "dataset_summary.json", json.dumps(summary, indent=2) + "\n"
        )

    def _write_skipped_files(self) -> None:
        if not self.skipped_files or not self.dist.is_main:
            return
        lines = [f"{path}\t{reason}" for path, reason in sorted(self.skipped_files.items())]
        atomic_write_text(self.output_dir / "skipped_files.txt", "\n".join(lines) + "\n")
        self.index.skipped = sorted(self.skipped_files.items())
        self._write_dataset_summary()

    # ----------------------------------------------------------------------------- stops
    def _abort_nonfinite(self, count: int) -> None:
        if self.dist.is_main:
            save_checkpoint(self.output_dir / "latest_model.pt", self.checkpoint_state())
        advice = (
            "try without --use-amp or with a lower --lr"
            if self.precision.enabled
            else "try a lower --lr"
        )
        raise TrainingError(
            f"Training stopped: {count} optimizer steps in a row had a non-finite loss or gradient "
            f"(at global step {self.global_step}); {advice}. The last good state is in "
            f"{self.output_dir / 'latest_model.pt'}."
        )

    def _out_of_memory_error(self) -> TrainingError:
        from fakedet.advisor import smaller_batch

        config = self.config
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        where = f"{self.device}"
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory / 1024**3
            where += f" ({total:.1f} GB)"
        text = (
            f"Out of memory on {where} in epoch {self.epoch} at batch size {self.batch_size} "
            f"({config.mode} model, {config.img_size} px). "
        )
        smaller = smaller_batch(self.batch_size, config.gradient_accumulation_steps)
        if smaller is None:
            return TrainingError(
                text + "Batch size 1 does not fit either: try --fast, a smaller --img-size, "
                "or --use-amp."
            )
        batch, accumulation = smaller
        flags = f"--batch-size {batch} --gradient-accumulation-steps {accumulation}"
        text += f"Try {flags} (effective batch {batch * accumulation})"
        if config.batch_size != "auto":
            text += ", or --batch-size auto"
        if self.saved_epoch is not None:
            text += (
                f"; epoch {self.saved_epoch} is saved, so `fakedet resume {self.output_dir} "
                f"{flags}` continues from there"
            )
        return TrainingError(text + ".")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signal_number: int, _frame: object) -> None:
            self._stop_signal = signal_number

        for signal_number in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signal_number] = signal.signal(signal_number, request_stop)

    def _save_interrupted(self) -> None:
        checkpoint = self.output_dir / "latest_model.pt"
        if self.dist.is_main:
            self._write_skipped_files()
            save_checkpoint(checkpoint, self.checkpoint_state())
        barrier(self.dist)
        raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, checkpoint)

    def close(self) -> None:
        """Restore signal handlers and flush logs; safe to call on every path."""
        for signal_number, handler in self._previous_handlers.items():
            signal.signal(signal_number, handler)
        self._previous_handlers.clear()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if getattr(self, "dist", None) is not None:
            shutdown(self.dist)
