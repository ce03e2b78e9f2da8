"""Where the time goes: torch.profiler over training steps of each model and over loader batches.

A training step here is the Trainer's: uint8 batch to float on the device, forward under
autocast when asked, the loss, backward, AdamW step. A loader batch is decoding and the train
transform of `--batch` demo images in this process (one worker's work). For each, the operators
are grouped (convolution, matrix products, FFT, element-wise, copies and casts, the rest) and the
top operators by self time are listed.

    python benchmarks/breakdown.py                               # CPU, fp32, fast and full
    python benchmarks/breakdown.py --device cuda --amp --batch 256
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from fakedet.config import TrainingConfig
from fakedet.data.images import load_rgb
from fakedet.data.transforms import TrainTransform, pixels_to_float
from fakedet.demo.dataset import build_demo_dataset
from fakedet.evaluation.validation import build_loss
from fakedet.models import create_model
from fakedet.sources.layouts import index_dataset
from fakedet.training.build import fused_optimizer

GROUPS = (
    ("convolution", ("conv", "mkldnn_convolution", "cudnn")),
    ("matrix products", ("mm", "matmul", "addmm", "bmm", "linear", "gemm", "einsum")),
    ("FFT", ("fft",)),
    ("copies and casts", ("copy", "to_copy", "contiguous", "clone", "cat", "stack")),
    ("reductions", ("sum", "mean", "std", "var", "norm", "avg_pool", "adaptive")),
    (
        "element-wise",
        (
            "add",
            "mul",
            "sub",
            "div",
            "relu",
            "clamp",
            "gelu",
            "sigmoid",
            "pow",
            "log",
            "sqrt",
            "exp",
            "abs",
            "where",
            "threshold",
            "hardswish",
            "square",
            "sign",
            "round",
            "fill",
            "native_batch_norm",
            "batch_norm",
            "layer_norm",
            "softmax",
            "dropout",
        ),
    ),
)


def group_of(name: str) -> str:
    short = name.split("::")[-1].lower()
    for group, keys in GROUPS:
        if any(key in short for key in keys):
            return group
    return "other"


def breakdown(prof: profile, device: torch.device, repeats: int, top: int) -> str:
    """Markdown: per-group and top-operator self time per repetition."""
    cuda = device.type == "cuda"
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]

    def self_time(event: object) -> float:
        value = event.self_device_time_total if cuda else event.self_cpu_time_total  # type: ignore[attr-defined]
        return value / 1000 / repeats

    total = sum(self_time(e) for e in events)
    groups: dict[str, float] = defaultdict(float)
    for event in events:
        groups[group_of(event.key)] += self_time(event)
    lines = [f"{'GPU' if cuda else 'CPU'} self time {total:.1f} ms per repetition", ""]
    lines += ["| group | ms | share |", "|---|---|---|"]
    for group, ms in sorted(groups.items(), key=lambda item: -item[1]):
        lines.append(f"| {group} | {ms:.1f} | {100 * ms / max(total, 1e-9):.0f}% |")
    lines += ["", "| operator | calls | ms | share |", "|---|---|---|---|"]
    for event in sorted(events, key=lambda e: -self_time(e))[:top]:
        ms = self_time(event)
        lines.append(
            f"| {event.key} | {event.count // repeats} | {ms:.2f} | "
            f"{100 * ms / max(total, 1e-9):.1f}% |"
        )
    return "\n".join(lines)


def profile_training(name: str, args: argparse.Namespace, device: torch.device) -> str:
    torch.manual_seed(0)
    model = create_model(name, img_size=args.size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused_optimizer(device))
    loss_function = build_loss(TrainingConfig(data_root=Path("unused")))
    pixels = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    labels = torch.randint(0, 2, (args.batch,), dtype=torch.float32)
    dtype = torch.bfloat16 if args.amp else torch.float32

    def step() -> None:
        images = pixels_to_float(pixels, device)
        with torch.autocast(device.type, dtype, enabled=args.amp):
            outputs = model(images)
        loss_function(outputs, labels.to(device)).objective.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocator, kernels
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.repeats):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    precision = "bf16 autocast" if args.amp else "fp32"
    title = f"### training step: {name}, batch {args.batch}, {args.size} px, {precision}, {device}"
    return f"{title}\n\n{breakdown(prof, device, args.repeats, args.top)}\n"


def profile_loader(args: argparse.Namespace, root: Path) -> str:
    config = TrainingConfig(data_root=root, img_size=args.size)
    samples = index_dataset(config).train[: args.loader_batch]
    transform = TrainTransform(args.size, True, config.blur_prob, config.jpeg_prob)

    def batch() -> None:
        # Pillow's work is no torch operator: the labelled ranges carry its time.
        images = []
        for index, sample in enumerate(samples):
            with record_function("decode (Pillow)"):
                image = load_rgb(sample.path)
            with record_function("crop, flip, blur, JPEG, to uint8"):
                images.append(transform(image, torch.Generator().manual_seed(index)))
        with record_function("collate"):
            torch.stack(images)

    batch()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeats):
            batch()
    title = f"### loader batch: {len(samples)} demo images at {args.size} px, one process"
    return f"{title}\n\n{breakdown(prof, torch.device('cpu'), args.repeats, args.top)}\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["fast", "full"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--loader-batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    parser.add_argument("--no-loader", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}\n")
    for name in args.models:
        print(profile_training(name, args, device), flush=True)
    if not args.no_loader:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch) / "demo"
            build_demo_dataset(root, num_images=max(64, 4 * args.loader_batch), img_size=args.size)
            print(profile_loader(args, root))


if __name__ == "__main__":
    main()
