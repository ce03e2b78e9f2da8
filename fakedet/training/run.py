"""What `fakedet train` and `fakedet resume` do: build the parts, run the loop, close on every path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakedet import advisor
from fakedet.checkpoints.files import checkpoint_path, load_checkpoint
from fakedet.checkpoints.schema import Checkpoint
from fakedet.config import TrainingConfig
from fakedet.data.audit import audit_index, audit_lines
from fakedet.distributed.signals import StopSignals
from fakedet.distributed.torchrun import barrier, shutdown
from fakedet.errors import TrainingError, UsageError
from fakedet.io import ensure_folder
from fakedet.runtime import intra_op_threads, is_out_of_memory, resolve_device, trains_head_only
from fakedet.sources.layouts import index_dataset
from fakedet.sources.samples import DatasetIndex
from fakedet.training.build import TrainingParts, build_runtime, build_training, seed_everything
from fakedet.training.callbacks import default_callbacks
from fakedet.training.checkpointer import Checkpointer
from fakedet.training.logging import Reporter
from fakedet.training.resume import resume_config
from fakedet.training.trainer import Trainer
from fakedet.training.weights import record_weights_hash


def train(
    config: TrainingConfig,
    reporter: Reporter | None = None,
    resume: Checkpoint | None = None,
    new_lr: float | None = None,
    reset_scheduler: bool = False,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Train a detector as `config` says (continuing `resume` when given); the run's result.

    Args:
        config: the run's config.
        reporter: receives progress; rank 0 alone reports under DDP.
        resume: a loaded checkpoint to continue (`config` then comes from `resume_config`).
        new_lr: with `resume`, the base LR replacing the saved one.
        reset_scheduler: with `resume`, a fresh warmup + cosine.
        model: train this model instead of the registry's `config.mode` (tests, benchmarks).

    Raises:
        FakedetError: bad data or config (exit 2), a failed run (exit 1), an interruption.
    """
    seed_everything(config.seed)
    config = record_weights_hash(config)
    runtime = build_runtime(config.device, config.use_amp, config.amp_dtype)
    if not runtime.dist.is_main or reporter is None:
        reporter = Reporter()  # rank 0 alone prints
    stop, trainer = StopSignals(), None
    try:
        if runtime.precision_warning:
            reporter.warning(runtime.precision_warning)
        index = index_dataset(
            config,
            on_note=reporter.info,
            is_builder=runtime.dist.local_rank == 0,
            barrier=lambda: barrier(runtime.dist),
        )
        reporter.dataset(index.summary())
        checkpointer = Checkpointer(
            Path(config.output_dir), runtime.dist.is_main, config.save_every
        )
        if runtime.dist.is_main:
            checkpointer.audit = _audit(index, Path(config.data_root), reporter)
        checkpointer.write_dataset_summary(index, config.data_root)
        try:  # the spectrum read's fit already runs the model on the device
            parts, state = build_training(
                config, runtime, index, reporter, resume, new_lr, reset_scheduler, model
            )
        except RuntimeError as error:
            if not is_out_of_memory(error) or not isinstance(config.batch_size, int):
                raise
            epoch = resume.state.epoch if resume is not None else 0
            raise out_of_memory_error(
                config, runtime.device, config.batch_size, epoch, checkpointer
            ) from None
        checkpointer.write_config(config)
        log_dir = None
        if config.use_tensorboard and runtime.dist.is_main:
            log_dir = checkpointer.output_dir / "logs"
        reporter.run_start(_run_info(config, parts, state.epoch + 1, checkpointer.output_dir))
        callbacks = default_callbacks(config, log_dir)
        trainer = Trainer(config, parts, state, checkpointer, reporter, callbacks, stop)
        stop.install()
        head_only = trains_head_only(config.backbone, config.finetune, runtime.device)
        try:
            with intra_op_threads(1 if head_only else None):
                result = trainer.fit()
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            raise out_of_memory_error(
                config, parts.runtime.device, parts.batch_size, state.epoch, checkpointer
            ) from None
        reporter.run_end(result)
        return result
    finally:
        stop.restore()
        if trainer is not None:
            trainer.close()
        shutdown(runtime.dist)


