"""The advisor's training-memory estimate against the peak a real CUDA training step reaches.

One model at a time is on the GPU (nothing else allocated), trained for three steps the way the
trainer does (autocast, the detector loss, clipping, AdamW). For each model, precision and batch
size the script prints the allocator's peak (`max_memory_allocated`), what the caching allocator
held (`max_memory_reserved`), the process's whole use of the card (`mem_get_info`, which also
counts the CUDA context), and the advisor's estimate (`fakedet recommend`'s est. peak) against
that whole use: above 1.0 the advisor plans with room to spare.

    python benchmarks/memory.py                                  # fast and full, batch 32 and 128
    python benchmarks/memory.py --img-size 384 --batches 16 64   # another size
"""

from __future__ import annotations

import argparse
import gc

import torch

from fakedet.memory import estimated_peak_gb, measure_memory
from fakedet.models import create_model
from fakedet.models.losses import detector_loss
from fakedet.training.build import fused_optimizer
from fakedet.training.weights import parameter_groups

MB = 1024**2


def train_steps(mode: str, img_size: int, batch: int, amp_dtype: torch.dtype | None) -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model(mode, img_size=img_size).to(device).train()
    optimizer = torch.optim.AdamW(
        parameter_groups(model, 0.01), lr=1e-4, fused=fused_optimizer(device)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    images = torch.rand(batch, 3, img_size, img_size, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    for _ in range(3):
        with torch.autocast("cuda", amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(images)
        loss = detector_loss(outputs["score"], outputs["logits"], labels, 1.0, 0.3, 0.2, 0.3).total
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--models", nargs="+", default=["fast", "full"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("This benchmark measures CUDA memory; no CUDA device is available.")
    major, _ = torch.cuda.get_device_capability()
    amp_dtype = torch.bfloat16 if major >= 8 else torch.float16
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {args.img_size} px\n")
    print(
        "| model | precision | batch | peak allocated MB | peak reserved MB | process on card MB "
        "| advisor estimate MB | estimate / process on card |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.models:
        for dtype in (None, amp_dtype):
            profile = measure_memory(mode, args.img_size, amp=dtype is not None)
            for batch in args.batches:
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                train_steps(mode, args.img_size, batch, dtype)
                allocated = torch.cuda.max_memory_allocated() / MB
                reserved = torch.cuda.max_memory_reserved() / MB
                free_after, total = torch.cuda.mem_get_info()
                on_card = (total - free_after) / MB
                estimate = estimated_peak_gb(batch, profile) * 1024
                name = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
                print(
                    f"| {mode} | {name} | {batch} | {allocated:.0f} | {reserved:.0f} | "
                    f"{on_card:.0f} | {estimate:.0f} | {estimate / on_card:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
