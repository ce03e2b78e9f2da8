"""What names a pretrained backbone: `SOURCE:NAME`, its weights file and how it trains; the
optional libraries each source needs, and the sha256 of a weights file. No torch here."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fakedet.errors import CheckpointError, UsageError


class BackboneSettings(Protocol):
    """The fields of a run's config that name its backbone (TrainingConfig has them; the models
    do not import the config)."""

    backbone: str | None
    weights: Path | None
    weights_sha256: str | None
    finetune: bool
    lora_rank: int
    with_spectral: bool


SOURCES = ("timm", "open_clip", "torchvision")
# The Python module each source imports; torchvision is a core dependency.
SOURCE_MODULES = {"timm": "timm", "open_clip": "open_clip", "torchvision": "torchvision"}
BACKBONES_EXTRA_HINT = 'pip install -e ".[backbones]"'


def parse_backbone(text: str) -> tuple[str, str]:
    """ "timm:convnext_tiny.fb_in22k" -> ("timm", "convnext_tiny.fb_in22k").

    Raises:
        ValueError: no `SOURCE:` prefix, an unknown source or an empty name.
    """
    source, colon, name = text.partition(":")
    if not colon or source not in SOURCES or not name.strip():
        raise ValueError(
            f"must be SOURCE:NAME with SOURCE one of {', '.join(SOURCES)} "
            "(e.g. timm:convnext_tiny.fb_in22k, open_clip:ViT-L-14, torchvision:resnet50)"
        )
    return source, name.strip()


def require_source(source: str) -> None:
    """Raises: UsageError: the library of `source` is not installed, naming the extra."""
    module = SOURCE_MODULES[source]
    if importlib.util.find_spec(module) is None:
        raise UsageError(
            f"--backbone {source}:... needs the {module} library of the optional backbones "
            f"extra: {BACKBONES_EXTRA_HINT}"
        )


def require_peft() -> None:
    """Raises: UsageError: peft (LoRA) is not installed, naming the extra."""
    if importlib.util.find_spec("peft") is None:
        raise UsageError(
            f"--lora-rank needs the peft library of the optional backbones extra: "
            f"{BACKBONES_EXTRA_HINT}"
        )


def file_sha256(path: Path) -> str:
    """The file's sha256 as 64 hex digits, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneChoice:
    """A backbone detector as a run configured it: what to build and from which weights."""

    source: str
    name: str
    weights: Path | None  # a local file; None: the library's own download
    weights_sha256: str | None  # recorded when training started
    finetune: bool  # False: a frozen backbone under a linear probe
    lora_rank: int  # > 0: fine-tune LoRA adapters instead of every weight
    with_spectral: bool  # the spectral-coherence branch beside the probe

    @property
    def spec(self) -> str:
        return f"{self.source}:{self.name}"

    def checked_weights(self) -> Path | None:
        """The weights file, after checking that it is the one the run recorded.

        Raises:
            CheckpointError: the file is missing or its sha256 differs from the recorded one.
        """
        if self.weights is None:
            return None
        if not self.weights.is_file():
            raise CheckpointError(
                f"The backbone weights file {self.weights} is missing; put the file the run "
                f"was trained with (sha256 {self.weights_sha256}) back at that path."
            )
        if self.weights_sha256 is not None:
            actual = file_sha256(self.weights)
            if actual != self.weights_sha256:
                raise CheckpointError(
                    f"The backbone weights file {self.weights} has changed (sha256 {actual}, the "
                    f"run recorded {self.weights_sha256}); restore the original file."
                )
        return self.weights


def backbone_choice(config: BackboneSettings) -> BackboneChoice | None:
    """The backbone a run's config names, or None for a built-in model."""
    if config.backbone is None:
        return None
    source, name = parse_backbone(config.backbone)
    return BackboneChoice(
        source=source,
        name=name,
        weights=config.weights,
        weights_sha256=config.weights_sha256,
        finetune=config.finetune,
        lora_rank=config.lora_rank,
        with_spectral=config.with_spectral,
    )
