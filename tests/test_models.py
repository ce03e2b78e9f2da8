"""Every registered detector: shapes, ranges, finiteness, gradients, determinism, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app
from fakedet.models import create_model, list_models

MODELS = list_models()
runner = CliRunner()


def test_registry_lists_fast_and_full() -> None:
    assert {"fast", "full"} <= set(MODELS)


def test_unknown_model_error_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"known models: .*fast.*full"):
        create_model("enormous")


@pytest.mark.parametrize("img_size", [63, 100, 32])
def test_bad_img_size_is_refused(img_size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("fast", img_size=img_size)


@pytest.mark.parametrize(
    ("name", "options", "budget"),
    [
        ("fast", {}, 0.3e6),
        ("fast", {"revision": 1}, 2.5e6),
        ("full", {}, 2.9e6),
        ("full", {"revision": 1}, 5.0e6),
    ],
)
def test_parameter_budget_within_ten_percent(name: str, options: dict, budget: float) -> None:
    params = sum(p.numel() for p in create_model(name, **options).parameters())
    assert abs(params - budget) <= 0.1 * budget, params


def _with_batch_statistics(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """`model` in eval mode after a few training-mode batches, so that its BatchNorms hold
    statistics that are not the identity (a fold of an identity hides mistakes)."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


@pytest.mark.parametrize(
    ("name", "options"),
    [("fast", {}), ("fast", {"revision": 1}), ("full", {}), ("full", {"revision": 1})],
)
@pytest.mark.parametrize("shape", [(64, 64), (96, 160)])
def test_the_scoring_copy_scores_like_the_model(
    name: str, options: dict, shape: tuple[int, int]
) -> None:
    from fakedet.models.layers import fuse_for_inference

    torch.manual_seed(0)
    model = _with_batch_statistics(create_model(name, img_size=64, **options), 64)
    fused = fuse_for_inference(model)
    # The normalisation (and for fast the NPR residual) now live in the stems' weights.
    assert isinstance(fused.normalize, torch.nn.Identity)
    images = torch.rand(3, 3, *shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected, got = model(images)["logits"], fused(images)["logits"]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        if name == "fast":  # the branches one by one, where a wrong fold cannot hide
            normed = model.normalize(images)
            for branch in ("perceptual_branch", "aux_branch"):
                torch.testing.assert_close(
                    getattr(fused, branch)(images),
                    getattr(model, branch)(normed),
                    atol=1e-5,
                    rtol=1e-4,
                )


@pytest.mark.parametrize(("name", "width"), [("fast", 256), ("full", 256)])
def test_weights_without_a_revision_load_into_revision_1(name: str, width: int) -> None:
    from fakedet.models.loading import build_model

    torch.manual_seed(0)
    old = create_model(name, img_size=64, revision=1).eval()
    assert "revision" not in old.state_dict()  # as fakedet 0.4 and before wrote them
    loaded = build_model(name, 64, torch.device("cpu"), old.state_dict()).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["score"], old(images)["score"])
    new = create_model(name, img_size=64)
    assert int(new.state_dict()["revision"]) == 2
    rebuilt = build_model(name, 64, torch.device("cpu"), new.state_dict())
    assert rebuilt.perceptual_branch.out_channels == new.perceptual_branch.out_channels == width
    with pytest.raises(ValueError, match=f"unknown {name} model revision 9"):
        create_model(name, revision=9)


def test_the_statistics_read_a_centre_window_not_a_resampled_image() -> None:
    from fakedet.models.branches import StatisticalBranch, centre_window

    images = torch.rand(2, 3, 200, 96, generator=torch.Generator().manual_seed(0))
    window = centre_window(images, 128)
    assert torch.equal(window, images[:, :, 36:164, :])  # the short side kept whole
    branch = StatisticalBranch(16, 2, window=128)
    whole = StatisticalBranch(16, 2)
    torch.testing.assert_close(branch.features(images), whole.features(window))
    small = images[:, :, :96, :]  # within the window: read whole
    torch.testing.assert_close(branch.features(small), whole.features(small))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("img_size", [64, 96, 128])
