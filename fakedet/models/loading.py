"""A registered model with given weights, on a device: what every user of a checkpoint builds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fakedet.errors import CheckpointError
from fakedet.models.backbones.spec import BackboneChoice
from fakedet.models.layers import load_weights
from fakedet.models.registry import create_model

# Models that gained the spectral-coherence branch after fakedet 0.1.0 (models/coherence.py).
LEGACY_WITHOUT_COHERENCE = ("fast", "full")


def build_model(
    name: str,
    img_size: int,
    device: torch.device,
    weights: dict[str, torch.Tensor] | None = None,
    backbone: BackboneChoice | None = None,
    patch_topk: float | None = None,
) -> nn.Module:
    """A registered model, or with `backbone` a pretrained backbone's detector (`name` then
    unused), with `weights` when given, placed on `device`.

    Weights of fast / full without a spectral-coherence branch were written before it existed
    (fakedet 0.1.0 and the commits after it until the branch came): they load into the model as
    it was then, so older checkpoints and exports keep working unchanged. So do weights without
    the patch read (fakedet 0.2.0 and before); with it, the weights hold its top-k share.
    Weights of fast and full name their revision (their widths); those without one are
    revision 1's (fakedet 0.4.x and before).
    `patch_topk` (a new model's; None: the builder's default) is for a model without weights.

    Raises:
        CheckpointError: the weights do not fit this version's model of that name.
    """
    if backbone is not None:
        from fakedet.models.backbones import build_backbone_detector  # deferred: its libraries

        return build_backbone_detector(backbone, img_size, weights).to(device)
    legacy = (
        weights is not None
        and name in LEGACY_WITHOUT_COHERENCE
        and not any(key.startswith("coherence_branch.") for key in weights)
    )
    options: dict[str, object] = {"coherence": False} if legacy else {}
    if weights is not None and name in LEGACY_WITHOUT_COHERENCE:
        options["patch_topk"] = float(weights.get("patch_read.topk", torch.tensor(0.0)))
        options["revision"] = int(weights.get("revision", torch.tensor(1)))  # that wrote them
    elif patch_topk is not None and name in LEGACY_WITHOUT_COHERENCE:  # the built-in models
        options["patch_topk"] = patch_topk
    model = create_model(name, img_size=img_size, **options)
    if weights is not None:
        problem = load_weights(model, weights)
        if problem is not None:
            raise CheckpointError(
                f"The checkpoint's weights do not fit this fakedet's {name} model ({problem}); "
                "use the fakedet version that trained it."
            )
    return model.to(device)


def _forward_group(model: Callable[[torch.Tensor], Any], images: list[torch.Tensor]) -> Any:
    """`model` on images of one size. A lone image in training goes in twice and the first
    output is kept: BatchNorm over a batch of one has no variance to normalise by (and raises)."""
    training = bool(getattr(model, "training", False))
    if not (training and len(images) == 1):
        return model(torch.stack(images))
    outputs = model(torch.stack(images * 2))
    if isinstance(outputs, dict):
        return {key: value[:1] for key, value in outputs.items()}
    if isinstance(outputs, tuple):
        return tuple(value[:1] for value in outputs)
    return outputs[:1]


def forward_batch(
    model: Callable[[torch.Tensor], Any], images: torch.Tensor | list[torch.Tensor]
) -> Any:
    """`model(images)` for a (B, ...) batch; for a batch of mixed sizes (a list of per-image
    tensors, see data.dataset.collate) one call per size, the outputs (a tensor, a tuple or a
    dict of (B, ...) tensors) put back in the batch's order."""
    if isinstance(images, torch.Tensor):
        return model(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    order = torch.tensor([index for indices in by_shape.values() for index in indices])
    parts = [_forward_group(model, [images[i] for i in indices]) for indices in by_shape.values()]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))

    def join(values: list[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat(values)
        return joined[inverse.to(joined.device)]

    if isinstance(parts[0], dict):
        return {key: join([part[key] for part in parts]) for key in parts[0]}
    if isinstance(parts[0], tuple):
        return tuple(join([part[i] for part in parts]) for i in range(len(parts[0])))
    return join(parts)
