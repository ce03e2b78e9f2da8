"""The spectral-coherence branch: does the image's spectrum repeat itself half a band away?

An image that a generator up-sampled by 2 is a filtered copy of a half-resolution image, so its
spectrum X obeys X(f + 1/2) = G(f) X(f) for a smooth G that depends only on the up-sampling
layer: the spectrum at f and at f shifted by half the sampling rate (along x, y or both) are
coherent. In a camera image they are unrelated. This is the cyclostationarity that resampling
detectors look for (Popescu & Farid 2005; Vazquez-Padin et al. 2012), measured here as the
magnitude-squared coherence over small neighbourhoods of frequencies.

What makes it generalise: it reads the *phase relation* between the two halves of the band, not
how much high-frequency energy there is. A blur, a JPEG pass or an equalised radial spectrum
scale |X(f)| and |X(f + 1/2)| but leave the relation between them, and the feature is normalised
per image, so content and contrast drop out. On the cross-generator protocol (README) adding it
took the full model's held-out mean AUC from 0.82 to about 0.96.

It does not see resampling by other factors (an up-sampled fake that was then scaled by 0.6-0.85,
the protocol's `laundered` family): there the repetition sits at another shift. For those the
branch has a second logit from the same FFT, linear in the radial log power spectrum (the
classic spectral detector, Durall et al. 2020): a fake's missing or re-shaped top of the band
shows there at any scale. Being linear in log power it moves every image alike under a blur (a
blur adds the same log|H(f)|^2 to each) wherever the power stays above float precision, and the
image is normalised first, so contrast drops out. That read is a logistic regression on fixed
features, so it is fitted in closed form before training and then frozen
(fakedet/training/spectrum_read.py), not trained by SGD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fakedet.models.branches import eager_grayscale, grayscale, mirrored_columns
from fakedet.models.layers import bin_average_matrix

# Coherence is estimated over blocks of K x K neighbouring frequencies: 1/K**2 is roughly what
# unrelated spectra score, so 4 keeps that floor low while G(f) stays near-constant inside a
# block. Blocks that do not overlap cost one pass over the spectrum (5 x 5 sliding windows, tried
# first, made the fast model train 30-75% slower); every model input side is a multiple of 32.
COHERENCE_BLOCK = 4
COHERENCE_BINS = 16  # radial profile bins per shift
SHIFTS = 3  # half a band along x, along y, along both
SPECTRUM_BINS = 32  # rings of the radial log power spectrum, DC (left out) to the band's edge
# The coherence logit is GAIN * mlp(profile), a reparametrisation that multiplies the MLP's
# effective Adam step. Next to the fitted spectrum read (a logit of a few units either way on
# every image) the coherence cue must be the louder one where it fires, or the read's spread
# over real-looking spectra drowns it on fakes whose spectrum was equalised. On the protocol
# (seeds 0-2, README) gain 1 / 3 / 6 / 10 gave `spectrum_matched` 0.906 / 0.981 / 0.991 / 0.995
# (full; fast 0.881 / 0.943 / 0.983 / 0.991) and `laundered` 0.921 / 0.924 / 0.918 / 0.914.
COHERENCE_GAIN = 6.0
# Quadrants of the FFT's (unshifted) spectrum as (row, column) halves.
QUADRANTS = {"top_left": (0, 0), "top_right": (0, 1), "bottom_left": (1, 0), "bottom_right": (1, 1)}


def _quadrants(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """Name -> (rows, columns) of each quadrant of a (height, width) map."""
    rows = (slice(0, height // 2), slice(height // 2, height))
    columns = (slice(0, width // 2), slice(width // 2, width))
    return {name: (rows[row], columns[col]) for name, (row, col) in QUADRANTS.items()}


def _shift_pairs(halves: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """A (B, 2, h, 2, w) view of a map by (row half, rows, column half, columns) -> the
    (first, second) views that the half-band shifts pair: along x (left with right half, in
    both row halves at once), along y (top with bottom, both column halves), the diagonal
    (top left with bottom right) and the anti-diagonal (top right with bottom left).

    Slices, not indexing: the views stay 5-D (and an ONNX export maps complex slices, not
    complex selects)."""
    top, bottom = halves[:, 0:1], halves[:, 1:2]
    return (
        (halves[:, :, :, 0:1], halves[:, :, :, 1:2]),
        (top, bottom),
        (top[:, :, :, 0:1], bottom[:, :, :, 1:2]),
        (top[:, :, :, 1:2], bottom[:, :, :, 0:1]),
    )


def _block_means(values: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    """Mean over non-overlapping COHERENCE_BLOCK-long runs of the two `dims`: one reduction."""
    shape = list(values.shape)
    for dim in sorted(dims, reverse=True):
        shape[dim : dim + 1] = [shape[dim] // COHERENCE_BLOCK, COHERENCE_BLOCK]
    summed = [dim + index + 1 for index, dim in enumerate(sorted(dims))]
    return values.reshape(shape).mean(dim=summed)


def _hann(size: int, device: torch.device) -> torch.Tensor:
    """torch.hann_window(size) (periodic)."""
    steps = torch.arange(size, device=device, dtype=torch.float32)
    return 0.5 - 0.5 * torch.cos(2 * torch.pi * steps / size)


def _hann_windowed(spectrum_part: torch.Tensor) -> torch.Tensor:
    """The real or imaginary part of an image's FFT -> that of the image times a 2-D periodic
    Hann window. The window is 1/2 - (e^{i2pi n/N} + e^{-i2pi n/N}) / 4 along each axis, so in
    frequency it is three taps, (-1/4, 1/2, -1/4), along each."""
    for dim in (-1, -2):
        spectrum_part = 0.5 * spectrum_part - 0.25 * (
            spectrum_part.roll(1, dim) + spectrum_part.roll(-1, dim)
        )
    return spectrum_part


def _frequencies(size: int, device: torch.device) -> torch.Tensor:
    """torch.fft.fftfreq(size): 0, 1/n, ..., then the negative frequencies."""
    steps = torch.arange(size, device=device, dtype=torch.float32)
    return torch.where(steps < (size + 1) // 2, steps, steps - size) / size


def _block_centres(size: int, device: torch.device) -> torch.Tensor:
    """The mean frequency of each block of COHERENCE_BLOCK neighbouring FFT bins along one axis.

    Blocks never straddle the jump from +1/2 to -1/2 (a block holds bins k..k+K-1 of fftfreq's
    order, and K divides size / 2), so the mean is the block's true centre."""
    return _frequencies(size, device).view(-1, COHERENCE_BLOCK).mean(dim=1)


