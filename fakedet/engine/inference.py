"""Using a trained detector: load it from a checkpoint, score image files, validate a labelled
set, and describe what a checkpoint holds. The CLI's predict / validate / inspect-checkpoint."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakedet.config import config_to_dict
from fakedet.data.loader import make_loader
from fakedet.data.samples import IMAGE_SUFFIXES, DatasetIndex, Sample
from fakedet.data.transforms import EvalTransform, check_crops, pixels_to_float
from fakedet.engine.build import build_loss, build_model, index_dataset, loader_options
from fakedet.engine.calibration import (
    IDENTITY,
    Calibration,
    check_method,
    fit_calibration,
    parse_rule,
)
from fakedet.engine.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from fakedet.engine.evaluate import Scores, evaluate, make_eval_loader
from fakedet.engine.exported import exported_checkpoint, is_exported_file, load_exported
from fakedet.engine.metrics import (
    detection_metrics,
    expected_calibration_error,
    finite_or_none,
    json_safe,
)
from fakedet.engine.runtime import FP32, resolve_device
from fakedet.engine.state import Checkpoint
from fakedet.errors import DataError, UsageError
from fakedet.hardware import default_num_workers
from fakedet.io import atomic_write_text, ensure_folder


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
        checkpoint.model_name, checkpoint.img_size, resolve_device(device), checkpoint.model_state
    )
    return model.eval(), checkpoint


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images; sorted, without repeats.

    Raises:
        UsageError: a path that does not exist, or no images at all.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        if item.is_dir():
            images = sorted(
                path
                for path in item.rglob("*")
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            )
            found.update(dict.fromkeys(images))
        elif item.is_file():
            found[item] = None
        else:
            raise UsageError(f"{item} does not exist; give image files or folders of images.")
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UsageError(
            f"No images found in {', '.join(map(str, inputs))} (looked for {suffixes})."
        )
    return list(found)


@dataclass
class Prediction:
    """One image's verdict; `realness` is None when the file could not be read (see `error`)."""

    path: str
    realness: float | None  # calibrated
    verdict: str  # "real", "fake", "unreadable", or "error" (a non-finite score)
    error: str | None = None
    raw: float | None = None  # the model's own score, before calibration

    def as_row(self, with_raw: bool = False) -> dict[str, Any]:
        """What predict prints as JSON and writes as CSV (scores to 6 decimals)."""
        row = {**asdict(self), "realness": _rounded(self.realness), "raw": _rounded(self.raw)}
        if not with_raw:
            del row["raw"]
        return row


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def calibration_of(checkpoint: Checkpoint) -> Calibration:
    """The checkpoint's calibration, or identity with threshold 0.5 for one that has none."""
    return checkpoint.calibration or IDENTITY


# Scores are clamped this far from 0 and 1 before their logits are averaged: an fp32 sigmoid
# saturates to exactly 1.0, whose logit is infinite.
VIEW_SCORE_EPS = 1e-6


