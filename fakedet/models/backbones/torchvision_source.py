"""torchvision backbones: `torchvision.models.get_model(name)` with a state dict from a local
file (or the weights enum's download); the last linear layer becomes the identity."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fakedet.models.backbones.base import (
    BackboneError,
    LoadedBackbone,
    Preprocessing,
    WeightsSource,
    download_guarded,
)
from fakedet.models.layers import load_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def exists(name: str) -> bool:
    from torchvision import models

    return name in models.list_models()


def _default_weights(name: str) -> object | None:
    from torchvision import models

    try:
        return models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def native_size(name: str) -> int:
    weights = _default_weights(name)
    return int(weights.transforms().crop_size[0]) if weights is not None else 224  # type: ignore[attr-defined]


def weights_source(name: str) -> WeightsSource | None:
    weights = _default_weights(name)
    if weights is None:
        return None
    from urllib.parse import urlparse

    url = weights.url  # type: ignore[attr-defined]
    return WeightsSource(urlparse(url).hostname or "", url)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load(name: str, weights: Path | None, img_size: int, pretrained: bool) -> LoadedBackbone:
    """The classifier network of `name` with its last linear layer replaced by the identity."""
    from torchvision import models

    default = _default_weights(name)
    if name.startswith(("vit_", "swin_", "maxvit")) and img_size != native_size(name):
        raise BackboneError(
            f"torchvision:{name} takes only {native_size(name)} px inputs; pass --img-size "
            f"{native_size(name)}, or use the timm model of the same name, which resizes."
        )
    model = models.get_model(name, weights=None)
    if pretrained:
        if weights is not None:
            state = _state_dict(weights)
        else:
            state = download_guarded(
                f"torchvision:{name}",
                weights_source(name),
                lambda: default.get_state_dict(progress=False),  # type: ignore[union-attr]
            )
        problem = load_weights(model, state)
        if problem is not None:
            raise BackboneError(
                f"{weights} does not hold torchvision:{name} weights ({problem}); pass that "
                "model's state dict file."
            )
    last_name, last = None, None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name, last = module_name, module
    if last is None or last_name is None:
        raise BackboneError(f"torchvision:{name} has no linear classifier to take features before.")
    parent = model.get_submodule(last_name.rpartition(".")[0]) if "." in last_name else model
    setattr(parent, last_name.rpartition(".")[2], nn.Identity())
    if default is not None:
        transforms = default.transforms()  # type: ignore[attr-defined]
        mean, std = tuple(transforms.mean), tuple(transforms.std)
        interpolation = transforms.interpolation.value
    else:
        mean, std, interpolation = IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    preprocessing = Preprocessing(native_size(name), mean, std, str(interpolation))  # type: ignore[arg-type]
    return LoadedBackbone(model, int(last.in_features), preprocessing)
