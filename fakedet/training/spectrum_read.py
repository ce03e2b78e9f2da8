"""Fit the spectral branch's linear read of the radial log spectrum once, before training.

The read (models/coherence.py) is a logistic regression on 32 fixed features of the input's FFT:
nothing upstream of it learns, so its best weights are a convex fit that scikit-learn finds in
well under a second. Trained by SGD inside the detector instead, it stayed far from that fit in a
short run (the cross-generator protocol's 5 epochs are 50 steps: train accuracy 0.82-0.91 where
the fit reaches 0.90-0.98, a quarter of the weight norm), and an SGD step large enough to get there
made it noisy. Fitted first and then frozen, it is the classic spectral detector at full strength
inside the model, and the CNN and the coherence cue train around it (docs/protocol.md: full model
`laundered` 0.881 -> 0.918 mean AUC over seeds 0-2).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from fakedet.data.transforms import pixels_to_float
from fakedet.evaluation.validation import make_eval_loader
from fakedet.models.loading import forward_batch
from fakedet.sources.samples import Sample

# Enough for 32 features (the fit's train accuracy is flat past a few hundred images) and a few
# seconds of decoding whatever the dataset's size. A seeded draw: every DDP rank fits the same.
READ_FIT_IMAGES = 4096
# scikit-learn's default L2 strength, as the spectral baseline (benchmarks/spectral_baseline.py).
READ_FIT_C = 1.0


@dataclass(frozen=True)
class ReadFit:
    """What the fit saw and reached, for the run's log."""

    images: int
    train_accuracy: float
    seconds: float

    def describe(self) -> str:
        return (
            f"spectrum read fitted on {self.images} train images in {self.seconds:.1f} s "
            f"(logistic regression, train accuracy {self.train_accuracy:.3f}), then frozen"
        )


def _profiles(
    branch: nn.Module,
    samples: Sequence[Sample],
    img_size: int,
    batch_size: int,
    device: torch.device,
    loader_options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """(N, bins) radial log spectra of the samples' centre crops, and their labels (1 = real)."""
    loader = make_eval_loader(samples, img_size, batch_size, seed=0, **loader_options)
    rows, labels = [], []
    with torch.no_grad():
        for batch in loader:
            if batch["images"] is None:  # every image of the batch unreadable (reported later)
                continue
            images = pixels_to_float(batch["images"], device)
            rows.append(forward_batch(branch.profiles, images)[1].double().cpu())
            labels.append((batch["labels"] >= 0.5).long())
    if not rows:
        return np.empty((0, 0)), np.empty(0, dtype=np.int64)
    return torch.cat(rows).numpy(), torch.cat(labels).numpy()


def fit_spectrum_read(
    model: nn.Module,
    samples: Sequence[Sample],
    img_size: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    loader_options: dict[str, Any],
) -> ReadFit | None:
    """Set `model`'s spectrum read to a logistic regression on up to READ_FIT_IMAGES of
    `samples` (centre crops); None, read untouched, when the model has none or the draw lacks a
    class."""
    branch = getattr(model, "coherence_branch", None)
    if branch is None:
        return None
    started = time.perf_counter()
    chosen = list(samples)
    if len(chosen) > READ_FIT_IMAGES:
        chosen = random.Random(seed).sample(chosen, READ_FIT_IMAGES)
    options = {**loader_options, "persistent_workers": False}  # one pass: no workers kept
    features, labels = _profiles(branch, chosen, img_size, batch_size, device, options)
    if len(np.unique(labels)) < 2:
        return None
    mean, variance = features.mean(axis=0), features.var(axis=0)
    standardized = (features - mean) / np.sqrt(variance + branch.spectrum_norm.eps)
    regression = LogisticRegression(C=READ_FIT_C, max_iter=5000).fit(standardized, labels)
    branch.set_spectrum_read(mean, variance, regression.coef_[0], float(regression.intercept_[0]))
    accuracy = float(regression.score(standardized, labels))
    return ReadFit(len(labels), accuracy, time.perf_counter() - started)