def resume(
    path: Path,
    overrides: dict[str, Any],
    extra_epochs: int | None = None,
    new_lr: float | None = None,
    reset_lr: bool = False,
    reset_scheduler: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Continue a run from a checkpoint file or output folder.

    Outputs go beside the checkpoint unless `overrides` has an output_dir: the folder recorded
    inside a checkpoint is shown, never written to.

    Raises:
        UsageError: --reset-lr without --lr, --epochs below 1, nothing left to train.
        CheckpointError, ConfigError, DataError: as loading and `resume_config` raise them.
    """
    if reset_lr and new_lr is None:
        raise UsageError("--reset-lr needs the new LR: add --lr X.")
    if extra_epochs is not None and extra_epochs < 1:
        raise UsageError(f"--epochs {extra_epochs} must be at least 1 (it counts epochs to add).")
    checkpoint = load_checkpoint(path)
    overrides = {"output_dir": checkpoint_path(path).parent, **overrides}
    config = resume_config(checkpoint, overrides, extra_epochs, new_lr)
    return train(config, reporter, checkpoint, new_lr, reset_scheduler)


# Duplicates need every file's bytes read once (then cached): about 0.3 ms per file here, so a
# first start at 100k files spends half a minute on it; above that, `fakedet audit` checks them.
AUDIT_HASH_LIMIT = 100_000


def _audit(index: DatasetIndex, data_root: Path, reporter: Reporter) -> dict[str, Any]:
    """The dataset audit before training: printed compactly, warnings as warnings."""
    images = len(index.train) + len(index.val)
    with_hash = images <= AUDIT_HASH_LIMIT
    audit = audit_index(index, data_root, with_hash=with_hash, on_note=reporter.info)
    index.audit_input = None  # only the audit needed it
    for line in audit_lines(audit):
        reporter.info(line)
    for warning in audit["warnings"]:
        reporter.warning(warning)
    if not with_hash:
        reporter.info(f"duplicates not checked at {images} images: run `fakedet audit {data_root}`")
    return audit


def preflight(config: TrainingConfig) -> None:
    """What every rank would check first, checked once before `--devices N` starts torchrun, so
    bad input is one sentence rather than one error per rank and torchrun's traceback.

    Raises:
        FakedetError: a device this machine lacks, an unusable dataset or output folder.
    """
    resolve_device(config.device)
    index_dataset(config)
    ensure_folder(Path(config.output_dir))


def preflight_resume(
    path: Path, overrides: dict[str, Any], extra_epochs: int | None, new_lr: float | None
) -> None:
    """`preflight` for a resume: the checkpoint loads and the continued run's config is valid."""
    if extra_epochs is not None and extra_epochs < 1:
        raise UsageError(f"--epochs {extra_epochs} must be at least 1 (it counts epochs to add).")
    checkpoint = load_checkpoint(path)
    overrides = {"output_dir": checkpoint_path(path).parent, **overrides}
    preflight(resume_config(checkpoint, overrides, extra_epochs, new_lr))


def _run_info(
    config: TrainingConfig, parts: TrainingParts, start_epoch: int, output_dir: Path
) -> dict[str, Any]:
    dist = parts.runtime.dist
    accumulation = config.gradient_accumulation_steps
    return {
        "device": str(parts.runtime.device),
        "precision": parts.runtime.precision.description,
        "model": config.backbone or config.mode,
        "parameters": sum(p.numel() for p in parts.module.parameters()),
        "img_size": config.img_size,
        "batch_size": parts.batch_size,
        "accumulation": accumulation,
        "effective_batch": parts.batch_size * accumulation * dist.world_size,
        "steps_per_epoch": parts.steps_per_epoch(accumulation),
        "epochs": config.epochs,
        "start_epoch": start_epoch,
        "num_workers": parts.train_loader.num_workers,
        "processes": dist.world_size,
        "output_dir": str(output_dir),
    }


def out_of_memory_error(
    config: TrainingConfig,
    device: torch.device,
    batch_size: int,
    epoch: int,
    checkpointer: Checkpointer,
) -> TrainingError:
    """One sentence: where memory ran out, the advisor's smaller batch, and the resume line."""
    where = f"{device}"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory / 1024**3
        where += f" ({total:.1f} GB)"
    text = (
        f"Out of memory on {where} in epoch {epoch} at batch size {batch_size} "
        f"({config.mode} model, {config.img_size} px). "
    )
    smaller = advisor.smaller_batch(batch_size, config.gradient_accumulation_steps)
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
    if checkpointer.saved_epoch is not None:
        text += (
            f"; epoch {checkpointer.saved_epoch} is saved, so `fakedet resume "
            f"{checkpointer.output_dir} {flags}` continues from there"
        )
    return TrainingError(text + ".")
