"""What a checkpoint holds, for `fakedet inspect-checkpoint`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fakedet.checkpoints.files import checkpoint_path
from fakedet.config import TrainingConfig
from fakedet.config_files import config_to_dict
from fakedet.inference.predictor import calibration_of, load_detector
from fakedet.io import finite_or_none


@dataclass
class CheckpointDescription:
    """What `fakedet inspect-checkpoint` shows; `to_dict()` is its JSON."""

    path: str
    size_mb: float
    fakedet_version: str
    torch_version: str
    mode: str
    img_size: int
    parameters: int
    epoch: int
    epochs_configured: int
    global_step: int
    interrupted_at_batch: int | None
    best_epoch: int | None
    best_val_loss: float | None
    epochs_without_improvement: int
    nonfinite_steps: int
    last_metrics: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    calibration: dict[str, Any] | None  # method, params, ece_before/after, threshold, rule
    calibration_text: str
    # A backbone detector's SOURCE:NAME, weights file and sha256, trainable and frozen counts.
    backbone: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_checkpoint(path: Path) -> CheckpointDescription:
    """What a checkpoint holds: versions, model, progress, best and last metrics, config."""
    source = checkpoint_path(path)
    model, checkpoint = load_detector(source, "cpu")
    state = checkpoint.state
    return CheckpointDescription(
        path=str(source),
        size_mb=round(source.stat().st_size / 1024**2, 2),
        fakedet_version=checkpoint.fakedet_version,
        torch_version=checkpoint.torch_version,
        mode=checkpoint.model_name,
        img_size=checkpoint.img_size,
        parameters=sum(p.numel() for p in model.parameters()),
        epoch=state.epoch,
        epochs_configured=checkpoint.config.epochs,
        global_step=state.global_step,
        interrupted_at_batch=state.batches_done or None,
        best_epoch=state.best_epoch,
        best_val_loss=finite_or_none(state.best_val_loss),
        epochs_without_improvement=state.epochs_without_improvement,
        nonfinite_steps=state.nonfinite_steps,
        last_metrics=state.history[-1] if state.history else {},
        config=config_to_dict(checkpoint.config),
        history=state.history,
        calibration=checkpoint.calibration.to_dict() if checkpoint.calibration else None,
        calibration_text=calibration_of(checkpoint).describe(),
        backbone=_backbone_facts(model, checkpoint.config),
    )


def _backbone_facts(model: Any, config: TrainingConfig) -> dict[str, Any] | None:
    """A backbone detector's SOURCE:NAME, weights file and sha256, and what trains of it."""
    if config.backbone is None:
        return None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "spec": config.backbone,
        "training": (
            f"LoRA rank {config.lora_rank}"
            if config.lora_rank
            else ("fine-tuned" if config.finetune else "linear probe (frozen)")
        ),
        "weights_file": str(config.weights) if config.weights else None,
        "weights_sha256": config.weights_sha256,
        "trainable_parameters": trainable,
        "frozen_parameters": sum(p.numel() for p in model.parameters()) - trainable,
        "init_from": str(config.init_from) if config.init_from else None,
    }
