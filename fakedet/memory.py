"""Training memory: what a model keeps per image, measured with small CPU passes, and the largest
batch whose estimated CUDA peak fits a card. Pure arithmetic after the measurement, so the
advisor plans for another machine with the same call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from fakedet.models.backbones import BackboneDetector
    from fakedet.models.backbones.spec import BackboneChoice


@dataclass(frozen=True)
class MemoryProfile:
    """Training memory of a model at one image size: per image, and fixed per run."""

    # What autograd keeps for backward, per image; for a probe, the peak of the activations
    # alive while its frozen backbone extracts features without grad.
    activation_bytes_per_image: int
    parameter_count: int  # trained: weights, gradients and AdamW's two moments
    amp: bool = False  # measured under autocast
    transient_bytes_per_image: int = 0  # forward-only buffers alive at the peak (spectral FFTs)
    frozen_parameter_count: int = 0  # weights alone: a frozen backbone, LoRA's base weights

    def per_image_bytes(self) -> float:
        """What one image adds to the training peak on CUDA, allocator overhead included."""
        factor = ACTIVATION_OVERHEAD_AMP if self.amp else ACTIVATION_OVERHEAD
        return self.activation_bytes_per_image * factor + self.transient_bytes_per_image

    def fixed_bytes(self) -> int:
        # fp32 weights + gradients + AdamW's two moments; frozen weights alone.
        return self.parameter_count * 4 * 4 + self.frozen_parameter_count * 4


def measure_memory(mode: str, img_size: int, amp: bool) -> MemoryProfile:
    """`measure_model_memory` of the registered model `mode`."""
    from fakedet.models import create_model

    return measure_model_memory(lambda: create_model(mode, img_size=img_size), img_size, amp)


def measure_model_memory(build: Callable[[], nn.Module], img_size: int, amp: bool) -> MemoryProfile:
    """Activation memory per image of the model `build` returns, measured with CPU forward
    passes of 2 and 3 images.

    Every tensor autograd saves for backward goes through a saved-tensors hook; storages are
    counted once (many ops save the same tensor) and parameters are left to `fixed_bytes`. With
    `amp`, the forward runs under bf16 autocast, which stores half-precision activations the
    way CUDA fp16/bf16 autocast does.
    """
    import torch

    model = build().train()
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(batch: int) -> int:
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameter_storages:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        images = torch.rand(batch, 3, img_size, img_size)
        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
            torch.autocast("cpu", torch.bfloat16, enabled=amp),
        ):
            model(images)
        return sum(seen.values())

    # The difference of two batch sizes is the per-image part; what does not grow with the
    # batch (autocast's half-precision copies of the weights) cancels out.
    spectral = getattr(model, "coherence_branch", None) is not None
    return _profile(model, max(saved_bytes(3) - saved_bytes(2), 1), amp, spectral, img_size)


def measure_probe_memory(
    build: Callable[[], BackboneDetector], img_size: int, amp: bool
) -> MemoryProfile:
    """Memory per image of a linear probe on a frozen backbone (`build` returns the detector).

    The backbone runs once per image without grad, to fill the feature cache; the probe then
    trains on (B, D) features, far less than any backbone activation. So the per-image figure
    is the peak of the tensors alive during the extraction forward (`features`), measured on
    the CPU with 2 and 3 images as `measure_model_memory` does.
    """
    import torch

    model = build().eval()

    def peak_bytes(batch: int) -> int:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=amp):
            return peak_live_bytes(lambda: model.features(torch.rand(batch, 3, img_size, img_size)))

    # The spectral branch's FFTs run in `features` too, so the peak already holds them.
    return _profile(model, max(peak_bytes(3) - peak_bytes(2), 1), amp, False, img_size)


def measure_backbone_memory(choice: BackboneChoice, img_size: int, amp: bool) -> MemoryProfile:
    """The memory of the backbone detector `choice` names, measured on its architecture with
    random weights: memory does not depend on the weights' values, so no weights file is read
    and nothing is downloaded. A probe is `measure_probe_memory`'s (the frozen extraction); a
    fine-tune, full or LoRA, trains on images: `measure_model_memory`'s."""
    from fakedet.models.backbones import build_backbone_detector

    def build() -> BackboneDetector:
        return build_backbone_detector(choice, img_size, pretrained=False)

    if choice.finetune:
        return measure_model_memory(build, img_size, amp)
    return measure_probe_memory(build, img_size, amp)


