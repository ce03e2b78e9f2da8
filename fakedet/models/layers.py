"""Small building blocks shared by the detector branches."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def bin_average_matrix(
    index: torch.Tensor, bins: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,) bin of each of N positions -> (N, bins) matrix M such that values (B, N) @ M is the
    mean of each bin (0 for an empty one), each position counted `weight` times (default 1).
    Positions with an index outside [0, bins) are left out.

    A matrix product rather than index_add: an ONNX export turns index_add into a Scatter with
    reduction "add", which ONNX Runtime's CPU provider runs on several threads with a race on
    repeated indices (radial profiles off by up to 1 in log power from about 250k updates on,
    and different from run to run; seen as a 0.99 realness gap on 256 px batches), and CUDA's
    index_add adds with atomics in no fixed order. A product is deterministic on both."""
    one_hot = (index.reshape(-1, 1) == torch.arange(bins, device=index.device)).float()
    if weight is not None:
        one_hot = one_hot * weight.reshape(-1, 1)
    return one_hot / one_hot.sum(dim=0).clamp_min(1)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution that runs in fp32 under autocast.

    Under bf16 autocast the depthwise 3x3 convolutions' backward took most of the fast model's
    step on a CPU with native bf16 (oneDNN: 32 of 44 ms of convolution backward, against 22 ms
    for every convolution's backward in fp32); on an H200 a weight-gradient kernel led the bf16
    step too, not yet tied to these layers. They are memory-bound with few MACs, so fp32 costs
    them little; the pointwise convolutions around them, where the MACs are, stay in bf16
    (benchmarks/amp.py). Outside autocast it is a plain Conv2d (same weights and keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class ConvBNAct(nn.Sequential):
    """Conv -> BatchNorm -> ReLU; the bias is dropped because BatchNorm has its own."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        padding: int | None = None,
    ) -> None:
        depthwise = groups > 1 and groups == in_channels
        super().__init__(
            (DepthwiseConv2d if depthwise else nn.Conv2d)(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2 if padding is None else padding,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, with a residual connection when the shape allows."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, 3, stride=stride, groups=in_channels)
        self.pointwise = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: one pass over the map fewer each, and no new allocation. (Neither a
        # BatchNorm's nor a conv's backward reads its output.)
        out = self.pointwise(self.depthwise(x))
        if self.residual:
            out += x
        return F.relu_(out)


def conv_stage(in_channels: int, out_channels: int, depth: int, stride: int) -> nn.Sequential:
    """One resolution stage: a (strided) block that changes width, then `depth - 1` residual blocks."""
    blocks = [SeparableBlock(in_channels, out_channels, stride)]
    blocks += [SeparableBlock(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ImageNormalize(nn.Module):
    """Maps images in [0, 1] to ImageNet statistics inside the model, so callers pass plain pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class Heads(nn.Module):
    """Realness score (sigmoid) and real/fake logits (class 1 = real) from a pooled feature."""

    def __init__(self, in_features: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.score = nn.Linear(hidden, 1)
        self.logits = nn.Linear(hidden, 2)

    def forward(
        self, pooled: torch.Tensor, extra_logit: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """`extra_logit` (B, K): other branches' realness log-odds, added (summed) to the
        score's and to the real class's logit, so both outputs say the same thing."""
        hidden = self.trunk(pooled)
        score_logit = self.score(hidden).squeeze(1)  # (B,)
        logits = self.logits(hidden)  # (B, 2)
        if extra_logit is None:
            return {"score": torch.sigmoid(score_logit), "logits": logits}
        extra = extra_logit.sum(dim=1).to(score_logit.dtype)
        outputs = {
            "score": torch.sigmoid(score_logit + extra),
            "logits": logits + F.pad(extra.unsqueeze(1), (1, 0)),  # + (0, extra)
        }
        if self.training:  # the branch is also trained alone (losses.AUX_LOSS_WEIGHT)
            outputs["aux_logits"] = extra_logit  # (B, K)
        return outputs


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode for fast scoring: every BatchNorm folded into the conv
    before it, and the weights channels-last.

    Channels-last weights make oneDNN (CPU) and cuDNN run the convolutions, depthwise ones most
    of all, in NHWC and hand NHWC maps on through the CNN trunks, while callers keep passing
    ordinary NCHW images (the statistical branch's reductions stay on those, where NHWC would
    cost copies).

    Eval-mode BatchNorm is a fixed per-channel affine map, so folding it into the conv's weight
    and bias computes the same function (to float rounding) with one pass over each feature map
    fewer, which on CPU is a large share of a depthwise-separable network's time. The copy has
    other parameter names (a conv bias, no BatchNorm), so it is for scoring only: neither saved
    nor trained. A model with a `fold_inputs()` method also folds the maps it applies to its
    input before a stem (normalisation, the NPR residual) into that stem's weights.
    """
    from copy import deepcopy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.children())
        for index in range(len(children) - 1):
            conv, norm = children[index], children[index + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[index] = fuse_conv_bn_eval(conv, norm)
                module[index + 1] = nn.Identity()
    fold_inputs = getattr(fused, "fold_inputs", None)
    if callable(fold_inputs):
        fold_inputs()
    return fused.to(memory_format=torch.channels_last)


def _patchify_conv(conv: nn.Module) -> nn.Conv2d:
    """`conv` when it is a 4x4, stride-4, unpadded convolution (the trunks' stems), whose
    patches never overlap an edge: the input maps below fold into it exactly."""
    if not (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (4, 4)
        and conv.stride == (4, 4)
        and conv.padding == (0, 0)
        and conv.groups == 1
    ):
        raise ValueError(f"cannot fold an input map into {conv}")
    return conv


@torch.no_grad()
def fold_normalize(conv: nn.Module, normalize: ImageNormalize, mean: bool = True) -> None:
    """Make a patchify stem on normalised images take plain [0, 1] pixels: weight / std per
    input channel, bias - sum(weight * mean / std). Exact up to float rounding (no padding).
    `mean=False` for a stem on differences of pixels, in which the mean cancels."""
    conv = _patchify_conv(conv)
    scaled = conv.weight / normalize.std.view(1, -1, 1, 1)
    shift = (scaled * normalize.mean.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    bias = torch.zeros_like(shift) if conv.bias is None else conv.bias
    conv.weight.copy_(scaled)
    conv.bias = nn.Parameter(bias - shift if mean else bias.clone())


@torch.no_grad()
def fold_cell_residual(conv: nn.Module) -> None:
    """Make a patchify stem on the 2x2-cell residual x - x[cell's top left] (branches.
    npr_residual) take x itself. The 4x4 patches hold whole cells, so the residual is linear
    inside each patch: every pixel keeps its weight, and each cell's top-left pixel takes
    minus the sum of the other three's."""
    weight = _patchify_conv(conv).weight
    for row in (0, 2):
        for column in (0, 2):
            cell = weight[:, :, row : row + 2, column : column + 2]
            others = cell.sum(dim=(-2, -1)) - cell[:, :, 0, 0]
            weight[:, :, row, column] = -others


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> str | None:
    """Load `weights` strictly into `model`; None when they fit, else the first line of why not
    (at most 160 characters), for the caller's own error that names the file and the fix."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        return str(exc).strip().splitlines()[0][:160]
    return None