def score_views(
    model: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: torch.Tensor
) -> torch.Tensor:
    """Raw realness (B,) of float images (B, 3, S, S), or of (B, V, 3, S, S) views of each image:
    the views' scores are averaged as logits (a view that is sure counts for more than one
    near 0.5, as the detector's evidence adds up), then mapped back to [0, 1]."""
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
    (default: the calibration's), in input order."""
    check_crops(crops)
    device = next(model.parameters()).device
    samples = [Sample(str(path), 0.0) for path in paths]
    workers = default_num_workers(device_type=device.type) if num_workers is None else num_workers
    workers = min(workers, max(0, len(samples) // batch_size))  # no processes for a few images
    loader = make_loader(
        samples,
        EvalTransform(img_size, crops),
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
        if index in realness and not np.isfinite(realness[index]):
            reason = "the model gave a non-finite score (its weights diverged)"
            predictions.append(Prediction(sample.path, None, "error", reason))
        elif index in realness:
            calibrated = float(calibration.apply(np.array(realness[index])))
            verdict = "real" if calibrated >= cut else "fake"
            predictions.append(Prediction(sample.path, calibrated, verdict, raw=realness[index]))
        else:
            reason = errors.get(sample.path, "could not be read")
            predictions.append(Prediction(sample.path, None, "unreadable", reason))
    return predictions


def predictions_csv(predictions: Sequence[Prediction], with_raw: bool = False) -> str:
    """The CSV text: path, realness, verdict, error (and raw) per image."""
    buffer = io.StringIO()
    columns = ["path", "realness", "verdict", "error"] + (["raw"] if with_raw else [])
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(prediction.as_row(with_raw) for prediction in predictions)
    return buffer.getvalue()


def write_predictions_csv(
    path: Path, predictions: Sequence[Prediction], with_raw: bool = False
) -> None:
    """predictions_csv, written atomically to `path`.

    Raises:
        WriteError: the file cannot be written.
    """
    atomic_write_text(path, predictions_csv(predictions, with_raw))


@dataclass
class ScoredSet:
    """A labelled set scored by a checkpoint's model: raw scores and the trainer's metrics."""

    checkpoint: Checkpoint
    index: DatasetIndex
    split: str  # val, train or all
    scored: str  # which images, in words
    metrics: dict[str, float]  # loss terms and detection metrics of the raw scores at 0.5
    scores: Scores
    skipped: dict[str, str]


def _labelled_split(
    checkpoint: Checkpoint, data_root: Path, split: str, use_csv: bool | None
) -> tuple[DatasetIndex, str, str, list[Sample]]:
    """(index, split, which images in words, its samples) of `data_root` under the checkpoint's
    split rule; `split` "auto" as `score_labelled_set` says.

    Raises:
        UsageError: an unknown split; DataError: an empty one.
    """
    if split not in ("auto", "val", "train", "all"):
        raise UsageError(f"--split {split!r} is not one of auto, val, train, all.")
    index = index_dataset(checkpoint.config, data_root, use_csv, allow_test_set=True)
    scored = "the val split"
    if split == "auto":
        split = "val" if index.has_train_split else "all"
        if split == "all":
            scored = "every image (no train split: a test set)"
    elif split != "val":
        scored = "every image" if split == "all" else "the train split"
    samples = {"val": index.val, "train": index.train, "all": index.train + index.val}[split]
    if not samples:
        raise DataError(f"The {split} split of {data_root} has no images.")
    return index, split, scored, samples


def score_labelled_set(
    path: Path,
    data_root: Path,
    split: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    use_csv: bool | None = None,
) -> ScoredSet:
    """Score one split of a labelled dataset with a checkpoint, as the trainer validates.

    `split` "auto" is the val split of a set that has a train split, and every image of one that
    has none (only val/ or test/, or plain class folders: a test set). The split rule, the loss
    weights and (by default) the batch size come from the checkpoint's config.

    Raises:
        UsageError: an unknown split; DataError / CheckpointError as the loaders raise them.
    """
    model, checkpoint = load_detector(path, device)
    config = checkpoint.config
    index, split, scored, samples = _labelled_split(checkpoint, data_root, split, use_csv)
    on_device = next(model.parameters()).device
    workers = (
        default_num_workers(device_type=on_device.type) if num_workers is None else num_workers
    )
    loader = make_eval_loader(
        samples,
        checkpoint.img_size,
        batch_size or checkpoint.batch_size,
        config.seed,
        **loader_options(on_device, workers, persistent_workers=False),
    )
    skipped: dict[str, str] = dict(index.skipped)
    metrics, scores = evaluate(
        model,
        loader,
        on_device,
        FP32,
        build_loss(config),
        on_skipped=lambda bad: skipped.update(dict(bad)),
    )
    return ScoredSet(checkpoint, index, split, scored, metrics, scores, skipped)


def validate_checkpoint(
    path: Path,
    data_root: Path,
    split: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    use_csv: bool | None = None,
    plots_dir: Path | None = None,
) -> dict[str, Any]:
    """Score a labelled dataset with a checkpoint: the trainer's validation metrics, any split
    (see `score_labelled_set`), so on the training data it reproduces the run's own val numbers.

    Accuracy is at the checkpoint's stored threshold on calibrated realness; `ece` is of the
    calibrated scores and `ece_raw` of the model's own. `plots_dir` receives roc_pr.png,
    confusion.png, score_hist.png and hardest.png.

    Raises:
        UsageError: an unknown split; DataError / CheckpointError as the loaders raise them.
    """
    result = score_labelled_set(path, data_root, split, device, batch_size, num_workers, use_csv)
    checkpoint, scores = result.checkpoint, result.scores
    calibration = calibration_of(checkpoint)
    calibrated = calibration.apply(scores.scores)
    is_real = (scores.labels >= 0.5).astype(float)
    at_threshold = detection_metrics(calibrated, scores.labels, calibration.threshold)
    metrics = {
        **result.metrics,  # loss terms, and AUC / AP of the raw ranking
        **{name: at_threshold[name] for name in ("accuracy", "real_acc", "fake_acc")},
        "ece": expected_calibration_error(calibrated, is_real),
        "ece_raw": expected_calibration_error(scores.scores, is_real),
    }
    plots: list[str] = []
    if plots_dir is not None:
        from fakedet.plots import write_evaluation_plots

        ensure_folder(plots_dir)
        caption = f"{result.split} split, epoch {checkpoint.state.epoch}"
        written = write_evaluation_plots(
            plots_dir, scores.paths, calibrated, scores.labels, caption
        )
        plots = [str(path) for path in written]
    real = int(is_real.sum())
    return {
        "checkpoint": str(checkpoint_path(path)),
        "data_root": str(data_root),
        "split": result.split,
        "scored": result.scored,
        "layout": result.index.layout,
        "images": len(scores.paths),
        "real": real,
        "fake": len(scores.paths) - real,
        "calibration": calibration.to_dict() if checkpoint.calibration else None,
        "threshold": calibration.threshold,
        "skipped": sorted(result.skipped.items()),
        "metrics": json_safe(metrics),
        "plots": plots,
    }


def calibrate_checkpoint(
    path: Path,
    data_root: Path,
    output: Path,
    split: str = "auto",
    method: str = "temperature",
    rule: str = "fixed:0.5",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    use_csv: bool | None = None,
    crops: int = 1,
) -> Calibration:
    """Refit a checkpoint's calibration and threshold on a labelled split; write it to `output`.
    With `crops` 5 the fit is on the scores `predict --crops 5` gives (five views per image).

    Raises:
        UsageError: `output` is the input checkpoint (it is never overwritten), a bad method or
            rule, or a split without both classes.
    """
    source = checkpoint_path(path)
    if output.resolve() == source.resolve() or output.is_dir():
        raise UsageError(
            f"--output {output} must be a new file, not the checkpoint being calibrated "
            f"({source}) or a folder: calibrate never overwrites its input."
        )
    check_method(method)
    parse_rule(rule)
    check_crops(crops)
    if crops == 1:  # as the trainer validates
        result = score_labelled_set(
            path, data_root, split, device, batch_size, num_workers, use_csv
        )
        checkpoint, scored = result.checkpoint, result.scored
        scores, labels = result.scores.scores, result.scores.labels
    else:  # as `predict --crops` scores; unreadable files are left out, as validation does
        model, checkpoint = load_detector(path, device)
        _, _, scored, samples = _labelled_split(checkpoint, data_root, split, use_csv)
        predictions = predict_images(
            model,
            [Path(sample.path) for sample in samples],
            checkpoint.img_size,
            batch_size=batch_size or checkpoint.batch_size,
            num_workers=num_workers,
            crops=crops,
        )  # in input order: prediction i is sample i
        read = [
            (p.raw, s.label) for p, s in zip(predictions, samples, strict=True) if p.raw is not None
        ]
        scores, labels = np.array([raw for raw, _ in read]), np.array([label for _, label in read])
        scored = f"{scored}, {crops} views per image"
    calibration = fit_calibration(scores, labels, method, rule, f"{data_root} ({scored})")
    checkpoint.calibration = calibration
    save_checkpoint(output, checkpoint)
    return calibration


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """What a checkpoint holds: versions, model, progress, best and last metrics, config."""
    source = checkpoint_path(path)
    model, checkpoint = load_detector(source, "cpu")
    state = checkpoint.state
    return {
        "path": str(source),
        "size_mb": round(source.stat().st_size / 1024**2, 2),
        "fakedet_version": checkpoint.fakedet_version,
        "torch_version": checkpoint.torch_version,
        "mode": checkpoint.model_name,
        "img_size": checkpoint.img_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epoch": state.epoch,
        "epochs_configured": checkpoint.config.epochs,
        "global_step": state.global_step,
        "interrupted_at_batch": state.batches_done or None,
        "best_epoch": state.best_epoch,
        "best_val_loss": finite_or_none(state.best_val_loss),
        "epochs_without_improvement": state.epochs_without_improvement,
        "nonfinite_steps": state.nonfinite_steps,
        "last_metrics": state.history[-1] if state.history else {},
        "config": config_to_dict(checkpoint.config),
        "history": state.history,
        "calibration": checkpoint.calibration.to_dict() if checkpoint.calibration else None,
        "calibration_text": calibration_of(checkpoint).describe(),
    }
