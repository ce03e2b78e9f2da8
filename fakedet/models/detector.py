"""The fast and full detectors, assembled from branches, and their registry entries.

Both also score patches: a small head reads the realness of every cell of the 1/32 feature
map (fast) or of every perceptual token after fusion (full), and the mean logit of the most
suspicious `patch_topk` share of them is one more realness logit added to the image's (top-k
pooling, a multiple-instance read): a fake region in an otherwise real photo then moves the
verdict instead of being averaged away. It is trained with the image's label only, as part of
the score and on its own (losses.AUX_LOSS_WEIGHT). `patch_topk` 0 builds the model without it,
as every checkpoint written before it existed holds.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fakedet.models.branches import (
    PerceptualBranch,
    ResidualAuxBranch,
    SpectralBranch,
    StageSpec,
    StatisticalBranch,
)
from fakedet.models.coherence import SpectralCoherenceBranch
from fakedet.models.fusion import CrossModalBlock, SelfAttentionBlock
from fakedet.models.layers import (
    ConvBNAct,
    Heads,
    ImageNormalize,
    fold_cell_residual,
    fold_normalize,
)
from fakedet.models.registry import register_model

# The share of patches whose mean logit is the patch read: on 128 px images (16 patches) the
# 4 most suspicious, about the area of the protocol's partial fakes' regions.
DEFAULT_PATCH_TOPK = 0.2


class PatchRead(nn.Module):
    """Per-patch realness logits from (B, C, h, w) features, and their top-k pooled logit."""

    def __init__(self, in_channels: int, hidden: int, topk: float) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
        )
        # Saved with the weights, so a checkpoint rebuilds the same pooling; read as a Python
        # number (`share`), which an export traces as a constant rather than data.
        self.register_buffer("topk", torch.tensor(float(topk)))
        self.share = float(topk)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.share = float(self.topk)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B, h, w) patch logits, (B, 1) pooled logit: the mean of the k lowest (most fake)."""
        logits = self.head(features).squeeze(1)  # (B, h, w)
        flat = logits.flatten(1).float()
        count = flat.shape[1]
        # int(): a Python number under tracing, fixed by the export's input size.
        k = max(1, min(int(count), math.ceil(self.share * int(count))))
        lowest = torch.topk(flat, k, dim=1, largest=False).values  # (B, k)
        return logits, lowest.mean(dim=1, keepdim=True)