class SpectralCoherenceBranch(nn.Module):
    """Two realness logits from one FFT of the grey image: coherence and radial log spectrum.

    Coherence: for each of the three half-band shifts, the coherence of each block of
    frequencies, averaged in `COHERENCE_BINS` rings of radial frequency (48 values in [0, 1]);
    then BatchNorm and a two-layer MLP to a logit (x COHERENCE_GAIN), trained with the model
    and alone too (losses.AUX_LOSS_WEIGHT). Spectrum: the mean log power in `SPECTRUM_BINS`
    rings, standardised and read by a linear layer: both frozen, set by `set_spectrum_read`
    (the engine's closed-form fit) and zero until then, so an unfitted read moves no score.
    The detector adds both logits to its own.
    """

    def __init__(self, hidden: int = 64, reference_side: int | None = None) -> None:
        super().__init__()
        # The unnormalised FFT's power grows with the pixel count (Parseval: its mean is H*W
        # times the image's unit mean square), so the radial log power of an image scored at
        # its native size below the model's input would shift by log(H*W / S*S) in every ring,
        # and the fitted read with it (a 64 px real photo called fake by a 96 px model, seen).
        # The power is read as at `reference_side` (the model's img_size) instead: the same
        # numbers as before at that size, so existing checkpoints keep their read.
        self.reference_pixels = None if reference_side is None else reference_side**2
        features = SHIFTS * COHERENCE_BINS
        self.norm = nn.BatchNorm1d(features)
        self.mlp = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )
        # The read's standardisation is a BatchNorm kept in eval mode (see `train`): its running
        # mean and variance are the fit's, never batch statistics.
        self.spectrum_norm = nn.BatchNorm1d(SPECTRUM_BINS, affine=False)
        self.spectrum_linear = nn.Linear(SPECTRUM_BINS, 1)
        nn.init.zeros_(self.spectrum_linear.weight)
        nn.init.zeros_(self.spectrum_linear.bias)
        self.spectrum_linear.requires_grad_(False)
        # Saved with the weights: whether the read was fitted. (Checkpoints of the weeks when it
        # was trained by SGD do not load: they lack this and have the affine norm's two keys.)
        self.register_buffer("spectrum_read_fitted", torch.zeros((), dtype=torch.bool))
        self._cache: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}

    def train(self, mode: bool = True) -> SpectralCoherenceBranch:
        super().train(mode)
        self.spectrum_norm.eval()  # fixed standardisation, in training too
        return self

    @torch.no_grad()
    def set_spectrum_read(
        self, mean: Sequence[float], variance: Sequence[float], weight: Sequence[float], bias: float
    ) -> None:
        """Set the spectrum read to a fitted logistic regression: realness logit = weight .
        (profile - mean) / sqrt(variance + eps) + bias, per SPECTRUM_BINS ring."""
        norm = self.spectrum_norm
        norm.running_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        norm.running_var.copy_(torch.as_tensor(variance, dtype=torch.float32))
        self.spectrum_linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).view(1, -1))
        self.spectrum_linear.bias.fill_(float(bias))
        self.spectrum_read_fitted.fill_(True)

    def _constants(
        self, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For one image size: the Hann window; the matrix from the four coherence maps of
        `_shift_pairs`, flattened and concatenated, to the (B, 48) profile (each block's
        coherence added at both of its pair's places, as means over the whole block map); the
        matrix from the one-sided spectrum's log power to its ring means (DC left out)."""
        key = (int(height), int(width), str(device))  # ints: traced sizes never hit a cache
        if key not in self._cache:
            # Written with arange and cos: the ONNX exporter maps neither hann_window nor fftfreq.
            window = torch.outer(_hann(height, device), _hann(width, device))
            fy = _block_centres(height, device)[:, None]
            fx = _block_centres(width, device)[None, :]
            radius = torch.sqrt(fy**2 + fx**2) / 0.5**0.5  # 0 at DC, 1 in the corner
            index = (radius * COHERENCE_BINS).long().clamp(max=COHERENCE_BINS - 1)  # (H/K, W/K)
            average = bin_average_matrix(index, COHERENCE_BINS)  # (H/K * W/K, bins)
            halves = average.view(1, 2, index.shape[0] // 2, 2, index.shape[1] // 2, -1)
            per_map = [(first + second).flatten(0, 4) for first, second in _shift_pairs(halves)]
            # Along x, along y, then both diagonals into the third shift's bins.
            coherence = torch.block_diag(per_map[0], per_map[1], torch.cat(per_map[2:]))
            # The log power of a real image's spectrum is symmetric, |X(-f)| = |X(f)|: the
            # one-sided half (columns 0..W/2) holds every ring, each column but the first and
            # the last standing for itself and its mirror, so it weighs twice.
            fy = _frequencies(height, device)[:, None]
            fx = torch.arange(width // 2 + 1, device=device, dtype=torch.float32)[None, :] / width
            rings = (torch.sqrt(fy**2 + fx**2) / 0.5 * SPECTRUM_BINS).long()  # 1 at mid-edge
            rings = rings.clamp(max=SPECTRUM_BINS - 1).flatten()  # the corners join the last
            # DC is left out: the image is zero-mean, so its log power is float noise. Its ring
            # number is past the last, so the matrix has no column for it.
            rings[0] = SPECTRUM_BINS
            mirrored = torch.full((height, width // 2 + 1), 2.0, device=device)
            mirrored[:, 0] = mirrored[:, -1] = 1.0
            ring_means = bin_average_matrix(rings, SPECTRUM_BINS, mirrored.flatten())
            # Below 128 px the innermost ring holds no frequency (its radius is under one
            # step): it reads the next ring's mean rather than an empty ring's 0. Sizes from
            # 128 up have every ring filled, so their read is unchanged.
            # (torch.where, not a Python `if`: an export traces this without a data guard.)
            filled = ring_means.sum(dim=0) > 0
            for ring in range(SPECTRUM_BINS - 2, -1, -1):
                ring_means[:, ring] = torch.where(
                    filled[ring], ring_means[:, ring], ring_means[:, ring + 1]
                )
            self._cache[key] = (window, coherence, ring_means)
        return self._cache[key]

    def profiles(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> (B, 48) coherence profiles and (B, SPECTRUM_BINS) radial
        log power, in fp32 whatever autocast says.

        Two implementations of the same numbers (they agree to float rounding, tested): the
        portable one that ONNX and TorchScript exports trace, and an eager one with fewer
        passes over the spectrum (one FFT call, reductions over contiguous runs, fewer temporaries),
        which made the branch about 2x faster on CPU."""
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return self._portable_profiles(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return _eager_profiles(self, images.float())

    def _portable_profiles(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`profiles` in operators that every exporter maps."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            gray = grayscale(images.float())  # (B, H, W)
            gray = gray - gray.mean(dim=(1, 2), keepdim=True)
            # The RMS of a zero-mean image (the std without Bessel's correction), one reduction.
            height, width = gray.shape[-2:]
            rms = torch.linalg.vector_norm(gray, dim=(1, 2), keepdim=True) / (height * width) ** 0.5
            gray = gray / (rms + 1e-3)
            window, coherence_matrix, ring_means = self._constants(height, width, gray.device)
            # The radial log power spectrum without a window: windowed, a logistic regression
            # on it scored 0.87 / 0.86 / 0.93 on `laundered` (3 seeds), without 0.95 / 0.89 / 0.93.
            # One-sided (rfft2): half the transform and half the log of the full spectrum.
            plain = torch.fft.rfft2(gray)  # (B, H, W/2 + 1)
            log_power = torch.view_as_real(plain).square().sum(dim=-1).add_(1e-6).log_()
            spectrum_profile = log_power.flatten(1) @ ring_means
            if self.reference_pixels is not None:  # height, width: Python ints, also traced
                spectrum_profile = spectrum_profile + math.log(
                    self.reference_pixels / (int(height) * int(width))
                )
            # Coherence needs the window: without it the image's borders make every spectrum
            # coherent. The same numbers two ways: in an ONNX export, three taps in frequency
            # (ONNX Runtime's DFT is slow: a second FFT made the branch 109 instead of 67 ms per
            # 16 images at 256 px there); in PyTorch a second FFT (1.8 ms against 7-18 ms for
            # the taps).
            if torch.onnx.is_in_onnx_export():
                windowed = _hann_windowed(torch.fft.fft2(gray))
            else:
                windowed = torch.fft.fft2(gray * window)  # (B, H, W) complex
            # |X|^2 averaged over each block: (B, H/K, W/K, then the real and imaginary parts).
            power = _block_means(torch.view_as_real(windowed).square(), (1, 2)).sum(dim=-1)
            # Shifting by half the band pairs each quadrant of the spectrum with another (left
            # with right, top with bottom, diagonal opposites), and a pair's coherence is the same
            # seen from either side: so each pair is computed once, from quadrant views, and
            # counted at both of its places in the profile (the constant matrix).
            spectrum_halves = windowed.view(-1, 2, height // 2, 2, width // 2)
            power_halves = power.view(-1, 2, power.shape[1] // 2, 2, power.shape[2] // 2)
            maps = []
            for (first, second), (power_first, power_second) in zip(
                _shift_pairs(spectrum_halves), _shift_pairs(power_halves), strict=True
            ):
                # X(f) * conj(X(f + shift)), averaged over each block of frequencies: (B, ., h, ., w, 2).
                cross = _block_means(torch.view_as_real(first * second.conj()), (2, 4))
                coherence = cross.square().sum(dim=-1) / (power_first * power_second + 1e-6)
                maps.append(coherence.flatten(1))
            return torch.cat(maps, dim=1) @ coherence_matrix, spectrum_profile

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 2) realness logits: coherence, radial spectrum."""
        return self.read(*self.profiles(images))

    def read(self, coherence: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        """The (B, 2) logits from `profiles`' two outputs (cached ones too: they are fixed)."""
        spectrum_logit = self.spectrum_linear(self.spectrum_norm(spectrum))
        coherence_logit = self.mlp(self.norm(coherence)) * COHERENCE_GAIN
        return torch.cat([coherence_logit, spectrum_logit], dim=1)


def _block_means_complex(values: torch.Tensor) -> torch.Tensor:
    """(B, a, h, c, w) contiguous complex -> (B * a, h / K, c * w / K, 2): the block means of
    its real and imaginary parts. Summed over row runs first (a reduction over an outer
    dimension, contiguous inside), then over column runs of the quarter-size result. Blocks
    never straddle the c halves: K divides w."""
    batch, rows_split, height, columns_split, width = values.shape
    k = COHERENCE_BLOCK
    parts = torch.view_as_real(values).view(batch * rows_split, height // k, k, -1).sum(2)
    parts = parts.view(batch * rows_split, height // k, columns_split * width // k, k, 2).sum(3)
    return parts.mul_(1.0 / (k * k))


def _squared_magnitude(real_imag: torch.Tensor) -> torch.Tensor:
    """(..., 2) real and imaginary parts -> (...) re^2 + im^2, two passes."""
    real, imag = real_imag[..., 0], real_imag[..., 1]
    return (real * real).addcmul_(imag, imag)


def _full_spectrum(onesided: torch.Tensor, width: int) -> torch.Tensor:
    """An rfft2 (B, H, W/2 + 1) -> the fft2 (B, H, W) of the same real images: the missing
    columns are the conjugates of the mirrored ones, X(-k1, -k2) = conj X(k1, k2)."""
    return torch.cat([onesided, mirrored_columns(onesided, width).conj()], dim=-1)


def _eager_profiles(
    branch: SpectralCoherenceBranch, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager form of `SpectralCoherenceBranch.profiles` (fp32 images, autocast off)."""
    batch, _, height, width = images.shape
    gray = eager_grayscale(images)
    # Centred and scaled to unit RMS in one pass; the plain and the Hann-windowed image share
    # one buffer and one FFT call.
    variance, mean = torch.var_mean(gray, dim=(1, 2), keepdim=True, correction=0)
    scale = 1.0 / (variance.sqrt() + 1e-3)
    window, coherence_matrix, ring_means = branch._constants(height, width, images.device)
    both = torch.empty(2, batch, height, width, device=images.device)
    torch.addcmul(-mean * scale, gray, scale, out=both[0])
    torch.mul(both[0], window, out=both[1])
    plain, windowed = torch.fft.rfft2(both)
    log_power = _squared_magnitude(torch.view_as_real(plain)).add_(1e-6).log_()
    spectrum_profile = log_power.flatten(1) @ ring_means
    if branch.reference_pixels is not None:
        spectrum_profile = spectrum_profile + math.log(branch.reference_pixels / (height * width))
    windowed = _full_spectrum(windowed, width)  # (B, H, W) complex
    power = F.avg_pool2d(
        _squared_magnitude(torch.view_as_real(windowed)).unsqueeze(1), COHERENCE_BLOCK
    ).squeeze(1)  # (B, H/K, W/K)
    spectrum_halves = windowed.view(batch, 2, height // 2, 2, width // 2)
    power_halves = power.view(batch, 2, power.shape[1] // 2, 2, power.shape[2] // 2)
    maps = []
    for (first, second), (power_first, power_second) in zip(
        _shift_pairs(spectrum_halves), _shift_pairs(power_halves), strict=True
    ):
        cross = first * second.conj()  # (B, a, h, c, w), contiguous
        squared = _squared_magnitude(_block_means_complex(cross)).view(power_first.shape)
        maps.append((squared / (power_first * power_second + 1e-6)).flatten(1))
    return torch.cat(maps, dim=1) @ coherence_matrix, spectrum_profile
