"""From a config (and a checkpoint to continue) to a run's parts: device, precision, processes,
data loaders, model, optimizer, scaler, schedule and loss.

Training, validation and inference build their parts here, so each rule is written once.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fakedet import advisor, hardware
from fakedet.checkpoints.schema import Checkpoint, TrainState
from fakedet.config import TrainingConfig
from fakedet.data.decode import encoded_crop, torchvision_io
from fakedet.data.decoded_cache import open_decoded_cache
from fakedet.data.gpu_augment import BatchAugment
from fakedet.data.loader import loader_options, make_loader
from fakedet.data.processing import ProcessingAugment
from fakedet.data.transforms import TrainTransform
from fakedet.distributed.torchrun import DistContext, init_distributed
from fakedet.evaluation.validation import LossFunction, build_loss, make_eval_loader
from fakedet.memory import measure_backbone_memory, measure_memory
from fakedet.models.backbones.spec import backbone_choice
from fakedet.models.loading import build_model
from fakedet.runtime import Precision, resolve_device, resolve_precision
from fakedet.sources.samples import DatasetIndex
from fakedet.training.logging import Reporter
from fakedet.training.schedule import WarmupCosine, build_schedule, resumed_schedule
from fakedet.training.spectrum_read import fit_spectrum_read
from fakedet.training.weights import backbone_parameter_groups, init_weights, parameter_groups

# The conservative GradScaler of the seed: start low, grow slowly, back off gently.
GRAD_SCALER_OPTIONS = {
    "init_scale": 128.0,
    "growth_factor": 1.5,
    "backoff_factor": 0.75,
    "growth_interval": 100,
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Runtime:
    """Where the run computes: the device, autocast's precision, and this process's rank."""

    device: torch.device
    precision: Precision
    dist: DistContext
    precision_warning: str | None = None  # why AMP was turned off, when it was asked for


def build_runtime(device: str, use_amp: bool = False, amp_dtype: str = "auto") -> Runtime:
    """Resolve the device, join torchrun's process group when there is one, pick the precision.

    Raises:
        ConfigError: the requested device does not exist here.
    """
    resolved = resolve_device(device)
    dist = init_distributed(resolved.type)
    if dist.enabled and resolved.type == "cuda":
        resolved = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(resolved)
    precision, warning = resolve_precision(resolved, use_amp, amp_dtype)
    return Runtime(resolved, precision, dist, warning)


def resolve_num_workers(num_workers: int | None, runtime: Runtime) -> int:
    """The config's worker count, or unset: the device's default over this process's share of
    the CPU cores (DDP processes on one machine split them)."""
    if num_workers is not None:
        return num_workers
    # torchrun names how many processes share this machine; a plain run is alone on it.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if runtime.dist.enabled else 1
    return hardware.default_num_workers(device_type=runtime.device.type, processes=local)


def resolve_batch_size(config: TrainingConfig, runtime: Runtime, reporter: Reporter) -> int:
    """The configured batch, or the advisor's for `--batch-size auto`."""
    if config.batch_size != "auto":
        return int(config.batch_size)
    profile, amp, choice = None, runtime.precision.enabled, backbone_choice(config)
    if runtime.device.type == "cuda" and choice is not None:
        profile = measure_backbone_memory(choice, config.img_size, amp)
    elif runtime.device.type == "cuda":
        profile = measure_memory(config.mode, config.img_size, amp)
    model = config.backbone or config.mode
    recommendation = advisor.recommend(advisor.detect_hardware(), model, profile)
    reporter.info(f"batch_size auto -> {recommendation.batch_size} ({recommendation.reason})")
    return recommendation.batch_size


@dataclass
class TrainingParts:
    """Everything a training loop needs, built from one config."""

    runtime: Runtime
    index: DatasetIndex
    train_loader: DataLoader
    val_loader: DataLoader
    module: nn.Module  # the bare model: checkpoints and evaluation
    model: nn.Module  # what trains: `module`, or its DDP wrapper that averages gradients
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: WarmupCosine
    loss: LossFunction
    batch_size: int
    # Counted once, at build: the loader's length shrinks while a mid-epoch resume skips batches.
    batches_per_epoch: int
    # Per optimizer group, the schedule's LR times this (a fine-tuned backbone's lower LR).
    lr_scales: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Flip, blur and JPEG of each float batch on the device (gpu_augment), else None.
    augment: BatchAugment | None = None

    def steps_per_epoch(self, accumulation: int) -> int:
        return math.ceil(self.batches_per_epoch / accumulation)


