"""Pretrained backbones from timm, open_clip and torchvision as fakedet detectors: one adapter
per source (`timm_source`, `open_clip_source`, `torchvision_source`), each building the model
through its library's own loading path, from a local weights file when given."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch

from fakedet.errors import CheckpointError
from fakedet.models.backbones.base import BackboneError, LoadedBackbone, Preprocessing
from fakedet.models.backbones.detector import BackboneDetector, FeatureProbe
from fakedet.models.backbones.spec import BackboneChoice, parse_backbone, require_source

__all__ = [
    "BackboneChoice",
    "BackboneDetector",
    "BackboneError",
    "FeatureProbe",
    "LoadedBackbone",
    "Preprocessing",
    "build_backbone_detector",
    "check_backbone",
    "create_backbone",
    "native_img_size",
]


def _adapter(source: str) -> ModuleType:
    require_source(source)
    return importlib.import_module(f"fakedet.models.backbones.{source}_source")


def check_backbone(spec: str) -> tuple[str, str]:
    """Parse `SOURCE:NAME` and check that its library is installed and knows the name.

    Raises:
        ValueError: not SOURCE:NAME.
        UsageError: the library is missing (naming the extra) or has no such model.
    """
    source, name = parse_backbone(spec)
    if not _adapter(source).exists(name):
        raise BackboneError(
            f"{source} has no model named {name!r}; list the names with "
            f"{'timm.list_models()' if source == 'timm' else f'{source}.list_models()'}."
        )
    return source, name


def native_img_size(spec: str) -> int:
    """The input side the backbone was pretrained at, from its library's configuration."""
    source, name = parse_backbone(spec)
    return int(_adapter(source).native_size(name))


def create_backbone(
    source: str, name: str, weights: Path | None, img_size: int, pretrained: bool = True
) -> LoadedBackbone:
    """A feature extractor built by its library.

    Args:
        source: timm, open_clip or torchvision.
        name: the library's model name (timm names may carry a pretrained tag).
        weights: a local weights file, loaded through the library's own path; None with
            `pretrained`: the library's own download (offline: one sentence naming the file).
        img_size: the input side it will see.
        pretrained: False builds the architecture alone (its weights come from a checkpoint).

    Raises:
        BackboneError: unknown name, offline without weights, or weights of another model.
    """
    adapter = _adapter(source)
    try:
        return adapter.load(name, weights, img_size, pretrained)
    except BackboneError:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        where = f" from {weights}" if weights is not None and pretrained else ""
        raise BackboneError(
            f"{source}:{name} could not be built at {img_size} px{where} "
            f"({exc.__class__.__name__}: {first}); check --weights and --img-size."
        ) from None


def build_backbone_detector(
    choice: BackboneChoice,
    img_size: int,
    state: dict[str, torch.Tensor] | None = None,
    pretrained: bool = True,
) -> BackboneDetector:
    """The detector a run configured, with `state` (a checkpoint's weights) when given.

    A `state` that holds the backbone's weights (fine-tuned, or an export) needs only the
    architecture; one that holds the probe alone loads over the recorded weights file, whose
    sha256 is checked first. `pretrained=False` builds the architecture with random weights,
    reading and downloading nothing (memory measurements, shapes).

    Raises:
        BackboneError, CheckpointError: the backbone cannot be built, or `state` does not fit.
    """
    holds_backbone = state is not None and any(key.startswith("backbone.") for key in state)
    pretrained = pretrained and not holds_backbone
    weights = choice.checked_weights() if pretrained else None
    loaded = create_backbone(choice.source, choice.name, weights, img_size, pretrained)
    if choice.finetune and choice.lora_rank:
        from fakedet.models.backbones.lora import add_lora

        loaded.module = add_lora(loaded.module, choice.lora_rank)
    model = BackboneDetector(loaded, img_size, choice.with_spectral, frozen=not choice.finetune)
    if state is not None:
        result = model.load_state_dict(state, strict=False)
        missing = [
            key for key in result.missing_keys if holds_backbone or not key.startswith("backbone.")
        ]
        if missing or result.unexpected_keys:
            first = (missing or result.unexpected_keys)[0]
            raise CheckpointError(
                f"The checkpoint's weights do not fit {choice.spec} ({'missing' if missing else 'unexpected'} "
                f"key {first}); use the backbone, --lora-rank and --with-spectral it was trained with."
            )
    return model
