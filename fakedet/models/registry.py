"""Models built by name: each variant registers a small builder function."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make `builder` available to `create_model` under its function name."""
    _REGISTRY[builder.__name__] = builder
    return builder


def check_img_size(img_size: int) -> None:
    """Every model downsamples by 32, so an input side must be a multiple of 32 and >= 64.

    Raises:
        ValueError: naming the nearest valid size.
    """
    if img_size < 64 or img_size % 32:
        nearest = max(64, img_size // 32 * 32)
        raise ValueError(f"must be a multiple of 32 and at least 64 (e.g. {nearest})")


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, img_size: int = 256, **kwargs: object) -> nn.Module:
    """Build a detector by name.

    Args:
        name: a registered model name (see `list_models()`), e.g. "fast" or "full".
        img_size: the square input size it will mostly see (multiple of 32, >= 64).
        **kwargs: passed to the builder.

    Returns:
        The model on the CPU, in training mode; its forward takes (B, 3, H, W) images in [0, 1]
        and returns {"score": (B,), "logits": (B, 2)}.

    Raises:
        ValueError: unknown name (the message lists the known ones) or bad img_size.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    check_img_size(img_size)
    return _REGISTRY[name](img_size=img_size, **kwargs)
