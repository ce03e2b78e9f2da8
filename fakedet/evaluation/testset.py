"""`fakedet evaluate`: score a test set per group (generator) and perturbation with one or more
checkpoints, as the field reports it.

Each image is decoded once per perturbation level and cropped once per image size in use, and
every checkpoint scores those same crops: K checkpoints cost K forward passes, not K decodes.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fakedet.checkpoints.calibration import Calibration
from fakedet.checkpoints.files import checkpoint_path
from fakedet.data.dataset import stack_images
from fakedet.data.loader import init_worker, loader_options
from fakedet.data.perturb import Perturbation, parse_perturbations
from fakedet.data.processing import SUITE, Processing
from fakedet.data.transforms import (
    MIN_SIDE,
    EvalTransform,
    check_crops,
    load_rgb,
    pixels_to_float,
)
from fakedet.evaluation.metrics import group_metrics
from fakedet.evaluation.report import EvaluationReport, GroupResult, SkippedFile
from fakedet.hardware import workers_or_default
from fakedet.inference.predictor import (
    calibration_of,
    load_detector,
    min_input_side,
    prepared_for_scoring,
    score_views,
)
from fakedet.runtime import resolve_device
from fakedet.sources.layouts import TestSet, discover_test_set
from fakedet.sources.samples import Sample


@dataclass
class Detector:
    """A loaded checkpoint ready to score: its name in the report, model, size and threshold."""

    name: str
    model: nn.Module
    img_size: int
    calibration: Calibration = field(default_factory=Calibration)  # identity: raw scores

    @property
    def threshold(self) -> float:
        return self.calibration.threshold


class PerturbedCrops(Dataset):
    """Item i: sample i decoded once, perturbed, and cropped at every size in `sizes` (the centre,
    or with `views` 5 the centre and the four corners)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        perturbation: Perturbation | Processing,
        sizes: Sequence[int],
        views: int = 1,
        min_side: int = MIN_SIDE,
    ) -> None:
        self.samples = list(samples)
        self.perturbation = perturbation
        self.crops = {size: EvalTransform(size, views, min_side) for size in sizes}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.samples[index].path
        try:
            image = self.perturbation.apply(load_rgb(path), key=path)
            crops = {size: crop(image) for size, crop in self.crops.items()}
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return {"index": index, "crops": None, "error": (path, str(exc))}
        return {"index": index, "crops": crops, "error": None}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [item for item in items if item["crops"] is not None]
    sizes = good[0]["crops"].keys() if good else ()
    return {
        "indices": [item["index"] for item in good],
        # size -> (B, 3, size, size) uint8 (a list where smaller images join the batch)
        "crops": {size: stack_images([item["crops"][size] for item in good]) for size in sizes},
        "skipped": [item["error"] for item in items if item["crops"] is None],
    }


