"""The three-term loss and its ranking term."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fakedet.models.losses import detector_loss, ranking_loss


def test_ranking_without_pairs_is_zero_not_nan() -> None:
    scores = torch.tensor([0.2, 0.9, 0.4], requires_grad=True)
    loss = ranking_loss(scores, torch.ones(3), margin=0.3)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(scores.grad).all()


def test_ranking_penalises_fake_scored_above_real() -> None:
    labels = torch.tensor([1.0, 0.0])
    good = ranking_loss(torch.tensor([0.9, 0.1]), labels, margin=0.3)
    bad = ranking_loss(torch.tensor([0.1, 0.9]), labels, margin=0.3)
    assert good.item() == 0.0
    assert bad.item() == pytest.approx(0.3 + 0.8)


def test_total_is_the_weighted_sum_of_the_terms() -> None:
    score = torch.tensor([0.7, 0.2, 0.6, 0.4])
    logits = torch.tensor([[0.1, 0.9], [1.0, -1.0], [0.0, 0.0], [0.3, 0.2]])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    terms = detector_loss(score, logits, labels, 1.0, 0.3, 0.2, 0.3)
    assert torch.isclose(terms.regression, F.mse_loss(score, labels))
    assert torch.isclose(terms.classification, F.cross_entropy(logits, labels.long()))
    expected = terms.regression + 0.3 * terms.classification + 0.2 * terms.ranking
    assert torch.isclose(terms.total, expected)
    assert terms.ranking.item() > 0
