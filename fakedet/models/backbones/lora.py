"""LoRA adapters on a backbone with the peft library: the pretrained weights freeze, low-rank
updates of every linear and (ungrouped) convolution layer train."""

from __future__ import annotations

from torch import nn

from fakedet.models.backbones.spec import require_peft


def lora_targets(backbone: nn.Module) -> list[str]:
    """Full names of the layers that get adapters. Left out: grouped (depthwise) convolutions,
    and the output projection inside nn.MultiheadAttention, whose forward reads the weight
    directly, so an adapter there would be silently skipped."""
    inside_attention = {
        f"{name}.out_proj"
        for name, module in backbone.named_modules()
        if isinstance(module, nn.MultiheadAttention)
    }
    return [
        name
        for name, module in backbone.named_modules()
        if name not in inside_attention
        and (
            isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
        )
    ]


def add_lora(backbone: nn.Module, rank: int) -> nn.Module:
    """`backbone` with rank-`rank` adapters injected in place; only the adapters train.

    Raises:
        UsageError: peft is not installed (the sentence names the extra).
    """
    require_peft()
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=lora_targets(backbone)
    )
    return inject_adapter_in_model(config, backbone)
