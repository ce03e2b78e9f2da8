"""open_clip backbones: `open_clip.create_model_and_transforms(name, pretrained=PATH)`; the image
tower alone is kept (its projected embedding is the feature, as in UnivFD)."""

from __future__ import annotations

from pathlib import Path

from fakedet.models.backbones.base import (
    BackboneError,
    LoadedBackbone,
    Preprocessing,
    WeightsSource,
    download_guarded,
)


def exists(name: str) -> bool:
    import open_clip

    return name in open_clip.list_models()


def native_size(name: str) -> int:
    import open_clip

    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[-1])


def default_tag(name: str) -> str | None:
    """The first pretrained tag open_clip lists for `name`: what it downloads without --weights."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    return tags[0] if tags else None


def weights_source(name: str) -> WeightsSource | None:
    import open_clip

    tag = default_tag(name)
    if tag is None:
        return None
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        model_id, filename = cfg["hf_hub"].rstrip("/"), "open_clip_pytorch_model.bin"
        if not cfg["hf_hub"].endswith("/"):
            model_id, filename = cfg["hf_hub"].rsplit("/", 1)
        return WeightsSource(
            "huggingface.co", f"https://huggingface.co/{model_id}/resolve/main/{filename}"
        )
    if cfg.get("url"):
        from urllib.parse import urlparse

        return WeightsSource(urlparse(cfg["url"]).hostname or "", cfg["url"])
    return None


def load(name: str, weights: Path | None, img_size: int, pretrained: bool) -> LoadedBackbone:
    """The image tower of `name`, from `weights` (a file) or open_clip's default tag."""
    import open_clip

    source = None
    if pretrained:
        source = str(weights) if weights is not None else default_tag(name)
        if source is None:
            raise BackboneError(
                f"open_clip lists no pretrained weights for {name}; pass a weights file with "
                "--weights FILE."
            )
    force_size = img_size if img_size != native_size(name) else None

    def create() -> object:
        return open_clip.create_model_and_transforms(
            name, pretrained=source, force_image_size=force_size, pretrained_text=False
        )[0]

    if pretrained and weights is None:
        model = download_guarded(f"open_clip:{name}", weights_source(name), create)
    else:
        model = create()
    visual = model.visual  # type: ignore[attr-defined]
    config = visual.preprocess_cfg
    preprocessing = Preprocessing(
        input_size=native_size(name),
        mean=tuple(float(v) for v in config["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in config["std"]),  # type: ignore[arg-type]
        interpolation=str(config["interpolation"]),
    )
    dim = int(visual.output_dim)
    return LoadedBackbone(visual, dim, preprocessing)
