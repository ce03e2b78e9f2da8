"""Mixed precision against fp32: speed and loss curves of the fast and full models, one run.

Both precisions start from the same weights and see the same batches (demo images decoded once
and cached), with the trainer's loss, fused AdamW and gradient clipping. Steps alternate between the
precisions (fp32 step, AMP step, fp32 step, ...) so machine noise hits both alike; the speed-up
is the median of per-step time ratios.

AMP here means what `--use-amp` would pick on this device: CUDA fp16 + GradScaler below compute
capability 8.0, bf16 above; on a CPU, bf16 autocast (which `fakedet train` only uses where the
CPU has native bf16; this script runs it anyway, to show why).

    python benchmarks/amp.py                            # CPU, 128 px, 40 steps per model
    python benchmarks/amp.py --device cuda --img-size 256 --steps 200 --plot amp.png
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fakedet.config import TrainingConfig
from fakedet.data.loader import make_loader
from fakedet.data.transforms import TrainTransform, pixels_to_float
from fakedet.demo.dataset import build_demo_dataset
from fakedet.evaluation.validation import build_loss
from fakedet.hardware import cpu_has_native_bf16
from fakedet.models import create_model
from fakedet.sources.layouts import build_index
from fakedet.training.build import fused_optimizer
from fakedet.training.weights import parameter_groups

# The trainer's loss at the default weights, auxiliary branch terms included.
LOSS = build_loss(TrainingConfig(data_root=Path(".")))


def amp_dtype_for(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.bfloat16


class Run:
    """One model copy training in one precision."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
        self.model = model.to(device).train()
        self.device = device
        self.dtype = dtype
        self.optimizer = torch.optim.AdamW(  # the trainer's optimizer: fused where it can be
            parameter_groups(self.model, 0.01), lr=1e-3, fused=fused_optimizer(device)
        )
        self.scaler = torch.amp.GradScaler(
            device.type,
            init_scale=128.0,
            growth_factor=1.5,
            backoff_factor=0.75,
            growth_interval=100,
            enabled=dtype == torch.float16,
        )
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        with torch.autocast(
            self.device.type, self.dtype or torch.float32, enabled=bool(self.dtype)
        ):
            outputs = self.model(images)
        terms = LOSS(outputs, labels)
        self.scaler.scale(terms.objective).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = terms.total.item()  # synchronises, so the time covers the whole step
        self.seconds.append(time.perf_counter() - started)
        self.losses.append(loss_value)


def cached_batches(
    root: Path, img_size: int, batch_size: int, count: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    index = build_index(root, False, 0.1, 0)
    loader = make_loader(
        index.train,
        TrainTransform(img_size, True, 0.1, 0.1),
        batch_size,
        train=True,
        seed=0,
        num_workers=0,
        pin_memory=False,
        persistent_workers=False,
        prefetch_factor=2,
        drop_last=True,
    )
    batches = []
    epoch = 0
    while len(batches) < count:
        epoch += 1
        loader.batch_sampler.sampler.set_epoch(epoch)
        for batch in loader:
            images = pixels_to_float(batch["images"], device)
            batches.append((images, batch["labels"].to(device)))
    return batches[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["fast", "full"])
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--plot", type=Path, help="write the loss curves to this PNG")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = amp_dtype_for(device)
    native = cpu_has_native_bf16() if device.type == "cpu" else None
    print(
        f"device {device}, AMP dtype {str(dtype).removeprefix('torch.')}"
        + (f", CPU native bf16: {native}" if native is not None else "")
        + f", torch {torch.__version__}, {args.img_size} px, batch {args.batch_size}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "demo"
        build_demo_dataset(root, num_images=160, img_size=args.img_size)
        batches = cached_batches(root, args.img_size, args.batch_size, args.steps, device)

    curves: dict[str, tuple[Run, Run]] = {}
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, img_size=args.img_size)
        fp32, amp = Run(copy.deepcopy(model), device, None), Run(model, device, dtype)
        for images, labels in batches:
            fp32.step(images, labels)
            amp.step(images, labels)
        curves[name] = (fp32, amp)
        ratios = [a / b for a, b in zip(fp32.seconds[1:], amp.seconds[1:], strict=True)]
        gap = [abs(a - b) for a, b in zip(fp32.losses, amp.losses, strict=True)]
        tail = max(1, args.steps // 4)
        print(f"\n### {name}")
        print(
            f"fp32 {statistics.median(fp32.seconds[1:]) * 1000:.0f} ms/step, AMP "
            f"{statistics.median(amp.seconds[1:]) * 1000:.0f} ms/step: AMP speed-up "
            f"{statistics.median(ratios):.2f}x (median of per-step ratios, first step left out)"
        )
        print(
            f"loss, mean of the last {tail} steps: fp32 {statistics.fmean(fp32.losses[-tail:]):.4f}"
            f", AMP {statistics.fmean(amp.losses[-tail:]):.4f}; largest per-step gap "
            f"{max(gap):.4f}, mean gap {statistics.fmean(gap):.4f}"
        )
        print("| step | fp32 loss | AMP loss |\n|---|---|---|")
        for step in range(0, args.steps, max(1, args.steps // 10)):
            print(f"| {step + 1} | {fp32.losses[step]:.4f} | {amp.losses[step]:.4f} |")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
        for axis, (name, (fp32, amp)) in zip(axes[0], curves.items(), strict=True):
            axis.plot(fp32.losses, label="fp32")
            axis.plot(amp.losses, label=f"AMP ({str(dtype).removeprefix('torch.')})")
            axis.set(title=f"{name} on {device}", xlabel="step", ylabel="training loss")
            axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=100)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
