"""Scoring a labelled dataset with a checkpoint: the validate and calibrate commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fakedet.checkpoints.calibration import Calibration, check_method, parse_rule
from fakedet.checkpoints.files import checkpoint_path, save_checkpoint
from fakedet.checkpoints.schema import Checkpoint
from fakedet.data.loader import loader_options
from fakedet.data.processing import BY_LABEL
from fakedet.data.transforms import check_crops
from fakedet.errors import DataError, UsageError
from fakedet.evaluation.calibration import fit_calibration
from fakedet.evaluation.metrics import detection_metrics, expected_calibration_error
from fakedet.evaluation.validation import Scores, build_loss, evaluate, make_eval_loader
from fakedet.hardware import workers_or_default
from fakedet.inference.predictor import calibration_of, load_detector, predict_images
from fakedet.io import ensure_folder, json_safe
from fakedet.runtime import FP32
from fakedet.sources.layouts import index_dataset
from fakedet.sources.samples import DatasetIndex, Sample


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
    samples = _split_samples(index, split)
    if not samples:
        raise DataError(f"The {split} split of {data_root} has no images.")
    return index, split, scored, samples


def _split_samples(index: DatasetIndex, split: str) -> list[Sample]:
    """The samples of one resolved split (val, train or all) of an index."""
    return {"val": index.val, "train": index.train, "all": index.train + index.val}[split]


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
    workers = workers_or_default(num_workers, on_device.type)
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


@dataclass
class ValidationReport:
    """What `fakedet validate` reports; `to_dict()` is its JSON."""

    checkpoint: str
    data_root: str
    split: str  # val, train or all
    scored: str  # which images, in words
    layout: str
    images: int
    real: int
    fake: int
    calibration: dict[str, Any] | None  # the stored calibration, None for an uncalibrated one
    threshold: float
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files
    metrics: dict[str, Any]  # loss terms, AUC, AP, accuracy at the threshold, ECE
    plots: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_checkpoint(
    path: Path,
    data_root: Path,
    split: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    use_csv: bool | None = None,
    plots_dir: Path | None = None,
) -> ValidationReport:
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
    return ValidationReport(
        checkpoint=str(checkpoint_path(path)),
        data_root=str(data_root),
        split=result.split,
        scored=result.scored,
        layout=result.index.layout,
        images=len(scores.paths),
        real=real,
        fake=len(scores.paths) - real,
        calibration=calibration.to_dict() if checkpoint.calibration else None,
        threshold=calibration.threshold,
        skipped=sorted(result.skipped.items()),
        metrics=json_safe(metrics),
        plots=plots,
    )


def calibrate_checkpoint(
    path: Path,
    data_root: Path,
    output: Path,
    split: str = "auto",
    method: str = "auto",
    rule: str = "fixed:0.5",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    use_csv: bool | None = None,
    crops: int = 1,
    processing: Sequence[str] = (),
    processing_on: str = "both",
) -> Calibration:
    """Refit a checkpoint's calibration and threshold on a labelled split; write it to `output`.
    With `crops` 5 the fit is on the scores `predict --crops 5` gives (five views per image).
    Each `processing` kind (`fakedet.data.processing`: jpeg75, downscale0.5, ...) adds a copy of
    every image of the split, both classes, after that kind: the map and the threshold are then
    fitted for images that may have been re-saved or re-sized on their way, as deployed ones are.
    An `fpr`/`fnr` rule then reads each image's worst version (lowest realness of a real image,
    highest of a fake, over the original and its copies), so its guarantee counts images, not
    copies, and holds for every version. `processing_on` "real" processes the real images only
    and changes the threshold alone: the map is fitted on the originals, and the rule must be
    `fpr` (the one that reads the reals).

    Raises:
        UsageError: `output` is the input checkpoint (it is never overwritten), a bad method,
            rule or processing kind, or a split without both classes.
    """
    source = checkpoint_path(path)
    if output.resolve() == source.resolve() or output.is_dir():
        raise UsageError(
            f"--output {output} must be a new file, not the checkpoint being calibrated "
            f"({source}) or a folder: calibrate never overwrites its input."
        )
    check_method(method)
    rule_kind = parse_rule(rule)[0]
    check_crops(crops)
    kinds = _processing_kinds(processing)
    if processing_on not in ("both", "real"):
        raise UsageError(f"--processing-on {processing_on!r} is not one of both, real.")
    if kinds and processing_on == "real" and rule_kind != "fpr":
        raise UsageError(
            f"--processing-on real sets the threshold from the real images, which only an fpr "
            f"rule reads; --threshold-rule {rule} would ignore them: add --threshold-rule "
            "fpr:0.05 (or process both classes)."
        )
    if crops == 1:  # as the trainer validates
        result = score_labelled_set(
            path, data_root, split, device, batch_size, num_workers, use_csv
        )
        checkpoint, scored = result.checkpoint, result.scored
        scores, labels = result.scores.scores, result.scores.labels
        paths = result.scores.paths
        samples = _split_samples(result.index, result.split)
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
            (p.raw, s.label, s.path)
            for p, s in zip(predictions, samples, strict=True)
            if p.raw is not None
        ]
        scores, labels = np.array([raw for raw, *_ in read]), np.array([row[1] for row in read])
        paths = [path for *_, path in read]
        scored = f"{scored}, {crops} views per image"
    threshold_on = None
    if kinds:
        row = {sample.path: number for number, sample in enumerate(samples)}
        samples = [samples[row[image]] for image in paths]  # as `scores`: the images read
        processed = _processed_scores(
            path,
            samples,
            [sample.label >= 0.5 or processing_on == "both" for sample in samples],
            kinds,
            device,
            batch_size or checkpoint.batch_size,
            num_workers,
            crops,
        )  # (kinds, images), NaN where a version was not scored
        versions = np.vstack([scores, processed])
        is_real = labels >= 0.5
        worst = np.where(is_real, np.nanmin(versions, axis=0), np.nanmax(versions, axis=0))
        if rule_kind in ("fpr", "fnr"):
            threshold_on = (worst, labels)
        if processing_on == "both":
            copies = np.isfinite(processed)
            labels = np.concatenate([labels, np.broadcast_to(labels, processed.shape)[copies]])
            scores = np.concatenate([scores, processed[copies]])
        which = "each" if processing_on == "both" else "each real one"
        scored = f"{scored}, and a copy of {which} after {', '.join(kinds)}"
    calibration = fit_calibration(
        scores, labels, method, rule, f"{data_root} ({scored})", paths, threshold_on
    )
    if threshold_on is not None and calibration.guarantee is not None:
        calibration.guarantee.versions = ", ".join(kinds)
    checkpoint.calibration = calibration
    save_checkpoint(output, checkpoint)
    return calibration


def _processing_kinds(names: Sequence[str]) -> list[str]:
    """The processing kinds named, in order, once each; "all" is every kind.

    Raises:
        UsageError: an unknown kind, naming the known ones.
    """
    kinds = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    if "all" in kinds:
        return list(BY_LABEL)
    unknown = [name for name in kinds if name not in BY_LABEL]
    if unknown:
        raise UsageError(
            f"--processing {unknown[0]!r} is not a processing kind; use one or more of "
            f"{', '.join(BY_LABEL)}."
        )
    return kinds


def _processed_scores(
    path: Path,
    samples: Sequence[Sample],
    chosen: Sequence[bool],
    kinds: Sequence[str],
    device: str,
    batch_size: int,
    num_workers: int | None,
    crops: int,
) -> np.ndarray:
    """Raw realness (kinds, samples) of the `chosen` samples after each processing kind, scored
    as `evaluate --processing` scores them; NaN for the others and for a file that cannot be
    read or is too small after the kind (validation leaves unreadable files out)."""
    from fakedet.evaluation.testset import load_detectors, score_samples
    from fakedet.runtime import resolve_device

    resolved = resolve_device(device)
    detectors = load_detectors([path], resolved)
    workers = workers_or_default(num_workers, resolved.type)
    picked = np.flatnonzero(np.asarray(chosen, dtype=bool))
    realness = np.full((len(kinds), len(samples)), np.nan)
    for number, kind in enumerate(kinds):
        realness[number, picked] = score_samples(
            [samples[i] for i in picked],
            detectors,
            BY_LABEL[kind],
            resolved,
            batch_size,
            workers,
            crops=crops,
        )[0][0]
    return realness
