"""The spectral branch's linear read of the radial log spectrum: fitted in closed form before
training (fakedet/training/spectrum_read.py), frozen after, saved with the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fakedet.data.transforms import EvalTransform, load_rgb
from fakedet.errors import CheckpointError
from fakedet.models import create_model
from fakedet.models.loading import build_model
from fakedet.sources.samples import Sample
from fakedet.training.spectrum_read import fit_spectrum_read
from fakedet.training.weights import parameter_groups

OPTIONS = {"num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": 2}


def train_samples(root: Path) -> list[Sample]:
    return [
        Sample(str(path), 1.0 if label == "real" else 0.0)
        for label in ("real", "fake")
        for path in sorted((root / "train" / label).glob("*.png"))
    ]


def centre_crops(samples: list[Sample]) -> torch.Tensor:
    crop = EvalTransform(64)
    return torch.stack([crop(load_rgb(sample.path)) for sample in samples]).float() / 255


def test_the_fit_is_scikit_learn_s_logistic_regression_on_the_train_crops(
    folder_dataset: Path,
) -> None:
    samples = train_samples(folder_dataset)
    model = create_model("fast", img_size=64)
    branch = model.coherence_branch
    assert not branch.spectrum_read_fitted
    fit = fit_spectrum_read(model, samples, 64, 5, torch.device("cpu"), 0, OPTIONS)
    assert fit is not None and fit.images == len(samples) == 16
    assert bool(branch.spectrum_read_fitted)
    images = centre_crops(samples)
    labels = np.array([int(sample.label) for sample in samples])
    branch.eval()
    with torch.no_grad():
        read = branch(images)[:, 1].double().numpy()
        features = branch.profiles(images)[1].double().numpy()
    # The same fit, made here by hand: standardised rings into a default logistic regression.
    standardized = (features - features.mean(0)) / np.sqrt(features.var(0) + 1e-5)
    expected = LogisticRegression(C=1.0, max_iter=5000).fit(standardized, labels)
    np.testing.assert_allclose(read, expected.decision_function(standardized), atol=1e-3)
    assert roc_auc_score(labels, read) == 1.0  # noise against 2x-up-sampled noise
    assert fit.train_accuracy == pytest.approx(expected.score(standardized, labels))


def test_the_read_stays_frozen_in_training(folder_dataset: Path) -> None:
    model = create_model("full", img_size=64)
    fit_spectrum_read(model, train_samples(folder_dataset), 64, 8, torch.device("cpu"), 0, OPTIONS)
    branch = model.coherence_branch
    before = {name: value.clone() for name, value in branch.state_dict().items()}
    trained = {id(p) for group in parameter_groups(model, 0.05) for p in group["params"]}
    assert not any(id(p) in trained for p in branch.spectrum_linear.parameters())
    model.train()
    images = centre_crops(train_samples(folder_dataset)[:6])
    read_in_training = branch(images)[:, 1]
    read_in_training.sum().backward()  # reaches no read parameter
    assert branch.spectrum_linear.weight.grad is None
    # Batch statistics never replace the fit's: the same read in train and eval mode.
    with torch.no_grad():
        read_in_eval = model.eval().coherence_branch(images)[:, 1]
    torch.testing.assert_close(read_in_training.detach(), read_in_eval)
    for name in ("spectrum_norm.running_mean", "spectrum_norm.running_var"):
        assert torch.equal(branch.state_dict()[name], before[name])


def test_a_draw_of_one_class_leaves_the_read_unfitted(folder_dataset: Path) -> None:
    model = create_model("fast", img_size=64)
    reals = [s for s in train_samples(folder_dataset) if s.label == 1.0]
    assert fit_spectrum_read(model, reals, 64, 8, torch.device("cpu"), 0, OPTIONS) is None
    branch = model.coherence_branch
    assert not branch.spectrum_read_fitted
    assert not branch.spectrum_linear.weight.any() and not branch.spectrum_linear.bias.any()


def test_weights_with_an_sgd_trained_read_do_not_load() -> None:
    # The read was trained by SGD for a few unreleased weeks: those weights lack the fitted flag
    # (and had an affine BatchNorm) and would score otherwise, so they are refused.
    state = create_model("fast", img_size=64).state_dict()
    del state["coherence_branch.spectrum_read_fitted"]
    state["coherence_branch.spectrum_norm.weight"] = torch.ones(32)
    state["coherence_branch.spectrum_norm.bias"] = torch.zeros(32)
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model("fast", 64, torch.device("cpu"), state)


def test_a_large_train_split_is_fitted_on_a_seeded_draw(
    folder_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fakedet.training.spectrum_read as spectrum_read

    monkeypatch.setattr(spectrum_read, "READ_FIT_IMAGES", 10)
    samples = train_samples(folder_dataset)
    reads = []
    for seed in (0, 0, 1):
        model = create_model("fast", img_size=64)
        fit = fit_spectrum_read(model, samples, 64, 4, torch.device("cpu"), seed, OPTIONS)
        assert fit is not None and fit.images == 10
        reads.append(model.coherence_branch.spectrum_linear.weight.clone())
    # The same seed draws the same images (every DDP rank fits the same read); another, others.
    assert torch.equal(reads[0], reads[1]) and not torch.equal(reads[0], reads[2])
