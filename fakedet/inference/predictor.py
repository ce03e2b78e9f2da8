"""Scoring image files with a trained detector (a checkpoint or an export loaded into PyTorch):
the centre crop (or five views) of each file, calibrated, with its verdict."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakedet.checkpoints.calibration import IDENTITY, Calibration
from fakedet.checkpoints.files import load_checkpoint
from fakedet.checkpoints.schema import Checkpoint
from fakedet.data.loader import loader_options, make_loader
from fakedet.data.transforms import (
    MIN_SIDE,
    TOO_SMALL,
    EvalTransform,
    check_crops,
    pixels_to_float,
)
from fakedet.hardware import workers_or_default
from fakedet.inference.exported import ExportedModel, exported_checkpoint, load_exported
from fakedet.inference.metadata import is_exported_file
from fakedet.inference.results import Prediction, scored_row
from fakedet.models.loading import build_model, forward_batch
from fakedet.runtime import resolve_device
from fakedet.sources.samples import Sample


def load_detector(path: Path, device: str = "auto") -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint (file or output folder), or an exported .onnx / .ts / .safetensors file,
    into a ready model, in eval mode, on `device`.

    Raises:
        CheckpointError: not a usable fakedet checkpoint.
    """
    if is_exported_file(path):
        # An export: ONNX and TorchScript run as they are; safetensors weights load into the
        # registry's model. Either way the stored calibration is read like a checkpoint's.
        checkpoint = exported_checkpoint(path)
        if path.suffix.lower() != ".safetensors":
            model, _ = load_exported(path, resolve_device(device))
            return model, checkpoint  # type: ignore[return-value]
    else:
        checkpoint = load_checkpoint(path)
    model = build_model(
        checkpoint.model_name,
        checkpoint.img_size,
        resolve_device(device),
        checkpoint.model_state,
        checkpoint.backbone,
    )
    return model.eval(), checkpoint


def prepared_for_scoring(model: Any) -> Any:
    """A PyTorch model with BatchNorm folded and channels-last weights (the same scores to float
    rounding, 1.03-1.3x faster: benchmarks/models.py); an export as it is."""
    if isinstance(model, nn.Module):
        from fakedet.models.layers import fuse_for_inference

        return fuse_for_inference(model)
    return model


def calibration_of(checkpoint: Checkpoint) -> Calibration:
    """The checkpoint's calibration, or identity with threshold 0.5 for one that has none."""
    return checkpoint.calibration or IDENTITY


# Scores are clamped this far from 0 and 1 before their logits are averaged: an fp32 sigmoid
# saturates to exactly 1.0, whose logit is infinite.
VIEW_SCORE_EPS = 1e-6


def min_input_side(model: object, img_size: int) -> int:
    """The smallest image side `model` scores without resampling: MIN_SIDE for a PyTorch model,
    `img_size` for an ONNX or TorchScript export (traced at that one size)."""
    if isinstance(model, ExportedModel) and model.fmt != "safetensors":
        return img_size
    return MIN_SIDE


def score_views(
    model: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    images: torch.Tensor | list[torch.Tensor],
) -> torch.Tensor:
    """Raw realness (B,) of float images (B, 3, S, S), or of (B, V, 3, S, S) views of each image:
    the views' scores are averaged as logits (a view that is sure counts for more than one
    near 0.5, as the detector's evidence adds up), then mapped back to [0, 1]. A batch of mixed
    sizes (a list of per-image tensors) is scored one size at a time."""
    if isinstance(images, list):
        return forward_batch(lambda same_size: score_views(model, same_size), images)
    if images.dim() == 4:
        return model(images)["score"].float()
    batch, views = images.shape[:2]
    scores = model(images.flatten(0, 1))["score"].float()
    logits = torch.logit(scores.clamp(VIEW_SCORE_EPS, 1 - VIEW_SCORE_EPS)).view(batch, views)
    return torch.sigmoid(logits.mean(dim=1))


@torch.no_grad()
def predict_images(
    model: nn.Module,
    paths: Sequence[Path],
    img_size: int,
    calibration: Calibration = IDENTITY,
    threshold: float | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    crops: int = 1,
) -> list[Prediction]:
    """Calibrated realness of each image (a centre crop of `img_size`, as in validation; with
    `crops` 5 also the four corners, see `score_views`) and its verdict at `threshold`
    (default: the calibration's), in input order. An image smaller than the crop is scored at
    its native size, and one below the model's minimum gets the verdict "too small"
    (data/transforms.py)."""
    check_crops(crops)
    device = next(model.parameters()).device
    samples = [Sample(str(path), 0.0) for path in paths]
    workers = workers_or_default(num_workers, device.type)
    workers = min(workers, max(0, len(samples) // batch_size))  # no processes for a few images
    loader = make_loader(
        samples,
        EvalTransform(img_size, crops, min_input_side(model, img_size)),
        batch_size,
        train=False,
        seed=0,
        drop_last=False,
        **loader_options(device, workers, persistent_workers=False),
    )
    model.eval()
    realness: dict[int, float] = {}
    errors: dict[str, str] = {}
    for batch in loader:
        errors.update(dict(batch["skipped"]))
        if batch["images"] is None:
            continue
        scores = score_views(model, pixels_to_float(batch["images"], device)).cpu()
        realness.update(zip(batch["indices"].tolist(), scores.tolist(), strict=True))
    cut = calibration.threshold if threshold is None else threshold
    predictions = []
    for index, sample in enumerate(samples):
        if index in realness:
            predictions.append(scored_row(sample.path, realness[index], calibration, cut))
        else:
            reason = errors.get(sample.path, "could not be read")
            verdict = TOO_SMALL if reason.startswith(TOO_SMALL) else "unreadable"
            predictions.append(Prediction(sample.path, None, verdict, reason))
    return predictions
