"""Where a run's weights start and how the optimizer sees them: parameter groups (no decay on
norms and biases; a backbone's own learning rate), a checkpoint to start from (--init-from), and
the recorded hash of a backbone's weight file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakedet.checkpoints.files import load_checkpoint
from fakedet.config import TrainingConfig
from fakedet.errors import ConfigError, UsageError
from fakedet.models.backbones.spec import file_sha256


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases and embeddings (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def backbone_parameter_groups(
    model: nn.Module, weight_decay: float, backbone_lr_scale: float
) -> tuple[list[dict[str, Any]], list[float]]:
    """`parameter_groups` for the head and for the backbone apart, and each group's LR scale:
    a fine-tuned backbone moves `backbone_lr_scale` times as fast as the head it feeds."""
    groups, scales = [], []
    for in_backbone, scale in ((True, backbone_lr_scale), (False, 1.0)):
        chosen = [
            p
            for name, p in model.named_parameters()
            if p.requires_grad and name.startswith("backbone.") == in_backbone
        ]
        groups += [
            {"params": [p for p in chosen if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in chosen if p.ndim <= 1], "weight_decay": 0.0},
        ]
        scales += [scale, scale]
    return groups, scales


def record_weights_hash(config: TrainingConfig) -> TrainingConfig:
    """The config with the sha256 of its backbone weights file; a recorded hash must match.

    Raises:
        UsageError: the file is missing.
        ConfigError: the file's sha256 is not the recorded one.
    """
    if config.weights is None:
        return config
    if not Path(config.weights).is_file():
        raise UsageError(f"--weights {config.weights} is not a file; pass the weights file path.")
    actual = file_sha256(Path(config.weights))
    if config.weights_sha256 is not None and actual != config.weights_sha256:
        raise ConfigError(
            f"--weights {config.weights} has sha256 {actual}, not the recorded "
            f"{config.weights_sha256}; pass the file the run started with."
        )
    return config.model_copy(update={"weights_sha256": actual})


# What must match between a run and the checkpoint it starts from (--init-from).
MODEL_SETTINGS = ("mode", "backbone", "lora_rank", "with_spectral")


def init_weights(config: TrainingConfig) -> dict[str, torch.Tensor] | None:
    """The weights of `config.init_from`, when given, for a new run of the same model.

    Raises:
        CheckpointError: not a readable checkpoint.
        ConfigError: it holds another model.
    """
    if config.init_from is None:
        return None
    start = load_checkpoint(Path(config.init_from))
    for name in MODEL_SETTINGS:
        theirs, ours = getattr(start.config, name), getattr(config, name)
        if theirs != ours and not (name == "mode" and config.backbone is not None):
            raise ConfigError(
                f"--init-from {config.init_from} was trained with {name} {theirs!r}, this run "
                f"has {ours!r}; train the same model (drop the flag that changes it)."
            )
    if not config.finetune and any(key.startswith("backbone.") for key in start.model_state):
        raise ConfigError(
            f"--init-from {config.init_from} holds a fine-tuned backbone, which a probe would "
            "drop; add --finetune."
        )
    return start.model_state


def init_settings(path: Path) -> dict[str, Any]:
    """The model settings of the checkpoint at `path`, for a run started from it: what a user
    does not repeat next to --init-from."""
    start = load_checkpoint(path)
    keep = (*MODEL_SETTINGS, "finetune", "img_size", "weights", "weights_sha256")
    return {name: getattr(start.config, name) for name in keep}
