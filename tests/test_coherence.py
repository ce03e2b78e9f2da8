"""The spectral-coherence branch (after fakedet 0.1.0): what its two logits measure, their
invariances, their training term, and that fakedet 0.1's fast / full weights still load without
the branch."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fakedet.models import create_model
from fakedet.models.coherence import (
    COHERENCE_BINS,
    SPECTRUM_BINS,
    SpectralCoherenceBranch,
    _hann_windowed,
)
from fakedet.models.loading import build_model
from fakedet.models.losses import AUX_LOSS_WEIGHT, detector_loss


def camera_like(batch: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Images with a natural 1/f amplitude spectrum and random phases, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 3, size, size, generator=generator)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.fftfreq(size)[None, :]
    falloff = 1.0 / torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / size)
    images = torch.fft.ifft2(torch.fft.fft2(noise) * falloff).real
    low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low)


def upsampled(images: torch.Tensor, mode: str) -> torch.Tensor:
    """What a generator's decoder leaves: half resolution, then up-sampled by 2."""
    low = F.avg_pool2d(images, 2)
    if mode == "nearest":
        return F.interpolate(low, scale_factor=2, mode="nearest")
    return F.interpolate(low, scale_factor=2, mode=mode, align_corners=False).clamp(0, 1)


def blurred(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    radius = 3
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(steps**2) / (2 * sigma**2))
    kernel = (kernel[:, None] * kernel[None, :] / kernel.sum() ** 2).expand(3, 1, -1, -1)
    return F.conv2d(F.pad(images, (radius,) * 4, mode="reflect"), kernel, groups=3)


def half_band_coherence(images: torch.Tensor) -> torch.Tensor:
    """(B,) mean coherence over every shift and radius."""
    return SpectralCoherenceBranch().profiles(images)[0].mean(dim=1)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_up_sampled_images_are_far_more_coherent_than_camera_like_ones(mode: str) -> None:
    real = camera_like()
    fake = upsampled(real, mode)
    assert half_band_coherence(fake).min() > 2 * half_band_coherence(real).max()


def test_coherence_survives_blur_and_ignores_contrast() -> None:
    real = camera_like(seed=1)
    fake = upsampled(real, "bilinear")
    # A blur scales |X(f)| and |X(f + 1/2)| but keeps the relation between them: every blurred
    # fake is still more coherent than every blurred real (an AUC of 1 on this feature alone).
    assert half_band_coherence(blurred(fake)).min() > half_band_coherence(blurred(real)).max()
    # Normalised per image: a contrast change moves the features only in the few bins whose power
    # sits at the branch's noise floor (1e-6), here by at most 0.014 of a coherence in [0, 1].
    branch = SpectralCoherenceBranch()
    torch.testing.assert_close(
        branch.profiles(0.5 * fake + 0.25)[0], branch.profiles(fake)[0], atol=0.02, rtol=0
    )


def test_the_windowed_spectrum_comes_from_the_plain_one() -> None:
    # One FFT serves both logits: three taps per axis in frequency = a periodic Hann in space.
    images = torch.randn(2, 64, 32, generator=torch.Generator().manual_seed(0))
    window = torch.outer(torch.hann_window(64), torch.hann_window(32))  # periodic by default
    expected = torch.fft.fft2(images * window)
    plain = torch.fft.fft2(images)
    torch.testing.assert_close(_hann_windowed(plain.real), expected.real, atol=1e-4, rtol=0)
    torch.testing.assert_close(_hann_windowed(plain.imag), expected.imag, atol=1e-4, rtol=0)


def test_features_are_fp32_profiles_under_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = SpectralCoherenceBranch().profiles(camera_like(batch=2))
    assert features.dtype == torch.float32
    assert features.shape == (2, 3 * COHERENCE_BINS)
    assert bool(((features >= 0) & (features <= 1 + 1e-4)).all())  # a coherence is in [0, 1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, spectrum = SpectralCoherenceBranch().profiles(camera_like(batch=2))
    assert spectrum.dtype == torch.float32 and spectrum.shape == (2, SPECTRUM_BINS)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])  # (nearest keeps its replicas' power)
