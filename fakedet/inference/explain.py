"""Where in an image the detector sees a fake: patch-score maps and their heatmap overlays.

A map is the realness of square patches laid over the image on a grid: each patch is cut out at
its native pixels (never resized: a resize would manufacture the up-sampling trace the detectors
look for) and scored by the model on its own. It works with anything that scores images the
way the detectors do, `model(images (N, 3, P, P) in [0, 1]) -> {"score": (N,)}`: a PyTorch
detector, a loaded ONNX or TorchScript export. numpy, PIL and torch only: this is on the
scoring path.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from fakedet.errors import UsageError

ScoreModel = Callable[[torch.Tensor], dict[str, torch.Tensor]]

# Suspicion (1 - realness) 0 -> 1 through these colours: blue (real), cyan, yellow, red (fake).
_COLOUR_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
_COLOURS = np.array(
    [[40, 90, 220], [60, 200, 220], [250, 220, 60], [220, 30, 30]], dtype=np.float64
)


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Offsets of the patches along one side of `size` pixels: every `stride`, plus one flush
    with the far edge so that every pixel is covered (one patch of the whole side when the side
    is not longer than `patch`)."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _check_grid(patch: int, stride: int) -> None:
    if patch < 1 or stride < 1:
        raise UsageError(
            f"patch {patch} and stride {stride} must both be at least 1 pixel (e.g. 64 and 32)."
        )


@torch.no_grad()
def explain_maps(
    model: ScoreModel,
    images: torch.Tensor,
    patch: int = 64,
    stride: int = 32,
    batch_size: int = 64,
) -> np.ndarray:
    """Realness of each patch of each image.

    Args:
        model: scores (N, 3, p, p) float images in [0, 1] as {"score": (N,) realness}.
        images: (B, 3, H, W) float in [0, 1], on the model's device.
        patch: patch side in pixels; a side shorter than that is taken whole.
        stride: step between patches (the last one is moved flush with the far edge).
        batch_size: patches per forward pass.

    Returns:
        (B, h, w) float32 realness in [0, 1] (1 = real), h and w from `patch_starts`.

    Raises:
        UsageError: images not (B, 3, H, W), or patch / stride below 1.
    """
    _check_grid(patch, stride)
    if images.dim() != 4 or images.shape[1] != 3:
        raise UsageError(f"images of shape {tuple(images.shape)} are not (B, 3, H, W) RGB.")
    batch, _, height, width = images.shape
    rows, columns = patch_starts(height, patch, stride), patch_starts(width, patch, stride)
    patch_h, patch_w = min(patch, height), min(patch, width)
    crops = torch.stack(
        [images[:, :, y : y + patch_h, x : x + patch_w] for y in rows for x in columns], dim=1
    ).flatten(0, 1)  # (B * h * w, 3, p, p), image-major
    scores = [
        model(crops[start : start + batch_size])["score"].float().cpu()
        for start in range(0, crops.shape[0], batch_size)
    ]
    return torch.cat(scores).view(batch, len(rows), len(columns)).numpy()


def pixel_map(
    patch_map: np.ndarray, height: int, width: int, patch: int = 64, stride: int = 32
) -> np.ndarray:
    """A (h, w) patch map back on the image's (height, width) pixels: each pixel the mean
    realness of the patches that cover it (the grid `explain_maps` used for those arguments).

    Raises:
        UsageError: the map's shape is not the grid of that image, patch and stride.
    """
    _check_grid(patch, stride)
    rows, columns = patch_starts(height, patch, stride), patch_starts(width, patch, stride)
    if patch_map.shape != (len(rows), len(columns)):
        raise UsageError(
            f"a patch map of shape {patch_map.shape} is not the {len(rows)}x{len(columns)} grid "
            f"of a {height}x{width} image with patch {patch} and stride {stride}."
        )
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for i, y in enumerate(rows):
        for j, x in enumerate(columns):
            total[y : y + patch, x : x + patch] += patch_map[i, j]
            count[y : y + patch, x : x + patch] += 1.0
    return (total / count).astype(np.float32)


def colourise(suspicion: np.ndarray) -> np.ndarray:
    """(H, W) suspicion in [0, 1] -> (H, W, 3) uint8 colours, blue (real) to red (fake)."""
    values = np.clip(suspicion, 0.0, 1.0)
    channels = [np.interp(values, _COLOUR_STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def overlay_png(
    image: np.ndarray,
    patch_map: np.ndarray,
    patch: int | None = None,
    stride: int | None = None,
    alpha: float = 0.45,
) -> bytes:
    """A PNG of the image with the patch map drawn over it as a heatmap (red: fake).

    Args:
        image: (H, W, 3) uint8 RGB.
        patch_map: (h, w) realness in [0, 1], as from `explain_maps`.
        patch, stride: the grid the map was computed on: each pixel then shows the mean of the
            patches covering it. Without them the map is stretched smoothly over the image.
        alpha: opacity of the heatmap at full suspicion; a real-looking region keeps a third of
            it, so the image stays readable where nothing is flagged.

    Returns:
        The PNG file's bytes.

    Raises:
        UsageError: an image that is not (H, W, 3) uint8, an empty map, alpha outside [0, 1].
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"the image ({image.shape}, {image.dtype}) is not (H, W, 3) uint8 RGB.")
    if patch_map.ndim != 2 or patch_map.size == 0:
        raise UsageError(f"the patch map of shape {patch_map.shape} is not a non-empty (h, w).")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha {alpha} is outside [0, 1]; use e.g. 0.45.")
    height, width = image.shape[:2]
    realness = np.asarray(patch_map, dtype=np.float32)
    if patch is not None and stride is not None:
        per_pixel = pixel_map(realness, height, width, patch, stride)
    else:
        stretched = Image.fromarray(realness).resize((width, height), Image.Resampling.BILINEAR)
        per_pixel = np.asarray(stretched, dtype=np.float32)
    suspicion = 1.0 - np.clip(per_pixel, 0.0, 1.0)
    weight = (alpha * (1.0 + 2.0 * suspicion) / 3.0)[..., None]  # (H, W, 1)
    blended = image.astype(np.float32) * (1.0 - weight) + colourise(suspicion) * weight
    buffer = io.BytesIO()
    Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
