"""The three-term detector loss: regression on realness, real/fake classification, ranking; plus,
in training, a classification term for each branch that adds its own logit (deep supervision)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Weight of the BCE on a branch's own logit (the spectral-coherence branch). Trained alone as well
# as through the sum, the branch becomes a detector in its own right instead of a correction the
# CNN leans on. On the cross-generator protocol (docs/protocol.md; 3 seeds, mean AUC over the
# held-out families) weights 0.3, 1, 3 and 10 gave fast 0.905, 0.915, 0.923, 0.925 and full
# 0.954, 0.958, 0.953 (10 not run): 1 is full's best, and fast's gains past it are in the noise.
# The term is the mean over the branch's logits; its spectrum read is fitted and frozen before
# training (fakedet/training/spectrum_read.py), so that half of it is a constant: the coherence logit's own
# BCE weighs AUX_LOSS_WEIGHT / 2, as in every run since the read came (README's tables).
AUX_LOSS_WEIGHT = 1.0


@dataclass
class LossTerms:
    total: torch.Tensor  # the three-term loss: what is logged, the same measure as the val loss
    regression: torch.Tensor
    classification: torch.Tensor
    ranking: torch.Tensor
    objective: torch.Tensor  # what is minimised: total plus the branches' own terms in training


def ranking_loss(scores: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over every pair (i, j) of the batch with label_i > label_j.

    Asks score_i - score_j >= margin. A batch without such a pair (one class only) gives an exact
    zero that still carries a gradient path, never NaN.
    """
    # (B, B): 1 for a pair (i, j) with label_i > label_j. A mask, not a selection: picking the
    # pairs out would need their count on the host, a wait for the device every step.
    higher = (labels[:, None] > labels[None, :]).to(scores.dtype)
    hinges = F.relu(margin - (scores[:, None] - scores[None, :])) * higher
    return hinges.sum() / higher.sum().clamp(min=1.0)


def detector_loss(
    score: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    regression_weight: float,
    classification_weight: float,
    ranking_weight: float,
    ranking_margin: float,
    aux_logits: torch.Tensor | None = None,
) -> LossTerms:
    """total = w1 * MSE(score, label) + w2 * CE(logits, label >= 0.5) + w3 * ranking; objective
    = total (+ AUX_LOSS_WEIGHT * BCE(aux_logits, label >= 0.5) when a branch gives its own logits).

    Computed in fp32 whatever the autocast dtype, so half-precision rounding never enters the loss.
    """
    score = score.float()
    logits = logits.float()
    labels = labels.float()
    regression = F.mse_loss(score, labels)
    classification = F.cross_entropy(logits, (labels >= 0.5).long())
    ranking = ranking_loss(score, labels, ranking_margin)
    total = (
        regression_weight * regression
        + classification_weight * classification
        + ranking_weight * ranking
    )
    objective = total
    if aux_logits is not None:  # (B, K): each branch's realness logit, trained on its own
        aux_logits = aux_logits.float()
        targets = (labels >= 0.5).float().unsqueeze(1).expand_as(aux_logits)
        auxiliary = F.binary_cross_entropy_with_logits(aux_logits, targets)
        objective = total + AUX_LOSS_WEIGHT * auxiliary
    return LossTerms(total, regression, classification, ranking, objective)


@dataclass(frozen=True)
class DetectorLoss:
    """`detector_loss` with a run's weights bound: called as loss(outputs, labels)."""

    regression_weight: float
    classification_weight: float
    ranking_weight: float
    ranking_margin: float

    def __call__(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> LossTerms:
        return detector_loss(
            outputs["score"],
            outputs["logits"],
            labels,
            self.regression_weight,
            self.classification_weight,
            self.ranking_weight,
            self.ranking_margin,
            outputs.get("aux_logits"),
        )


SUM_TERMS = ("loss", "regression", "classification", "ranking", "images")


def zero_loss_sums() -> dict[str, float]:
    """Host-side running sums (keys SUM_TERMS) at zero: what `LossSums.drain_into` adds to."""
    return dict.fromkeys(SUM_TERMS, 0.0)


class LossSums:
    """Running sums of the logged loss terms, each weighted by its batch's size, kept on the
    device: adding a batch never waits for the device (a host read per step would stall a GPU's
    queue); `drain_into` reads them on the host once, when the totals are needed."""

    def __init__(self) -> None:
        self._row: torch.Tensor | None = None

    def add(self, terms: LossTerms, count: int, finite: torch.Tensor | None = None) -> None:
        """Add a batch of `count` images; one whose `finite` is false adds nothing (its step is
        skipped)."""
        values = torch.stack(
            [terms.total, terms.regression, terms.classification, terms.ranking]
        ).detach()
        # float64 for sums over an epoch of steps (MPS has no float64)
        dtype = torch.float32 if values.device.type == "mps" else torch.float64
        values = values.to(dtype)
        row = torch.cat([values * count, values.new_full((1,), float(count))])
        if finite is not None:
            row = torch.where(finite, row, torch.zeros_like(row))
        self._row = row if self._row is None else self._row.add_(row)

    def drain_into(self, sums: dict[str, float]) -> None:
        """Add the sums to the host's `sums` (keys SUM_TERMS) and start again from zero."""
        if self._row is None:
            return
        for key, value in zip(SUM_TERMS, self._row.tolist(), strict=True):
            sums[key] += value
        self._row = None


def mean_loss_terms(sums: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Per-image means of the running sums: loss, regression, ... (as prefix_loss, ... if given)."""
    seen = max(sums["images"], 1)
    lead = f"{prefix}_" if prefix else ""
    return {
        f"{lead}{term}": sums[term] / seen
        for term in ("loss", "regression", "classification", "ranking")
    }
