"""A registered model with given weights, on a device: what every user of a checkpoint builds."""

from __future__ import annotations

import torch
from torch import nn

from fakedet.errors import CheckpointError
from fakedet.models.backbones.spec import BackboneChoice
from fakedet.models.registry import create_model

# Models that gained the spectral-coherence branch after fakedet 0.1.0 (models/coherence.py).
LEGACY_WITHOUT_COHERENCE = ("fast", "full")


def build_model(
    name: str,
    img_size: int,
    device: torch.device,
    weights: dict[str, torch.Tensor] | None = None,
    backbone: BackboneChoice | None = None,
) -> nn.Module:
    """A registered model, or with `backbone` a pretrained backbone's detector (`name` then
    unused), with `weights` when given, placed on `device`.

    Weights of fast / full without a spectral-coherence branch were written before it existed
    (fakedet 0.1.0 and the commits after it until the branch came): they load into the model as
    it was then, so older checkpoints and exports keep working unchanged.

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
    model = create_model(name, img_size=img_size, **({"coherence": False} if legacy else {}))
    if weights is not None:
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise CheckpointError(
                f"The checkpoint's weights do not fit this fakedet's {name} model ({first}); "
                "use the fakedet version that trained it."
            ) from None
    return model.to(device)