def peak_live_bytes(run: Callable[[], object]) -> int:
    """The most bytes of tensor storage that `run` created and held at once.

    Every op's outputs are seen on their way out of the dispatcher (a TorchDispatchMode); a
    storage counts from its first tensor until the last tensor on it is freed, so views and
    in-place results add nothing. Scratch memory inside a kernel is not seen.
    """
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    holders: dict[int, int] = {}  # storage address -> live tensors on it
    sizes: dict[int, int] = {}
    live = peak = 0

    def release(address: int) -> None:
        nonlocal live
        holders[address] -= 1
        if not holders[address]:
            del holders[address]
            live -= sizes.pop(address)

    def track(tensor: torch.Tensor) -> None:
        nonlocal live, peak
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if not address:
            return
        if address not in holders:
            holders[address], sizes[address] = 0, storage.nbytes()
            live += sizes[address]
            peak = max(peak, live)
        holders[address] += 1
        weakref.finalize(tensor, release, address)

    class Track(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            outputs = func(*args, **(kwargs or {}))
            for leaf in tree_leaves(outputs):
                if isinstance(leaf, torch.Tensor):
                    track(leaf)
            return outputs

    with Track():
        run()
    return peak


def _profile(
    model: nn.Module, per_image: int, amp: bool, spectral: bool, img_size: int
) -> MemoryProfile:
    parameters = list(model.parameters())
    return MemoryProfile(
        activation_bytes_per_image=per_image,
        parameter_count=sum(p.numel() for p in parameters if p.requires_grad),
        amp=amp,
        transient_bytes_per_image=SPECTRAL_FORWARD_FLOATS * 4 * img_size**2 if spectral else 0,
        frozen_parameter_count=sum(p.numel() for p in parameters if not p.requires_grad),
    )


# Share of VRAM the advisor plans to use, and what it keeps for the CUDA context and workspaces;
# activations measured on the CPU are counted 1.25x in fp32 and 1.7x under autocast (backward's
# temporaries, CUDA autocast's casts, the caching allocator's rounding). Fitted on an H200,
# torch 2.11 + CUDA 13 (benchmarks/memory.py, 2026-11-30): the context took 0.77-0.79 GB, and
# with these factors every estimate was 1.08-1.17x what a training step used of the card
# (fast and full, fp32 and bf16, batch 32 and 128, 256 px). In bf16 the old single 1.25x
# fell 18% short, which the 15% margin would not have covered.
# The spectral-coherence branch runs its FFTs in fp32 on the input images, which need no grad,
# so autograd saves none of it, but its buffers (two complex spectra, their parts, the log
# power: about 9 floats per pixel) are alive at the end of the forward, when the saved
# activations peak. On the H200 the branch added 2.1-2.3 MB per image at 256 px to what a fast
# training step used of the card (batch 128; memory.py before and after it), which the factors
# above did not cover (one estimate fell to 0.98x).
SPECTRAL_FORWARD_FLOATS = 9


VRAM_USABLE = 0.85


VRAM_RESERVED_GB = 1.0


ACTIVATION_OVERHEAD = 1.25


ACTIVATION_OVERHEAD_AMP = 1.7


MAX_BATCH = 128  # the seed's largest (24 GB, fast); LR scaling beyond it is untested here


def batch_that_fits(vram_gb: float, profile: MemoryProfile) -> int:
    """The largest power-of-two batch (<= MAX_BATCH) whose estimated peak fits in `vram_gb`."""
    budget = vram_gb * VRAM_USABLE * 1024**3 - VRAM_RESERVED_GB * 1024**3 - profile.fixed_bytes()
    per_image = profile.per_image_bytes()
    fits = int(budget // per_image) if budget > 0 else 0
    batch = 1
    while batch * 2 <= min(fits, MAX_BATCH):
        batch *= 2
    return batch if fits >= 1 else 0


def estimated_peak_gb(batch: int, profile: MemoryProfile) -> float:
    per_image = profile.per_image_bytes()
    return (batch * per_image + profile.fixed_bytes()) / 1024**3 + VRAM_RESERVED_GB
