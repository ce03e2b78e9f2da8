"""fp32 against bf16 on one training step of each model, under each memory layout and cuDNN
setting, model only (the batch already on the device), all variants interleaved.

A variant is a precision (fp32 with TF32 matrix products, the fair fp32 on an Ampere or newer
GPU, or bf16 autocast), a memory layout (NCHW or channels-last, model and batch alike) and
cuDNN's autotuner (`torch.backends.cudnn.benchmark`) off or on. Each round runs every variant
for `--steps` steps (the trainer's loss, gradient clipping and fused AdamW) between two
synchronisations; a variant's figure is the median over rounds, and the ratios are medians of
per-round ratios.

    python benchmarks/precision.py --device cuda --batch 128 --img-size 256
    python benchmarks/precision.py                   # CPU: a small run that checks the script
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from pathlib import Path

import torch

from fakedet.config import TrainingConfig
from fakedet.evaluation.validation import build_loss
from fakedet.models import create_model
from fakedet.training.build import fused_optimizer
from fakedet.training.weights import parameter_groups

# The trainer's loss at the default weights, auxiliary branch terms included.
LOSS = build_loss(TrainingConfig(data_root=Path(".")))


class Variant:
    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        bf16: bool,
        channels_last: bool,
        autotune: bool,
    ) -> None:
        self.name = (
            f"{'bf16' if bf16 else 'fp32'} {'channels-last' if channels_last else 'NCHW'}"
            f"{' autotuned' if autotune else ''}"
        )
        self.bf16, self.autotune = bf16, autotune
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = copy.deepcopy(model).to(device, memory_format=self.format).train()
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, 0.01), lr=1e-4, fused=fused_optimizer(device)
        )
        self.device = device
        self.rates: list[float] = []

    def run(self, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
        torch.backends.cudnn.benchmark = self.autotune
        images = images.contiguous(memory_format=self.format)
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                outputs = self.model(images)
            LOSS(outputs, labels).objective.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        self.rates.append(steps * len(labels) / (time.perf_counter() - started))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["fast", "full"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32's fair best on a GPU (cuDNN's is on)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, {name}, batch {args.batch}, {args.img_size} px, "
        f"{args.steps} steps x {args.rounds} rounds per variant"
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.img_size, args.img_size, generator=generator)
    labels = (torch.arange(args.batch) % 2).float()
    images, labels = images.to(device), labels.to(device)
    autotunes = (False, True) if device.type == "cuda" else (False,)
    for model_name in args.models:
        model = create_model(model_name, img_size=args.img_size)
        variants = [
            Variant(model, device, bf16, layout, autotune)
            for bf16, layout, autotune in itertools.product((False, True), (False, True), autotunes)
        ]
        for variant in variants:  # warm-up: kernels load, the autotuner picks
            variant.run(images, labels, 2)
            variant.rates.clear()
        for _ in range(args.rounds):
            for variant in variants:
                variant.run(images, labels, args.steps)
        base = variants[0]
        print(f"\n### {model_name}: train img/s (median of {args.rounds} rounds)\n")
        print(f"| variant | img/s | / {base.name} |")
        print("|---|---|---|")
        for variant in variants:
            ratio = statistics.median(
                mine / theirs for mine, theirs in zip(variant.rates, base.rates, strict=True)
            )
            print(f"| {variant.name} | {statistics.median(variant.rates):.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
