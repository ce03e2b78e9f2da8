"""Scoring a labelled set with a model: loss terms, accuracy, AUC/AP. Shared by the Trainer's
validation and `fakedet validate`, so both report the same numbers for the same checkpoint."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fakedet.config import TrainingConfig
from fakedet.data.loader import make_loader
from fakedet.data.transforms import EvalTransform, pixels_to_float
from fakedet.evaluation.metrics import detection_metrics
from fakedet.models.loading import forward_batch
from fakedet.models.losses import (
    DetectorLoss,
    LossSums,
    LossTerms,
    mean_loss_terms,
    zero_loss_sums,
)
from fakedet.runtime import Precision
from fakedet.sources.samples import Sample

LossFunction = Callable[[dict[str, torch.Tensor], torch.Tensor], LossTerms]


def make_eval_loader(
    samples: Sequence[Sample],
    img_size: int,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    **loader_options: Any,
) -> DataLoader:
    """Centre crops in one fixed, seeded order; `loader_options` go to `make_loader`
    (num_workers, pin_memory, persistent_workers, prefetch_factor, worker_nice).

    The shuffle mixes real and fake in every batch, so the ranking term is measured; being
    seeded, the same set always gives the same batches (validate == the trainer's validation).
    `rank` / `world_size` pick this process's share under DDP.
    """
    ordered = list(samples)
    random.Random(seed).shuffle(ordered)
    # Under DDP each rank scores every world_size-th image: no padding, so none counts twice.
    ordered = ordered[rank::world_size]
    return make_loader(
        ordered,
        EvalTransform(img_size),
        batch_size,
        train=False,
        seed=seed,
        drop_last=False,
        **loader_options,
    )


@dataclass
class Scores:
    """Per-image results of an evaluation, in loader order."""

    paths: list[str]
    scores: np.ndarray  # realness in [0, 1]
    labels: np.ndarray  # realness labels


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: Precision,
    loss: LossFunction,
    on_skipped: Callable[[list[tuple[str, str]]], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    parts: Callable[[tuple[dict[str, float], Scores]], list[tuple[dict[str, float], Scores]]]
    | None = None,
) -> tuple[dict[str, float], Scores]:
    """Loss terms (per-image means) and detection metrics of `model` over `loader`.

    Returns metrics named loss, regression, classification, ranking, accuracy, real_acc,
    fake_acc, auc, ap, plus the per-image scores. Unreadable files go to `on_skipped`. Under
    DDP, `parts` gathers every rank's (loss sums, scores) so all ranks get the whole set's
    metrics.
    """
    model.eval()
    samples = loader.dataset.samples
    running = LossSums()
    paths: list[str] = []
    # Kept on the device until the end: a copy to the host per batch would wait for each one.
    scores: list[torch.Tensor] = []
    labels_seen: list[np.ndarray] = []
    for number, batch in enumerate(loader, start=1):
        if on_skipped is not None and batch["skipped"]:
            on_skipped(batch["skipped"])
        if batch["images"] is not None:
            images = pixels_to_float(batch["images"], device)
            labels = batch["labels"].to(device, non_blocking=True)
            with torch.autocast(device.type, precision.dtype, enabled=precision.enabled):
                outputs = forward_batch(model, images)
            running.add(loss(outputs, labels), len(labels))
            scores.append(outputs["score"].detach().float())
            labels_seen.append(batch["labels"].numpy())
            paths += [samples[index].path for index in batch["indices"].tolist()]
        if on_batch is not None:
            on_batch(number)
    sums = zero_loss_sums()
    running.drain_into(sums)
    all_scores = torch.cat(scores).cpu().numpy() if scores else np.zeros(0)
    all_labels = np.concatenate(labels_seen) if labels_seen else np.zeros(0)
    mine = (sums, Scores(paths, all_scores, all_labels))
    return summarize(parts(mine) if parts is not None else [mine])


def summarize(
    parts: list[tuple[dict[str, float], Scores]],
) -> tuple[dict[str, float], Scores]:
    """Metrics over evaluation parts (one per process under DDP): loss sums add up, scores join."""
    sums = dict.fromkeys(parts[0][0], 0.0)
    for part_sums, _ in parts:
        for key, value in part_sums.items():
            sums[key] += value
    joined = Scores(
        [path for _, part in parts for path in part.paths],
        np.concatenate([part.scores for _, part in parts]),
        np.concatenate([part.labels for _, part in parts]),
    )
    metrics = {**mean_loss_terms(sums), **detection_metrics(joined.scores, joined.labels)}
    return metrics, joined


def build_loss(config: TrainingConfig) -> DetectorLoss:
    return DetectorLoss(
        config.regression_weight,
        config.classification_weight,
        config.ranking_weight,
        config.ranking_margin,
    )
