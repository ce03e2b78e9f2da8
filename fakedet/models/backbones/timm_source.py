"""timm backbones: `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(
file=PATH), num_classes=0)`, pooled features, preprocessing from `resolve_data_config`."""

from __future__ import annotations

from pathlib import Path

from fakedet.models.backbones.base import (
    LoadedBackbone,
    Preprocessing,
    WeightsSource,
    download_guarded,
)


def exists(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def native_size(name: str) -> int:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def weights_source(name: str) -> WeightsSource | None:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filename}"
        return WeightsSource("huggingface.co", url)
    if cfg.url:
        from urllib.parse import urlparse

        return WeightsSource(urlparse(cfg.url).hostname or "", cfg.url)
    return None


def load(name: str, weights: Path | None, img_size: int, pretrained: bool) -> LoadedBackbone:
    """The model without its classifier (`num_classes=0` pools), from `weights` when given."""
    import timm

    kwargs: dict[str, object] = {"num_classes": 0, "pretrained": pretrained}
    if pretrained and weights is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}

    def create() -> object:
        # ViTs take the size (their position embeddings are resampled on load); CNNs refuse the
        # argument and take any size as they are.
        try:
            return timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError:
            return timm.create_model(name, **kwargs)

    if pretrained and weights is None:
        model = download_guarded(f"timm:{name}", weights_source(name), create)
    else:
        model = create()
    config = timm.data.resolve_data_config(model=model)
    preprocessing = Preprocessing(
        input_size=native_size(name),
        mean=tuple(float(v) for v in config["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in config["std"]),  # type: ignore[arg-type]
        interpolation=str(config["interpolation"]),
    )
    return LoadedBackbone(model, int(model.num_features), preprocessing)  # type: ignore[attr-defined]
