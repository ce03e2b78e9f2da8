"""The backbone detector: a pretrained feature extractor, a linear realness read of its pooled
features (UnivFD's probe), and optionally the spectral-coherence branch beside it.

`FeatureProbe` is the read alone, on features computed once and cached; `BackboneDetector` is
the same read (same parameter names) behind the backbone, so a probe trained on cached features
loads into the whole model, and the whole model is what fine-tuning trains and export writes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fakedet.models.backbones.base import LoadedBackbone, Preprocessing
from fakedet.models.coherence import (
    COHERENCE_BINS,
    SHIFTS,
    SPECTRUM_BINS,
    SpectralCoherenceBranch,
)

COHERENCE_FEATURES = SHIFTS * COHERENCE_BINS
SPECTRAL_FEATURES = COHERENCE_FEATURES + SPECTRUM_BINS  # the branch's fixed profiles per image


class FeatureProbe(nn.Module):
    """Features (B, D [+ SPECTRAL_FEATURES]) -> {"score": (B,), "logits": (B, 2)}, class 1 real.

    One linear layer gives the realness logit; the 2-class logits are (0, that logit), so the
    cross-entropy term is the same read's binary cross-entropy. With the spectral branch its two
    logits (coherence, radial spectrum) are added, as in the built-in detectors.
    """

    def __init__(self, feature_dim: int, with_spectral: bool) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, 1)
        self.coherence_branch = SpectralCoherenceBranch() if with_spectral else None

    @property
    def input_dim(self) -> int:
        return self.feature_dim + (SPECTRAL_FEATURES if self.coherence_branch is not None else 0)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = features[:, : self.feature_dim]  # (B, D)
        realness = self.head(pooled).squeeze(1)  # (B,)
        extra = None
        if self.coherence_branch is not None:
            spectral = features[:, self.feature_dim :].float()  # (B, SPECTRAL_FEATURES)
            coherence = spectral[:, :COHERENCE_FEATURES]
            extra = self.coherence_branch.read(coherence, spectral[:, COHERENCE_FEATURES:])
            realness = realness + extra.sum(dim=1).to(realness.dtype)  # (B, 2) -> (B,)
        outputs = {
            "score": torch.sigmoid(realness),
            "logits": F.pad(realness.unsqueeze(1), (1, 0)),  # (B, 2): (0, realness)
        }
        if extra is not None and self.training:  # the branch also trains alone, as built-ins do
            outputs["aux_logits"] = extra
        return outputs


class BackboneDetector(FeatureProbe):
    """Images (B, 3, S, S) in [0, 1] -> the probe's outputs, normalised with the backbone's own
    mean and std. `frozen`: the backbone never trains and stays in eval mode (a probe)."""

    def __init__(
        self, backbone: LoadedBackbone, img_size: int, with_spectral: bool, frozen: bool
    ) -> None:
        super().__init__(backbone.feature_dim, with_spectral)
        self.img_size = img_size
        self.preprocessing: Preprocessing = backbone.preprocessing
        self.backbone = backbone.module
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)
        mean = torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True) -> BackboneDetector:
        super().train(mode)
        if self.frozen:  # a frozen backbone's BatchNorm and dropout stay as pretrained
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, D [+ SPECTRAL_FEATURES]): what the probe reads."""
        pooled = self.backbone((images - self.mean) / self.std)  # (B, D)
        if self.coherence_branch is None:
            return pooled
        coherence, spectrum = self.coherence_branch.profiles(images)  # (B, 48), (B, 32)
        return torch.cat([pooled.float(), coherence, spectrum], dim=1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return super().forward(self.features(images))
