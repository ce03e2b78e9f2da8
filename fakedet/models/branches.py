"""The detector's branches: what each one looks at in an image, and the features it returns."""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from fakedet.models.layers import ConvBNAct, bin_average_matrix, conv_stage

StageSpec = tuple[int, int, int]  # (out_channels, depth, stride)


def build_trunk(
    in_channels: int, stem: int, stem_stride: int, stages: tuple[StageSpec, ...]
) -> nn.Sequential:
    """A patchify stem then separable stages.

    The stem is a stride-`stem_stride` conv with a kernel as large as its stride: it sees every
    pixel once (nothing high-frequency is skipped) while the costly full-resolution maps and their
    BatchNorms are never built.
    """
    layers: list[nn.Module] = [
        ConvBNAct(in_channels, stem, stem_stride, stride=stem_stride, padding=0)
    ]
    width = stem
    for out_width, depth, stride in stages:
        layers.append(conv_stage(width, out_width, depth, stride))
        width = out_width
    return nn.Sequential(*layers)


class PerceptualBranch(nn.Module):
    """Compact CNN on RGB: semantic and texture cues, down to 1/32 resolution.

    Width grows late, where the feature map is small, so most parameters cost few FLOPs.
    """

    def __init__(self, stem: int, stages: tuple[StageSpec, ...], out_channels: int) -> None:
        super().__init__()
        self.trunk = build_trunk(3, stem, 4, stages)  # (B, C, H/32, W/32)
        self.project = ConvBNAct(stages[-1][0], out_channels, 1)
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.trunk(images))


