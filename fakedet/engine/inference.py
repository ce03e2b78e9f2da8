"""Using a trained detector: load it from a checkpoint, score image files, validate a labelled
set, and describe what a checkpoint holds. The CLI's predict / validate / inspect-checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakedet.config import default_num_workers
from fakedet.data.layouts import IMAGE_SUFFIXES, Sample, build_index
from fakedet.data.loader import make_loader
from fakedet.data.transforms import EvalTransform, pixels_to_float
from fakedet.engine.checkpoint import load_checkpoint
from fakedet.engine.evaluate import evaluate, make_eval_loader
from fakedet.engine.losses import detector_loss
from fakedet.engine.metrics import finite_or_none, json_safe
from fakedet.engine.resume import checkpoint_path
from fakedet.engine.runtime import Precision, resolve_device
from fakedet.errors import CheckpointError, DataError, UsageError
from fakedet.models import create_model

FP32 = Precision(False, torch.float32, False, "fp32")


def checkpoint_img_size(state: dict[str, Any]) -> int:
    """The image size the checkpoint's model was trained at."""
    return int(state.get("img_size") or state["config"]["img_size"])


def build_detector(state: dict[str, Any], source: Path) -> nn.Module:
    """The checkpoint's model with its weights, in eval mode, on the CPU."""
    model = create_model(str(state["mode"]), img_size=checkpoint_img_size(state))
    try:
        model.load_state_dict(state["model_state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(
            f"{source} does not fit this fakedet's {state['mode']} model (saved by fakedet "
            f"{state.get('fakedet_version', '?')}: {first}); use the fakedet version that "
            "trained it."
        ) from None
    return model.eval()


def load_detector(path: Path, device: str = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint (file or output folder) into a ready model on `device`."""
    source = checkpoint_path(path)
    state = load_checkpoint(source)
    model = build_detector(state, source).to(resolve_device(device))
    return model, state


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
    realness: float | None
    verdict: str  # "real", "fake" or "unreadable"
    error: str | None = None


@torch.no_grad()
def predict_images(
    model: nn.Module,
    paths: Sequence[Path],
    img_size: int,
    threshold: float = 0.5,
    batch_size: int = 32,
    num_workers: int | None = None,
) -> list[Prediction]:
    """Realness of each image (a centre crop of `img_size`, as in validation), in input order."""
    device = next(model.parameters()).device
    samples = [Sample(str(path), 0.0) for path in paths]
    workers = default_num_workers() if num_workers is None else num_workers
    workers = min(workers, max(0, len(samples) // batch_size))  # no processes for a few images
    loader = make_loader(
        samples,
        EvalTransform(img_size),
        batch_size,
        train=False,
        seed=0,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=2,
        drop_last=False,
        worker_nice=19 if device.type == "cpu" else 0,
    )
    model.eval()
    realness: dict[int, float] = {}
    errors: dict[str, str] = {}
    for batch in loader:
        errors.update(dict(batch["skipped"]))
        if batch["images"] is None:
            continue
        scores = model(pixels_to_float(batch["images"], device))["score"].float().cpu()
        realness.update(zip(batch["indices"].tolist(), scores.tolist(), strict=True))
    predictions = []
    for index, sample in enumerate(samples):
        if index in realness:
            verdict = "real" if realness[index] >= threshold else "fake"
            predictions.append(Prediction(sample.path, realness[index], verdict))
        else:
            reason = errors.get(sample.path, "could not be read")
            predictions.append(Prediction(sample.path, None, "unreadable", reason))
    return predictions


def validate_checkpoint(
    path: Path,
    data_root: Path,
    split: str = "val",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    use_csv: bool | None = None,
    plots_dir: Path | None = None,
) -> dict[str, Any]:
    """Score a labelled dataset with a checkpoint: the trainer's validation metrics, any split.

    The split, the loss weights and (by default) the batch size come from the checkpoint's
    config, so `validate` on the training data reproduces the run's own val numbers.
    `plots_dir` receives roc_pr.png, confusion.png, score_hist.png and hardest.png.

    Raises:
        UsageError: an unknown split; DataError / CheckpointError as the loaders raise them.
    """
    if split not in ("val", "train", "all"):
        raise UsageError(f"--split {split!r} is not one of val, train, all.")
    model, state = load_detector(path, device)
    config = state["config"]
    index = build_index(
        data_root,
        bool(config.get("use_csv")) if use_csv is None else use_csv,
        float(config.get("val_split", 0.1)),
        int(config.get("seed", 42)),
    )
    samples = {"val": index.val, "train": index.train, "all": index.train + index.val}[split]
    if not samples:
        raise DataError(f"The {split} split of {data_root} has no images.")
    saved_batch = state.get("batch_size") or config.get("batch_size")
    size = batch_size or (int(saved_batch) if str(saved_batch).isdigit() else 16)
    workers = default_num_workers() if num_workers is None else num_workers
    on_device = next(model.parameters()).device
    loader = make_eval_loader(
        samples,
        checkpoint_img_size(state),
        size,
        int(config.get("seed", 42)),
        num_workers=workers,
        pin_memory=on_device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=2,
        worker_nice=19 if on_device.type == "cpu" else 0,
    )
    skipped: dict[str, str] = dict(index.skipped)

    def loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> Any:
        return detector_loss(
            outputs["score"],
            outputs["logits"],
            labels,
            float(config["regression_weight"]),
            float(config["classification_weight"]),
            float(config["ranking_weight"]),
            float(config["ranking_margin"]),
        )

    metrics, scores = evaluate(
        model, loader, on_device, FP32, loss, on_skipped=lambda bad: skipped.update(dict(bad))
    )
    real = int((scores.labels >= 0.5).sum())
    plots: list[str] = []
    if plots_dir is not None:
        from fakedet.plots import write_evaluation_plots

        plots_dir.mkdir(parents=True, exist_ok=True)
        caption = f"{split} split, epoch {state['epoch']}"
        written = write_evaluation_plots(
            plots_dir, scores.paths, scores.scores, scores.labels, caption
        )
        plots = [str(path) for path in written]
    return {
        "checkpoint": str(checkpoint_path(path)),
        "data_root": str(data_root),
        "split": split,
        "layout": index.layout,
        "images": len(scores.paths),
        "real": real,
        "fake": len(scores.paths) - real,
        "skipped": sorted(skipped.items()),
        "metrics": json_safe(metrics),
        "plots": plots,
    }


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """What a checkpoint holds: versions, model, progress, best and last metrics, config."""
    source = checkpoint_path(path)
    state = load_checkpoint(source)
    model = build_detector(state, source)
    history = list(state.get("history", []))
    return {
        "path": str(source),
        "size_mb": round(source.stat().st_size / 1024**2, 2),
        "fakedet_version": state.get("fakedet_version"),
        "torch_version": state.get("torch_version"),
        "mode": state["mode"],
        "img_size": checkpoint_img_size(state),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epoch": int(state["epoch"]),
        "epochs_configured": int(state["config"]["epochs"]),
        "global_step": int(state["global_step"]),
        "interrupted_at_batch": int(state.get("batches_done", 0)) or None,
        "best_epoch": state.get("best_epoch"),
        "best_val_loss": finite_or_none(float(state["best_val_loss"])),
        "epochs_without_improvement": state.get("epochs_without_improvement"),
        "nonfinite_steps": state.get("nonfinite_steps"),
        "last_metrics": history[-1] if history else {},
        "config": state["config"],
        "history": history,
    }
