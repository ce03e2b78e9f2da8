"""The optimizer step alone: AdamW's foreach kernels (fakedet 0.5.0 and before) against the fused
kernel the trainer now uses, on the fast and full models' parameters. Interleaved rounds; the
ratio is the median of per-round ratios.

    python benchmarks/optimizer.py                   # CPU
    python benchmarks/optimizer.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fakedet.models import create_model
from fakedet.training.weights import parameter_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    for name in ("fast", "full"):
        model = create_model(name, img_size=128).to(device)
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter) * 1e-3
        kernels = {
            "foreach": torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-3, foreach=True),
            "fused": torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-3, fused=True),
        }
        seconds: dict[str, list[float]] = {kernel: [] for kernel in kernels}
        for round_index in range(args.rounds + 5):  # 5 warm-up rounds
            for kernel, optimizer in kernels.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if round_index >= 5:
                    seconds[kernel].append(time.perf_counter() - started)
        ratios = [a / b for a, b in zip(seconds["foreach"], seconds["fused"], strict=True)]
        count = sum(parameter.numel() for parameter in model.parameters())
        print(
            f"{name} ({count / 1e6:.2f}M parameters): foreach "
            f"{statistics.median(seconds['foreach']) * 1e3:.2f} ms, fused "
            f"{statistics.median(seconds['fused']) * 1e3:.2f} ms; foreach / fused "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