def npr_residual(images: torch.Tensor) -> torch.Tensor:
    """x - up(down(x)) (NPR, Tan et al. 2024): the pixel correlations that up-sampling leaves.

    Nearest 2x down then up keeps only what differs inside each 2x2 cell, which is exactly where
    generator up-sampling layers imprint their periodic traces. Computed as one broadcast
    subtraction over (rows / 2, 2, columns / 2, 2) views: every model input side is even.
    """
    batch, channels, height, width = images.shape
    cells = images.reshape(batch, channels, height // 2, 2, width // 2, 2)
    return (cells - cells[:, :, :, :1, :, :1]).reshape(batch, channels, height, width)


class ResidualAuxBranch(nn.Module):
    """Cheap CNN on the full-resolution NPR residual (fast mode's high-frequency view)."""

    def __init__(self, stem: int, stages: tuple[StageSpec, ...], out_channels: int) -> None:
        super().__init__()
        self.trunk = build_trunk(3, stem, 4, stages)
        self.project = ConvBNAct(stages[-1][0], out_channels, 1)
        self.out_channels = out_channels
        self.residual_folded = False  # scoring copies: the residual is in the stem's weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = images if self.residual_folded else npr_residual(images)
        return self.project(self.trunk(inputs))  # (B, C, H/32, W/32)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W) luma (ITU-R 601 weights). Python-float weights, not a tensor:
    a tensor made here would be traced into a TorchScript export on the tracing device."""
    return images[:, 0] * 0.299 + images[:, 1] * 0.587 + images[:, 2] * 0.114


class SpectralBranch(nn.Module):
    """Log-magnitude FFT (normalised per image) through a small CNN, plus an azimuthal profile.

    Generator up-sampling shows as peaks and a distorted high-frequency tail in the spectrum;
    the FFT runs in fp32 even under autocast because fp16 log-magnitudes lose those tails.
    """

    def __init__(
        self,
        stem: int,
        stages: tuple[StageSpec, ...],
        out_channels: int,
        tokens_side: int,
        profile_bins: int,
    ) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            build_trunk(1, stem, 4, stages), ConvBNAct(stages[-1][0], out_channels, 1)
        )
        self.tokens_side = tokens_side
        self.profile_bins = profile_bins
        self.profile_mlp = nn.Sequential(
            nn.Linear(profile_bins, out_channels),
            nn.ReLU(inplace=True),
            nn.Linear(out_channels, out_channels),
        )
        self._bin_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def _radial_bins(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(H*W, profile_bins): the centred spectrum's flattened values -> radial means."""
        key = (int(height), int(width), str(device))  # ints: traced sizes never hit a cache
        if key not in self._bin_cache:
            ys = torch.arange(height, device=device, dtype=torch.float32) - height // 2
            xs = torch.arange(width, device=device, dtype=torch.float32) - width // 2
            radius = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
            radius = radius / radius.max()
            index = (radius * (self.profile_bins - 1)).round().long()
            self._bin_cache[key] = bin_average_matrix(index, self.profile_bins)
        return self._bin_cache[key]

    def log_spectrum(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) centred log-magnitude spectrum, zero mean and unit std per image.

        In eager mode from the one-sided transform (half the FFT, the abs and the log; the
        other half by symmetry, |X(-f)| = |X(f)|), the same numbers to float rounding as the
        portable form that exports trace (tested)."""
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return self._portable_log_spectrum(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return _eager_log_spectrum(images.float())

    def _portable_log_spectrum(self, images: torch.Tensor) -> torch.Tensor:
        """`log_spectrum` in operators that every exporter maps."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            gray = grayscale(images.float()).unsqueeze(1)  # (B, 1, H, W)
            gray = gray - gray.mean(dim=(2, 3), keepdim=True)
            spectrum = torch.fft.fftshift(torch.fft.fft2(gray, norm="ortho"), dim=(-2, -1))
            height, width = spectrum.shape[-2:]
            # The DC bin of a zero-mean image is 0 up to float rounding, which the log turned
            # into anything from -4 to -16 std, different per FFT library, device and batch
            # (an ONNX export differed by 3e-4 in realness from it alone): pinned to exactly 0.
            magnitude = spectrum.abs()
            magnitude[..., height // 2, width // 2] = 0.0
            log_magnitude = torch.log(magnitude + 1e-6)
            mean = log_magnitude.mean(dim=(2, 3), keepdim=True)
            std = log_magnitude.std(dim=(2, 3), keepdim=True) + 1e-6
            return (log_magnitude - mean) / std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spectrum = self.log_spectrum(images)
        features = self.cnn(spectrum)  # autocast, where on, casts this back to half precision
        features = F.adaptive_avg_pool2d(features, self.tokens_side)
        tokens = features.flatten(2).transpose(1, 2)  # (B, T, C)
        height, width = spectrum.shape[-2:]
        average = self._radial_bins(height, width, spectrum.device)
        with torch.autocast(device_type=spectrum.device.type, enabled=False):
            profile = spectrum.flatten(1) @ average  # (B, bins) azimuthal average, in fp32
        profile_token = self.profile_mlp(profile).unsqueeze(1)  # (B, 1, C)
        return tokens, profile_token


def eager_grayscale(images: torch.Tensor) -> torch.Tensor:
    """`grayscale` as one matrix product (eager mode only: the weights are a tensor made on
    the images' device, which a trace would freeze onto the tracing device)."""
    batch, _, height, width = images.shape
    luma = _luma_weights(images.device)
    return (luma @ images.reshape(batch, 3, height * width)).view(batch, height, width)


@functools.cache
def _luma_weights(device: torch.device) -> torch.Tensor:
    """Made once per device: a tensor built from host values on a GPU is a copy the host waits
    for, once per step if made in the step."""
    return torch.tensor([0.299, 0.587, 0.114], device=device)


def mirrored_columns(onesided: torch.Tensor, width: int) -> torch.Tensor:
    """The columns W/2 + 1 .. W - 1 that an rfft2-shaped (B, H, W/2 + 1) map of real images
    leaves out, from the ones it holds: X(-k1, -k2) = conj X(k1, k2), so column W - k2 is
    column k2 with its rows negated (conjugate them for a complex spectrum)."""
    return torch.roll(onesided[..., 1 : width // 2].flip(-1, -2), 1, dims=-2)


def _eager_log_spectrum(images: torch.Tensor) -> torch.Tensor:
    """SpectralBranch.log_spectrum for fp32 images in eager mode."""
    gray = eager_grayscale(images)
    gray = gray - gray.mean(dim=(1, 2), keepdim=True)
    height, width = gray.shape[-2:]
    magnitude = torch.fft.rfft2(gray, norm="ortho").abs()  # (B, H, W/2 + 1)
    magnitude[:, 0, 0] = 0.0  # DC, pinned as in the portable form (before the shift)
    half = magnitude.add_(1e-6).log_()
    # The missing columns mirror the present ones (|X(-f)| = |X(f)|); then the centring
    # (fftshift: a roll by half of each side, every model side being even).
    full = torch.cat([half, mirrored_columns(half, width)], dim=-1)
    full = torch.roll(full, (height // 2, width // 2), (-2, -1))
    variance, mean = torch.var_mean(full, dim=(1, 2), keepdim=True)  # Bessel, as .std()
    return ((full - mean) / (variance.sqrt() + 1e-6)).unsqueeze(1)


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std, skewness and kurtosis over the last dimension: (..., N) -> (..., 4); and the
    centred values and their squares, which the correlations reuse."""
    mean = values.mean(dim=-1, keepdim=True)
    centred = values - mean
    squared = centred * centred
    count = values.shape[-1]
    # Third and fourth moments as dot products (one pass each) divided by std**k after, rather
    # than (centred / std).pow(k): the same values up to float rounding (realness moves < 1e-6)
    # in 6 passes over the full-resolution residuals instead of 10; they dominated the full
    # model's inference time on CPU.
    variance = squared.mean(dim=-1, keepdim=True)
    std = torch.sqrt(variance + 1e-8)
    third = (squared.unsqueeze(-2) @ centred.unsqueeze(-1)).squeeze(-1) / count
    fourth = (squared.unsqueeze(-2) @ squared.unsqueeze(-1)).squeeze(-1) / count
    skew = third / std**3
    kurtosis = fourth / std**4 - 3.0
    return torch.cat([mean, std, skew, kurtosis], dim=-1), centred, squared


def _lag_correlation(
    centred: torch.Tensor, squared: torch.Tensor, dy: int, dx: int
) -> torch.Tensor:
    """Pearson correlation between each pixel and its (dy, dx) neighbour: (B, C, H, W) -> (B, C).

    From window means of the map, of its squares and of the neighbours' products (cov = E[ab] -
    E[a]E[b]): reductions over strided views instead of copied, centred windows. `centred` is
    zero-mean over the whole map, so the differences of means lose nothing to cancellation."""
    height, width = centred.shape[-2:]
    first = (..., slice(0, height - dy), slice(0, width - dx))
    second = (..., slice(dy, height), slice(dx, width))
    a, b = centred[first], centred[second]
    mean_a, mean_b = a.mean(dim=(-2, -1)), b.mean(dim=(-2, -1))
    variance_a = squared[first].mean(dim=(-2, -1)) - mean_a * mean_a
    variance_b = squared[second].mean(dim=(-2, -1)) - mean_b * mean_b
    covariance = (a * b).mean(dim=(-2, -1)) - mean_a * mean_b
    return covariance / (variance_a.clamp_min(0).sqrt() * variance_b.clamp_min(0).sqrt() + 1e-8)


def _binomial_high_pass(images: torch.Tensor) -> torch.Tensor:
    """images - their 3x3 binomial blur ([1, 2, 1] / 4 along each axis), replicate-padded.

    Separable, as shifted additions: a 3-channel grouped convolution at full resolution was
    the branch's slowest kernel on CPU (oneDNN has no fast path for it)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")  # (B, 3, H + 2, W + 2)
    rows = torch.add(padded[..., :, :-2], padded[..., :, 2:]).add_(padded[..., :, 1:-1], alpha=2)
    blur = torch.add(rows[..., :-2, :], rows[..., 2:, :]).add_(rows[..., 1:-1, :], alpha=2)
    return torch.sub(images, blur, alpha=1 / 16)


def centre_window(images: torch.Tensor, side: int | None) -> torch.Tensor:
    """The centre `side` x `side` window of (B, C, H, W) images (a view; each side kept whole
    where it is shorter), or the images themselves for None."""
    if side is None:
        return images
    height, width = int(images.shape[-2]), int(images.shape[-1])  # Python ints when traced too
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return images[..., top : top + min(side, height), left : left + min(side, width)]


class StatisticalBranch(nn.Module):
    """Moments of the image and of its noise residuals, and local correlations, as tokens."""

    num_features = 3 * 4 + 3 * 3 * 4 + 3 * 3 + 3

    def __init__(self, out_channels: int, num_tokens: int, window: int | None = None) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.out_channels = out_channels
        # At most this centre window (cropped, never resampled) is read: the features are
        # global moments and correlations, which a 128 px window estimates as a larger image
        # does, at a quarter of a 256 px image's passes over fresh full-size maps. None: all.
        self.window = window
        self.norm = nn.LayerNorm(self.num_features)
        self.mlp = nn.Sequential(
            nn.Linear(self.num_features, out_channels),
            nn.ReLU(inplace=True),
            nn.Linear(out_channels, out_channels * num_tokens),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, num_features) hand-made statistics, computed in fp32."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            images = centre_window(images.float(), self.window)
            batch, channels, height, width = images.shape
            high_pass = _binomial_high_pass(images)
            diff_x = images[..., :, 1:] - images[..., :, :-1]
            diff_y = images[..., 1:, :] - images[..., :-1, :]
            parts = [_moments(images.flatten(2))[0].flatten(1)]
            high_moments, centred, squared = _moments(high_pass.flatten(2))
            parts.append(high_moments.flatten(1))
            parts += [_moments(residual.flatten(2))[0].flatten(1) for residual in (diff_x, diff_y)]
            centred_map = centred.view(batch, channels, height, width)
            squared_map = squared.view(batch, channels, height, width)
            parts += [
                _lag_correlation(centred_map, squared_map, dy, dx)
                for dy, dx in ((0, 1), (1, 0), (1, 1))
            ]
            # Correlation between colour channels: one (3, 3) Gram matrix of the centred
            # residual; each channel scaled by its std with Bessel's correction.
            count = centred.shape[-1]
            gram = centred @ centred.transpose(1, 2) / count  # (B, 3, 3)
            scale = (torch.diagonal(gram, dim1=1, dim2=2) * count / (count - 1)).sqrt() + 1e-8
            cross = gram / (scale.unsqueeze(2) * scale.unsqueeze(1))
            # Plain indices: an index tensor would be traced onto the tracing device.
            parts.append(torch.stack([cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2]], dim=1))
            stats = torch.cat(parts, dim=1).reshape(batch, self.num_features)
            # Kurtosis of a residual can reach hundreds; a signed log keeps every feature O(1).
            return torch.sign(stats) * torch.log1p(stats.abs())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stats = self.norm(self.features(images))
        tokens = self.mlp(stats)
        return tokens.view(-1, self.num_tokens, self.out_channels)  # (B, T, C)