class FastDetector(nn.Module):
    """Perceptual CNN + NPR residual branch, concatenated at 1/32 resolution and pooled; plus
    the spectral-coherence branch's logit (added after 0.1.0; `coherence=False`: 0.1.0's model)."""

    def __init__(
        self,
        img_size: int,
        perceptual_stem: int,
        perceptual_stages: tuple[StageSpec, ...],
        perceptual_out: int,
        aux_stem: int,
        aux_stages: tuple[StageSpec, ...],
        aux_out: int,
        fused: int,
        head_hidden: int,
        coherence: bool = True,
        patch_topk: float = DEFAULT_PATCH_TOPK,
        revision: int = 1,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        if revision > 1:  # saved with the weights; revision 1's weights have no such key
            self.register_buffer("revision", torch.tensor(revision))
        self.normalize = ImageNormalize()
        self.perceptual_branch = PerceptualBranch(
            perceptual_stem, perceptual_stages, perceptual_out
        )
        self.coherence_branch = (
            SpectralCoherenceBranch(reference_side=img_size) if coherence else None
        )
        self.aux_branch = ResidualAuxBranch(aux_stem, aux_stages, aux_out)
        self.fuse = ConvBNAct(perceptual_out + aux_out, fused, 1)
        self.patch_read = PatchRead(fused, head_hidden // 4, patch_topk) if patch_topk else None
        self.heads = Heads(fused, head_hidden)

    def fold_inputs(self) -> None:
        """For a scoring copy (layers.fuse_for_inference): the normalisation and the NPR
        residual go into the two stems' weights, so neither full-resolution map is built."""
        fold_normalize(self.perceptual_branch.trunk[0][0], self.normalize)
        stem = self.aux_branch.trunk[0][0]
        fold_normalize(stem, self.normalize, mean=False)  # x - x[top left] cancels the mean
        fold_cell_residual(stem)
        self.aux_branch.residual_folded = True
        self.normalize = nn.Identity()

    def _run(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        normed = self.normalize(images)  # (B, 3, H, W)
        perceptual = self.perceptual_branch(normed)  # (B, Cp, H/32, W/32)
        residual = self.aux_branch(normed)  # (B, Ca, H/32, W/32)
        fused = self.fuse(torch.cat([perceptual, residual], dim=1))
        extra = self.coherence_branch(images) if self.coherence_branch is not None else None
        patches = None
        if self.patch_read is not None:
            patches, pooled = self.patch_read(fused)  # (B, H/32, W/32), (B, 1)
            extra = pooled if extra is None else torch.cat([extra, pooled.to(extra.dtype)], 1)
        return self.heads(F.adaptive_avg_pool2d(fused, 1).flatten(1), extra), patches

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._run(images)[0]

    def patch_logits(self, images: torch.Tensor) -> torch.Tensor | None:
        """(B, H/32, W/32) realness logits of the image's 32 px cells (each sees a wider
        context), or None for a model built without the patch read."""
        return self._run(images)[1]


class FullDetector(nn.Module):
    """Perceptual + spectral + statistical branches fused by cross-modal and self-attention;
    plus the spectral-coherence branch's logit (added after 0.1.0; `coherence=False`: 0.1.0's)."""

    def __init__(
        self,
        img_size: int,
        perceptual_stem: int,
        perceptual_stages: tuple[StageSpec, ...],
        dim: int,
        spectral_stem: int,
        spectral_stages: tuple[StageSpec, ...],
        spectral_tokens_side: int,
        profile_bins: int,
        stat_tokens: int,
        heads: int,
        self_attention_layers: int,
        max_tokens_side: int,
        head_hidden: int,
        coherence: bool = True,
        patch_topk: float = DEFAULT_PATCH_TOPK,
        stat_window: int | None = None,
        revision: int = 1,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        if revision > 1:  # saved with the weights; revision 1's weights have no such key
            self.register_buffer("revision", torch.tensor(revision))
        self.max_tokens_side = max_tokens_side
        self.normalize = ImageNormalize()
        self.perceptual_branch = PerceptualBranch(perceptual_stem, perceptual_stages, dim)
        self.spectral_branch = SpectralBranch(
            spectral_stem, spectral_stages, dim, spectral_tokens_side, profile_bins
        )
        self.statistical_branch = StatisticalBranch(dim, stat_tokens, stat_window)
        self.coherence_branch = (
            SpectralCoherenceBranch(reference_side=img_size) if coherence else None
        )
        # One learned vector per token kind, so attention can tell the modalities apart.
        self.modality_embedding = nn.Parameter(torch.zeros(4, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cross_modal = CrossModalBlock(dim, heads)
        self.self_attention = nn.ModuleList(
            SelfAttentionBlock(dim, heads) for _ in range(self_attention_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.patch_read = PatchRead(dim, head_hidden // 4, patch_topk) if patch_topk else None
        self.heads = Heads(dim, head_hidden)
        nn.init.trunc_normal_(self.modality_embedding, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._run(images)[0]

    def patch_logits(self, images: torch.Tensor) -> torch.Tensor | None:
        """(B, s, s) realness logits of the perceptual tokens after fusion (s = H/32 up to
        max_tokens_side), or None for a model built without the patch read."""
        return self._run(images)[1]

    def fold_inputs(self) -> None:
        """For a scoring copy (layers.fuse_for_inference): the normalisation goes into the
        perceptual stem's weights (the other branches read plain pixels)."""
        fold_normalize(self.perceptual_branch.trunk[0][0], self.normalize)
        self.normalize = nn.Identity()

    def _run(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        normed = self.normalize(images)
        perceptual = self.perceptual_branch(normed)  # (B, D, H/32, W/32)
        # int(): a Python number under tracing too (TorchScript export), fixed by img_size.
        side = min(int(perceptual.shape[-1]), self.max_tokens_side)
        perceptual = (
            F.adaptive_avg_pool2d(perceptual, side).flatten(2).transpose(1, 2)
        )  # (B, Np, D)
        spectral, profile = self.spectral_branch(images)  # (B, Ns, D), (B, 1, D)
        statistical = self.statistical_branch(images)  # (B, Nt, D)
        perceptual = perceptual + self.modality_embedding[0]
        context = torch.cat(
            [
                spectral + self.modality_embedding[1],
                profile + self.modality_embedding[2],
                statistical.to(spectral.dtype) + self.modality_embedding[3],
            ],
            dim=1,
        )  # (B, Ns + 1 + Nt, D)
        perceptual = self.cross_modal(perceptual, context)
        cls = self.cls_token.expand(images.shape[0], -1, -1)
        tokens = torch.cat([cls, perceptual, context], dim=1)
        for block in self.self_attention:
            tokens = block(tokens)
        extra = self.coherence_branch(images) if self.coherence_branch is not None else None
        patches = None
        if self.patch_read is not None:
            grid = tokens[:, 1 : 1 + side * side].transpose(1, 2)  # (B, D, s*s)
            grid = grid.reshape(grid.shape[0], grid.shape[1], side, side)  # (B, D, s, s)
            patches, pooled = self.patch_read(grid)
            extra = pooled if extra is None else torch.cat([extra, pooled.to(extra.dtype)], 1)
        return self.heads(self.norm(tokens[:, 0]), extra), patches


# Stage specs are (out_channels, depth, stride) after a stride-4 patchify stem: 1/4 -> 1/32.
_EARLY_STAGES: tuple[StageSpec, ...] = ((48, 1, 1), (96, 2, 2), (192, 3, 2))


def _widths(name: str, revisions: dict[int, dict[str, object]], revision: int) -> dict[str, object]:
    """The constructor arguments of `name`'s `revision`.

    Raises:
        ValueError: an unknown revision, naming the known ones.
    """
    if revision not in revisions:
        raise ValueError(f"unknown {name} model revision {revision}; known: {sorted(revisions)}")
    return revisions[revision]


# The fast model's widths by revision. Revision 1 (fakedet 0.1.0 to 0.4.x, about 2.5M
# parameters) spent half its time in five 512-wide blocks at 1/32 resolution; revision 2 is
# narrower, which made fused inference about twice as fast on CPU for the same held-out AUC
# on the protocol (docs/performance.md). Checkpoints of revision 1 hold no `revision` buffer
# and load into revision 1 (models/loading.py).
FAST_REVISIONS: dict[int, dict[str, object]] = {
    1: dict(
        perceptual_stem=32,
        perceptual_stages=(*_EARLY_STAGES, (512, 5, 2)),
        perceptual_out=896,
        aux_stem=24,
        aux_stages=((48, 1, 2), (96, 1, 2), (192, 1, 2)),
        aux_out=192,
        fused=512,
        head_hidden=256,
    ),
    2: dict(
        perceptual_stem=24,
        perceptual_stages=((48, 1, 2), (96, 2, 2), (192, 2, 2)),
        perceptual_out=256,
        aux_stem=16,
        aux_stages=((32, 1, 2), (64, 1, 2), (128, 1, 2)),
        aux_out=128,
        fused=256,
        head_hidden=128,
    ),
}
FAST_REVISION = max(FAST_REVISIONS)


@register_model
def fast(
    img_size: int = 256,
    coherence: bool = True,
    patch_topk: float = DEFAULT_PATCH_TOPK,
    revision: int = FAST_REVISION,
) -> FastDetector:
    """Fast mode: perceptual + NPR aux + spectral-coherence branches and the patch read (about
    0.3M parameters; revision 1: 2.5M)."""
    return FastDetector(
        img_size=img_size,
        coherence=coherence,
        patch_topk=patch_topk,
        revision=revision,
        **_widths("fast", FAST_REVISIONS, revision),  # type: ignore[arg-type]
    )


# The full model's widths by revision. Revision 2 (fakedet 0.5.0 on) reaches 1/32 with three
# stride-2 stages instead of a 448-wide one at 1/32, carries 256-wide tokens instead of 320 (the
# attention blocks took as many MACs as a whole MobileNetV3-Large at 256 px), and reads its
# statistics from at most the centre 128 px; the same held-out AUC on the protocol
# (docs/performance.md). Revision 1's checkpoints (no `revision` buffer) load into revision 1.
FULL_REVISIONS: dict[int, dict[str, object]] = {
    1: dict(
        perceptual_stem=32,
        perceptual_stages=(*_EARLY_STAGES, (448, 4, 2)),
        dim=320,
        self_attention_layers=3,
        head_hidden=256,
        stat_window=None,
    ),
    2: dict(
        perceptual_stem=32,
        perceptual_stages=((64, 1, 2), (128, 2, 2), (256, 3, 2)),
        dim=256,
        self_attention_layers=3,
        head_hidden=256,
        stat_window=128,
    ),
}
FULL_REVISION = max(FULL_REVISIONS)


@register_model
def full(
    img_size: int = 256,
    coherence: bool = True,
    patch_topk: float = DEFAULT_PATCH_TOPK,
    revision: int = FULL_REVISION,
) -> FullDetector:
    """Full mode: perceptual + spectral + statistical with attention fusion, plus spectral
    coherence (about 2.9M parameters; revision 1: 5M)."""
    return FullDetector(
        img_size=img_size,
        spectral_stem=16,
        spectral_stages=((32, 1, 2), (64, 1, 2), (128, 1, 2)),
        spectral_tokens_side=4,
        profile_bins=64,
        stat_tokens=4,
        heads=4,
        max_tokens_side=8,
        coherence=coherence,
        patch_topk=patch_topk,
        revision=revision,
        **_widths("full", FULL_REVISIONS, revision),  # type: ignore[arg-type]
    )