@torch.no_grad()
def score_samples(
    samples: Sequence[Sample],
    detectors: Sequence[Detector],
    perturbation: Perturbation | Processing,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    crops: int = 1,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Realness of every sample under `perturbation` by every detector: (detectors, samples),
    NaN where the file could not be decoded; plus those files as (path, reason). With `crops`
    5 each image's five views are scored and averaged as logits (`score_views`). An image below
    a detector's minimum side (data/transforms.py) has no score from any detector: it is listed
    with the unreadable files, its reason "too small"."""
    sizes = sorted({d.img_size for d in detectors})
    min_side = max(min_input_side(d.model, d.img_size) for d in detectors)
    dataset = PerturbedCrops(samples, perturbation, sizes, crops, min_side)
    options = loader_options(device, num_workers)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=_collate,
        num_workers=num_workers,
        pin_memory=options["pin_memory"],
        prefetch_factor=options["prefetch_factor"] if num_workers else None,
        worker_init_fn=functools.partial(init_worker, nice=options["worker_nice"]),
    )
    scores = np.full((len(detectors), len(samples)), np.nan)
    skipped: list[tuple[str, str]] = []
    for batch in loader:
        skipped += batch["skipped"]
        if batch["indices"]:
            images = {
                size: pixels_to_float(crops, device) for size, crops in batch["crops"].items()
            }
            for row, detector in enumerate(detectors):
                realness = score_views(detector.model, images[detector.img_size]).cpu()
                scores[row, batch["indices"]] = realness.numpy()
        if on_batch is not None:
            on_batch(len(batch["indices"]) + len(batch["skipped"]))
    return scores, skipped


def load_detectors(paths: Sequence[Path], device: torch.device) -> list[Detector]:
    """Every checkpoint (file or output folder) as a Detector; names are the paths as given."""
    detectors = []
    for path in paths:
        model, checkpoint = load_detector(path, str(device))
        model = prepared_for_scoring(model)  # evaluation only reads scores
        name = str(checkpoint_path(path))
        detectors.append(Detector(name, model, checkpoint.img_size, calibration_of(checkpoint)))
    return detectors


def _realness_shift(
    calibrated: np.ndarray, unperturbed: np.ndarray, reals: np.ndarray
) -> float | None:
    both = reals & np.isfinite(calibrated) & np.isfinite(unperturbed)
    return float(np.mean(calibrated[both] - unperturbed[both])) if both.any() else None


def group_results(
    test_set: TestSet,
    detector: Detector,
    perturbation: Perturbation | Processing,
    realness: np.ndarray,
    skipped_paths: Sequence[str],
    unperturbed: np.ndarray | None = None,
) -> list[GroupResult]:
    """One result row per group, then the mean row, for one detector and one perturbation.
    `unperturbed` is the detector's raw realness of the unperturbed images (default: these),
    which `realness_shift` is measured from."""
    labels = np.array([sample.label for sample in test_set.samples])
    groups = np.array([sample.group for sample in test_set.samples])
    unreadable_in = Counter(test_set.group_of[path] for path in skipped_paths)
    rows = []
    calibrated = detector.calibration.apply(realness)
    baseline = calibrated if unperturbed is None else detector.calibration.apply(unperturbed)
    for group in test_set.groups:
        members = (groups == group) & np.isfinite(realness)
        metrics, notes = group_metrics(
            calibrated[members], labels[members], detector.threshold, realness[members]
        )
        shift = _realness_shift(calibrated, baseline, (groups == group) & (labels >= 0.5))
        unreadable = unreadable_in[group]
        if unreadable:
            notes.append(f"{unreadable} unreadable file(s) skipped")
        rows.append(
            GroupResult.of_group(detector.name, group, perturbation.name, metrics, shift, notes)
        )
    return [*rows, GroupResult.mean_of(rows)]


def evaluate_test_set(
    test_root: Path,
    checkpoints: Sequence[Path],
    perturb: Sequence[str] = (),
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str = "auto",
    use_csv: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_images: Callable[[int], None] | None = None,
    crops: int = 1,
    processing: bool = False,
) -> EvaluationReport:
    """Score every image under `test_root` with every checkpoint, per group and perturbation.

    Args:
        test_root: the test set (see `discover_test_set` for its layouts).
        checkpoints: checkpoint files or output folders; image sizes may differ.
        perturb: "KIND:LEVEL[,LEVEL...]" specs; the unperturbed column is always there.
        batch_size, num_workers, device: how to score.
        use_csv: read labels (and generators) from labels.csv or test.csv.
        on_start: called once with the number of images to score (all perturbations).
        on_images: called with the number of images finished after each batch.
        crops: 1 (the centre crop) or 5 (centre and corners, scores averaged as logits).
        processing: also run the everyday-processing suite (`fakedet.data.processing`), each
            kind a row named like "processing:jpeg60".

    Returns:
        The report: per checkpoint and perturbation, a row per group and the mean row; the
        files not scored.

    Raises:
        UsageError: bad perturbations or --crops, no labelled image, or a checkpoint that is not
            one.
    """
    check_crops(crops)
    perturbations = parse_perturbations(list(perturb))
    processed = list(SUITE) if processing else []
    test_set = discover_test_set(test_root, use_csv)
    resolved = resolve_device(device)
    detectors = load_detectors(checkpoints, resolved)
    workers = workers_or_default(num_workers, resolved.type)
    workers = min(workers, max(0, len(test_set.samples) // batch_size))  # few images: no workers
    if on_start is not None:
        on_start(len(test_set.samples) * (len(perturbations) + len(processed)))
    results: list[GroupResult] = []
    skipped = dict(test_set.skipped)
    unperturbed = None
    for perturbation in [*perturbations, *processed]:  # the unperturbed first
        scores, unreadable = score_samples(
            test_set.samples, detectors, perturbation, resolved, batch_size, workers, on_images,
            crops,
        )  # fmt: skip
        unperturbed = scores if unperturbed is None else unperturbed
        skipped.update(unreadable)
        for row, detector in enumerate(detectors):
            results += group_results(
                test_set, detector, perturbation, scores[row], list(skipped), unperturbed[row]
            )
    return EvaluationReport(
        test_root=str(test_root),
        layout=test_set.layout,
        images=len(test_set.samples),
        groups=test_set.groups,
        checkpoints=[str(checkpoint_path(path)) for path in checkpoints],
        calibrated={d.name: not d.calibration.is_identity for d in detectors},
        perturbations=[perturbation.name for perturbation in perturbations],
        processing=[kind.name for kind in processed],
        crops=crops,
        results=results,
        skipped=[SkippedFile(path, reason) for path, reason in sorted(skipped.items())],
    )


def explain_test_set(
    test_root: Path, checkpoints: Sequence[Path], out_dir: Path, device: str, use_csv: bool
) -> None:
    """Each checkpoint's patch-score map of every readable test image, written by
    inference.explain.write_explanations to `out_dir/<n>/<group>/` (n: the checkpoint's place).

    Raises:
        OutputPathError: a folder that cannot be created.
    """
    from fakedet.inference.explain import write_explanations

    test_set = discover_test_set(test_root, use_csv)
    for number, detector in enumerate(load_detectors(checkpoints, resolve_device(device))):
        side = min_input_side(detector.model, detector.img_size)
        for group in test_set.groups:
            paths = [Path(s.path) for s in test_set.samples if s.group == group]
            folder = out_dir / str(number) / group
            write_explanations(detector.model, paths, folder, detector.img_size, side)