def build_training(
    config: TrainingConfig,
    runtime: Runtime,
    index: DatasetIndex,
    reporter: Reporter,
    resume: Checkpoint | None = None,
    new_lr: float | None = None,
    reset_scheduler: bool = False,
    model: nn.Module | None = None,
) -> tuple[TrainingParts, TrainState]:
    """The parts of a training run and its starting state (fresh, or the checkpoint's).

    Args:
        config: the run's config (when resuming, `epochs` is the new total).
        runtime: from `build_runtime`.
        index: from `index_dataset`.
        reporter: receives warnings and the resume note.
        resume: a checkpoint to continue from.
        new_lr: with `resume`, a base LR replacing the saved one (same schedule shape).
        reset_scheduler: with `resume`, a fresh warmup + cosine from the resume step.
        model: a model to train instead of `create_model(config.mode)` (tests, benchmarks).

    Raises:
        CheckpointError: the checkpoint's weights do not fit the model.
    """
    dist = runtime.dist
    batch_size = resolve_batch_size(config, runtime, reporter)
    options = loader_options(
        runtime.device,
        resolve_num_workers(config.num_workers, runtime),
        config.pin_memory,
        config.persistent_workers,
        config.prefetch_factor,
    )
    weights = resume.model_state if resume is not None else init_weights(config)
    if config.backbone is not None and not config.finetune:
        from fakedet.data.feature_cache import probe_parts  # deferred: the backbone libraries

        train_loader, val_loader, module = probe_parts(
            config,
            runtime.device,
            runtime.precision,
            dist,
            index,
            batch_size,
            options,
            reporter.info,
            weights,
        )
    else:
        train_loader, val_loader, module = _image_parts(
            config, runtime, index, batch_size, options, weights, model, reporter.info
        )
    # A resumed run has its fitted read (or its unfitted zeros) in the checkpoint's weights.
    if resume is None and config.spectrum_read:
        fitted = fit_spectrum_read(
            module, index.train, config.img_size, batch_size, runtime.device, config.seed, options
        )
        if fitted is not None:
            reporter.info(fitted.describe())
    groups, lr_scales = parameter_groups(module, config.weight_decay), [1.0, 1.0]
    if config.backbone is not None and config.finetune:
        groups, lr_scales = backbone_parameter_groups(
            module, config.weight_decay, config.backbone_lr_scale
        )
    # The fused kernel: one launch per step, and it can skip a non-finite step on the device
    # (the trainer never waits for the device to decide).
    fused = fused_optimizer(runtime.device)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=fused)
    scaler = torch.amp.GradScaler(
        runtime.device.type, enabled=runtime.precision.use_scaler, **GRAD_SCALER_OPTIONS
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    if resume is None:
        state = TrainState()
        schedule, warning = build_schedule(
            config.lr,
            config.min_lr,
            config.warmup_epochs,
            config.epochs,
            steps_per_epoch,
            config.scheduler_type,
        )
        if warning:
            reporter.warning(warning)
    else:
        state = resume.state
        optimizer.load_state_dict(resume.optimizer_state)
        use_kernel(optimizer, fused)
        if resume.scaler_state:
            scaler.load_state_dict(resume.scaler_state)
        patience = config.early_stopping_patience
        if patience and state.epochs_without_improvement >= patience:
            # An early-stopped run given more epochs gets a fresh patience window.
            state.epochs_without_improvement = 0
        if not state.batches_done:
            state.epoch_sums = dict.fromkeys(state.epoch_sums, 0.0)
        schedule = _resumed_schedule(
            resume, config, steps_per_epoch, new_lr, reset_scheduler, reporter
        )
        state.restore_rng()
    trained: nn.Module = module
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        trained = DistributedDataParallel(module, device_ids=device_ids)
    loss = build_loss(config)
    if config.compile:  # the bare module stays as it is for checkpoints and validation
        trained = torch.compile(trained)
        loss = torch.compile(loss)
    augment = None
    if _augments_on_device(config, runtime):
        augment = BatchAugment(
            config.seed, config.hflip, config.blur_prob, config.jpeg_prob, config.blur_sigma_max
        )
    parts = TrainingParts(
        runtime=runtime,
        index=index,
        train_loader=train_loader,
        val_loader=val_loader,
        module=module,
        model=trained,
        optimizer=optimizer,
        scaler=scaler,
        schedule=schedule,
        loss=loss,
        batch_size=batch_size,
        batches_per_epoch=len(train_loader),
        lr_scales=lr_scales,
        augment=augment,
    )
    return parts, state


def _augments_on_device(config: TrainingConfig, runtime: Runtime) -> bool:
    """gpu_augment asked, on CUDA, for a model that trains on images (not a feature probe)."""
    image_model = config.backbone is None or config.finetune
    return config.gpu_augment and runtime.device.type == "cuda" and image_model


def _image_parts(
    config: TrainingConfig,
    runtime: Runtime,
    index: DatasetIndex,
    batch_size: int,
    options: dict[str, Any],
    weights: dict[str, torch.Tensor] | None,
    model: nn.Module | None,
    on_note: Callable[[str], None],
) -> tuple[DataLoader, DataLoader, nn.Module]:
    """Loaders of decoded images and the model that trains on them."""
    dist = runtime.dist
    # With gpu_augment on CUDA the workers only crop; flip, blur and JPEG run per batch there.
    on_device = _augments_on_device(config, runtime)
    decoded = open_decoded_cache(config.data_root)
    reader = decoded.reader([s.path for s in index.train]) if decoded is not None else None
    if reader is not None:
        on_note(
            f"decoded cache: {len(reader.fresh)} of {len(index.train)} train images read from it"
        )
    # gpu_decode: plain JPEGs cross encoded and decode on the GPU (not over a decoded cache).
    defer_jpegs = on_device and config.gpu_decode and reader is None
    defer_jpegs = defer_jpegs and torchvision_io() is not None
    transform = TrainTransform(
        config.img_size,
        config.hflip and not on_device,
        0.0 if on_device else config.blur_prob,
        0.0 if on_device else config.jpeg_prob,
        config.blur_sigma_max,
        config.resize_prob,
        config.resize_min_scale,
        ProcessingAugment(config.processing_probs) if config.processing_probs else None,
        config.processing_on == "real",
    )
    train_loader = make_loader(
        index.train,
        transform,
        batch_size,
        train=True,
        seed=config.seed,
        drop_last=config.drop_last,
        rank=dist.rank,
        world_size=dist.world_size,
        decode=reader,
        defer=partial(encoded_crop, crop_only=transform.crop_only) if defer_jpegs else None,
        **options,
    )
    val_loader = make_eval_loader(
        index.val,
        config.img_size,
        batch_size,
        config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        **options,
    )
    if model is None:
        module = build_model(
            config.mode,
            config.img_size,
            runtime.device,
            weights,
            backbone_choice(config),
            patch_topk=config.patch_topk,
        )
    else:
        module = model.to(runtime.device)
    if config.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return train_loader, val_loader, module


def fused_optimizer(device: torch.device) -> bool | None:
    """True where PyTorch has a fused AdamW for `device` (CUDA, CPU); None: its default."""
    return True if device.type in ("cuda", "cpu") else None


def use_kernel(optimizer: torch.optim.Optimizer, fused: bool | None) -> None:
    """Make a loaded optimizer use this device's kernel: a checkpoint carries the choice of the
    machine that saved it (or none, from before fusing), and a fused kernel keeps its step
    counts on the parameters' device."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = fused, None
        for param in group["params"] if fused else ():
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(param.device, torch.float32)


def _resumed_schedule(
    resume: Checkpoint,
    config: TrainingConfig,
    steps_per_epoch: int,
    new_lr: float | None,
    reset_scheduler: bool,
    reporter: Reporter,
) -> WarmupCosine:
    state = resume.state
    saved = WarmupCosine.from_state_dict(resume.scheduler_state)
    schedule, notes = resumed_schedule(
        saved,
        saved_epochs=resume.config.epochs,
        total_epochs=config.epochs,
        completed_epochs=state.completed_epochs,
        steps_per_epoch=steps_per_epoch,
        global_step=state.global_step,
        new_lr=new_lr,
        reset_scheduler=reset_scheduler,
        warmup_epochs=config.warmup_epochs,
        min_lr=config.min_lr,
        saved_steps_per_epoch=resume.steps_per_epoch,
    )
    before, after = saved.lr_at(state.global_step), schedule.lr_at(state.global_step)
    where = f"epoch {state.epoch}" + (
        f" (batch {state.batches_done})" if state.batches_done else ""
    )
    reporter.info(
        f"Resuming after {where}, step {state.global_step}: LR {before:.3e} -> {after:.3e}"
        + (f"; {'; '.join(notes)}" if notes else "; schedule unchanged")
    )
    return schedule