def test_outputs_have_the_contract_shapes(name: str, img_size: int) -> None:
    model = create_model(name, img_size=img_size).eval()
    with torch.no_grad():
        outputs = model(torch.rand(3, 3, img_size, img_size))
    assert outputs["score"].shape == (3,)
    assert outputs["logits"].shape == (3, 2)
    assert bool(((outputs["score"] >= 0) & (outputs["score"] <= 1)).all())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["black", "white", "constant", "noise"])
def test_finite_outputs_and_gradients_on_degenerate_images(name: str, kind: str) -> None:
    torch.manual_seed(0)
    images = {
        "black": torch.zeros(4, 3, 64, 64),
        "white": torch.ones(4, 3, 64, 64),
        "constant": torch.full((4, 3, 64, 64), 0.37),
        "noise": torch.rand(4, 3, 64, 64),
    }[kind]
    model = create_model(name, img_size=64)
    outputs = model(images)
    loss = outputs["score"].mean() + outputs["logits"].logsumexp(dim=1).mean()
    loss.backward()
    assert torch.isfinite(outputs["score"]).all() and torch.isfinite(outputs["logits"]).all()
    for parameter_name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_builds_the_same_model_and_output(name: str) -> None:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model(name, img_size=64).eval()
        with torch.no_grad():
            results.append(model(images)["score"])
    assert torch.equal(results[0], results[1])


def test_spectrum_is_fp32_under_autocast() -> None:
    model = create_model("full", img_size=64)
    images = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spectrum = model.spectral_branch.log_spectrum(images)
        statistics = model.statistical_branch.features(images)
    assert spectrum.dtype == torch.float32
    assert statistics.dtype == torch.float32


def test_fast_aux_branch_sees_npr_residual_of_full_resolution() -> None:
    from fakedet.models.branches import npr_residual

    # A 2x nearest-upsampled image has an all-zero NPR residual; real detail does not.
    low = torch.rand(1, 3, 32, 32)
    upsampled = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert npr_residual(upsampled).abs().max() == 0
    assert npr_residual(torch.rand(1, 3, 64, 64)).abs().max() > 0


class _TinyDetector(torch.nn.Module):
    """A model registered by a user: two convolutions and the two heads."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
        )
        self.head = torch.nn.Linear(8, 3)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.features(images).flatten(1))  # (B, 3)
        return {"score": torch.sigmoid(out[:, 0]), "logits": out[:, 1:]}


def test_a_model_registered_later_trains_and_is_advised_without_other_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakedet.models import registry

    def tiny(img_size: int = 256) -> torch.nn.Module:
        return _TinyDetector()

    monkeypatch.setitem(registry._REGISTRY, "tiny", tiny)
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    result = runner.invoke(app, tiny_train_args(data, out, "--mode", "tiny", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.model_name == "tiny" and checkpoint.state.epoch == 1
    advice = runner.invoke(app, ["recommend", "--mode", "tiny", "--json"])
    assert advice.exit_code == 0, advice.output
    assert json.loads(advice.output)["recommendations"][0]["mode"] == "tiny"
    refused = runner.invoke(app, tiny_train_args(data, out, "--mode", "huge"))
    assert refused.exit_code == 2
    known = ", ".join(registry.list_models())
    assert "tiny" in known
    assert f"mode = 'huge' is invalid: is not a registered model (known: {known})" in (
        " ".join(refused.output.split())
    )


@pytest.mark.parametrize("shape", [(64, 64), (96, 160), (256, 256)])
def test_the_eager_log_spectrum_is_the_portable_one_that_exports_trace(
    shape: tuple[int, int],
) -> None:
    branch = create_model("full", img_size=64).spectral_branch
    images = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eager = branch.log_spectrum(images)
        portable = branch._portable_log_spectrum(images)
    # Standardised log magnitudes (a few units): float rounding of the two FFT layouts.
    torch.testing.assert_close(eager, portable, atol=5e-4, rtol=1e-4)