def test_the_radial_spectrum_shows_an_up_sampled_image_s_missing_top_band(mode: str) -> None:
    real = camera_like(seed=2)
    _, real_profile = SpectralCoherenceBranch().profiles(real)
    _, fake_profile = SpectralCoherenceBranch().profiles(upsampled(real, mode))
    top = slice(SPECTRUM_BINS * 3 // 4, None)  # the top quarter of the band (and the corners)
    assert fake_profile[:, top].mean(dim=1).max() < real_profile[:, top].mean(dim=1).min() - 1.0
    # The image is normalised first: contrast moves the profile only by the normaliser's guard
    # (RMS + 1e-3), here 0.026 in log power, against the 4+ that separates the fakes above.
    torch.testing.assert_close(
        SpectralCoherenceBranch().profiles(0.5 * real + 0.25)[1], real_profile, atol=0.05, rtol=0
    )


def test_the_spectrum_logit_starts_at_zero() -> None:
    # Zero-initialised: the branch's second logit moves an untrained model's score by nothing.
    branch = SpectralCoherenceBranch().eval()
    with torch.no_grad():
        assert torch.equal(branch(camera_like(batch=2))[:, 1], torch.zeros(2))


@pytest.mark.parametrize("name", ["fast", "full"])
def test_training_outputs_carry_the_branch_logit_and_inference_outputs_do_not(name: str) -> None:
    model = create_model(name, img_size=64, patch_topk=0.0)  # the coherence branch's logits only
    images = camera_like(batch=3)
    training = model(images)
    assert training["aux_logits"].shape == (3, 2)  # coherence, radial spectrum
    model.eval()
    with torch.no_grad():
        inference = model(images)
        branch_logit = model.coherence_branch(images).sum(dim=1)
    assert set(inference) == {"score", "logits"}
    # The branch's logit moves the score and the real class's logit alike.
    score_logit = torch.logit(inference["score"].double())
    two_class = (inference["logits"][:, 1] - inference["logits"][:, 0]).double()
    without = score_logit - branch_logit.double()
    head = model.heads
    with torch.no_grad():
        hidden = head.trunk(head_input(model, images))
        torch.testing.assert_close(
            without.float(), head.score(hidden).squeeze(1), atol=1e-4, rtol=0
        )
        plain = head.logits(hidden)
    torch.testing.assert_close(
        two_class.float(), (plain[:, 1] - plain[:, 0]) + branch_logit, atol=1e-4, rtol=0
    )


def head_input(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the model's Heads receive, captured with a forward hook."""
    captured: list[torch.Tensor] = []
    handle = model.heads.register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
    model(images)
    handle.remove()
    return captured[0]


def test_the_loss_adds_the_branch_term_only_when_the_model_gives_it() -> None:
    score = torch.tensor([0.7, 0.2, 0.6, 0.4])
    logits = torch.tensor([[0.1, 0.9], [1.0, -1.0], [0.0, 0.0], [0.3, 0.2]])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    aux = torch.tensor([[2.0, 0.1], [-1.0, 0.4], [0.5, -2.0], [0.3, 1.0]])
    plain = detector_loss(score, logits, labels, 1.0, 0.3, 0.2, 0.3)
    with_aux = detector_loss(score, logits, labels, 1.0, 0.3, 0.2, 0.3, aux)
    # The mean over every branch logit, each trained towards the same label.
    expected = (
        F.binary_cross_entropy_with_logits(aux[:, 0], labels)
        + F.binary_cross_entropy_with_logits(aux[:, 1], labels)
    ) / 2
    # Minimised, not logged: the logged loss stays the measure the val loss uses.
    assert torch.isclose(with_aux.objective, plain.total + AUX_LOSS_WEIGHT * expected)
    assert torch.equal(with_aux.total, plain.total) and torch.equal(plain.objective, plain.total)


@pytest.mark.parametrize("name", ["fast", "full"])
def test_weights_from_fakedet_0_1_load_into_the_model_without_the_branch(name: str) -> None:
    torch.manual_seed(0)
    old = create_model(name, img_size=64, coherence=False).eval()
    loaded = build_model(name, 64, torch.device("cpu"), old.state_dict()).eval()
    assert loaded.coherence_branch is None
    images = camera_like(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["score"], old(images)["score"])
    new = create_model(name, img_size=64)
    assert build_model(name, 64, torch.device("cpu"), new.state_dict()).coherence_branch is not None


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (128, 128)])
def test_the_eager_profiles_are_the_portable_ones_that_exports_trace(
    size: tuple[int, int],
) -> None:
    branch = SpectralCoherenceBranch(reference_side=128)
    images = F.interpolate(camera_like(batch=3, size=max(size)), size=size, mode="area")
    with torch.no_grad():
        eager = branch.profiles(images)
        portable = branch._portable_profiles(images)
        torch.testing.assert_close(eager[0], portable[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(eager[1], portable[1], atol=1e-4, rtol=1e-5)
        # An up-sampled image leaves rings of its spectrum at the branch's 1e-6 power floor,
        # where the coherence of a block is a ratio of rounding errors: those few bins may
        # differ between any two FFT implementations (as they do between ONNX Runtime and
        # PyTorch); every other bin agrees.
        fake = upsampled(images, "bilinear")
        eager, portable = branch.profiles(fake)[0], branch._portable_profiles(fake)[0]
    difference = (eager - portable).abs()
    assert (difference < 1e-4).float().mean() >= 0.75 and difference.max() < 0.1
