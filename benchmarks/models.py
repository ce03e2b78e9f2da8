"""Speed and memory of the fakedet detectors against torchvision peers, from one interleaved run.

Shared machines are noisy (the same model measured 28, 45 and 60 img/s in three runs), so the
models are measured in turn (A, B, C, ... A, B, C, ...) after a warm-up, and the report gives
medians and the median of the per-repetition ratios.

    python benchmarks/models.py                      # CPU, fp32, batch 16, 256 px
    python benchmarks/models.py --amp                # + bf16 autocast (CPU) / fp16 or bf16 (CUDA)
    python benchmarks/models.py --device cuda --amp  # GPU: also peak training memory per model

Fair by construction: every model, fakedet's and the peers', gets the same treatment in the same
run. Each is timed for inference as `fakedet predict` runs a detector (`fuse_for_inference`:
BatchNorm folded into the convolutions, channels-last weights; torchvision's Conv-BN-activation
blocks fold the same way), and with `--channels-last` / `--compile` / `--amp` every model trains
and infers channels-last / torch.compile'd / under autocast. Ratios compare like with like (our
fused inference with the peer's fused inference). fakedet models are also timed, on CPU with
onnxruntime installed, as their ONNX export.

    python benchmarks/models.py --models fast mobilenet_v3_small full mobilenet_v3_large --compile
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchvision import models as tv_models

from fakedet.hardware import cpu_has_native_bf16
from fakedet.models import create_model
from fakedet.models.layers import fuse_for_inference

PEERS = ("mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet50")
TARGETS = (("fast", "mobilenet_v3_small"), ("full", "mobilenet_v3_large"))


def build(name: str) -> torch.nn.Module:
    if name in ("fast", "full"):
        return create_model(name, img_size=256)
    return getattr(tv_models, name)(weights=None, num_classes=2)


HAS_ONNXRUNTIME = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


def onnx_session(model: torch.nn.Module, size: int) -> object:
    """The model exported as `fakedet export` does (dynamo, opset 20), in an onnxruntime session."""
    import onnxruntime

    from fakedet.export.writer import CalibratedDetector, write_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        write_onnx(CalibratedDetector(model, None).eval(), size, path, "{}")
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def scalar_output(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    outputs = model(images)
    if isinstance(outputs, dict):
        return outputs["score"].float().mean() + outputs["logits"].float().logsumexp(1).mean()
    return outputs.float().logsumexp(1).mean()


class Runner:
    """One model with its optimizer, timing train steps and inference batches."""

    def __init__(
        self,
        name: str,
        device: torch.device,
        batch: int,
        size: int,
        amp_dtype: torch.dtype | None,
        channels_last: bool = False,
        compiled: bool = False,
        onnx: bool = True,
    ):
        torch.manual_seed(0)
        self.name = name
        self.device = device
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build(name).to(device, memory_format=memory_format)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.images = torch.rand(batch, 3, size, size, device=device).contiguous(
            memory_format=memory_format
        )
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.steps = {
            "train": self.train_step,
            "infer": self.infer,
            "infer_fused": self.infer_fused,
        }
        # Fused once: speed does not depend on the weights' values, which training changes.
        self.fused = fuse_for_inference(self.model)
        self.trained = self.model
        if compiled:
            self.trained = torch.compile(self.model)
            self.fused = torch.compile(self.fused)
        ours = name in ("fast", "full")
        if ours and device.type == "cpu" and amp_dtype is None and HAS_ONNXRUNTIME and onnx:
            self.session = onnx_session(self.model, size)
            self.steps["infer_ort"] = self.infer_ort

    @torch.no_grad()
    def infer_fused(self) -> None:
        with torch.autocast(
            self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            scalar_output(self.fused, self.images)

    def infer_ort(self) -> None:
        self.session.run(None, {"images": self.images.cpu().numpy()})

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self) -> None:
        self.model.train()
        with torch.autocast(
            self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            loss = scalar_output(self.trained, self.images)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer(self) -> None:
        self.model.eval()
        with torch.autocast(
            self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            scalar_output(self.model, self.images)

    def rate(self, step: str, repeats: int) -> float:
        function = self.steps[step]
        self._sync()
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        self._sync()
        return repeats * self.images.shape[0] / (time.perf_counter() - started)


def cuda_training_peak_mb(runner: Runner) -> float:
    """This model's training peak: its step's growth over what was allocated before, plus its
    own weights, buffers and AdamW state (the other models stay on the card and are left out)."""
    torch.cuda.empty_cache()
    torch.cuda.synchronize(runner.device)
    before = torch.cuda.memory_allocated(runner.device)
    torch.cuda.reset_peak_memory_stats(runner.device)
    runner.train_step()
    runner.train_step()
    torch.cuda.synchronize(runner.device)
    tensors = [*runner.model.parameters(), *runner.model.buffers()]
    tensors += [
        value
        for state in runner.optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]
    own = sum(t.numel() * t.element_size() for t in tensors)
    return (torch.cuda.max_memory_allocated(runner.device) - before + own) / 1024**2


def measure(args: argparse.Namespace, amp: bool) -> dict[str, dict[str, list[float] | float]]:
    device = torch.device(args.device)
    if amp:
        if device.type == "cuda":
            major, _ = torch.cuda.get_device_capability(device)
            amp_dtype = torch.bfloat16 if major >= 8 else torch.float16
        else:
            amp_dtype = torch.bfloat16
    else:
        amp_dtype = None
    names = args.models
    runners = [
        Runner(
            name,
            device,
            args.batch,
            args.size,
            amp_dtype,
            args.channels_last,
            args.compile,
            not args.no_onnx,
        )
        for name in names
    ]
    for runner in runners:  # warm-up: allocator, kernels, caches
        for function in runner.steps.values():
            function()
    results: dict[str, dict[str, list[float] | float]] = {
        runner.name: {step: [] for step in runner.steps} for runner in runners
    }
    for repetition in range(args.repeats):
        for runner in runners:
            for step in runner.steps:
                results[runner.name][step].append(runner.rate(step, args.steps))
        print(f"  repetition {repetition + 1}/{args.repeats} done", flush=True)
    for runner in runners:
        if device.type == "cuda":
            results[runner.name]["peak_mb"] = cuda_training_peak_mb(runner)
    return results


def advisor_estimate_mb(name: str, batch: int, size: int, amp: bool) -> str:
    """What `fakedet recommend` predicts for this training peak (fakedet models only)."""
    if name not in ("fast", "full"):
        return "-"
    from fakedet.memory import VRAM_RESERVED_GB, estimated_peak_gb, measure_memory

    # The benchmark's peak is measured after the CUDA context exists, so leave the reserve out.
    estimate = estimated_peak_gb(batch, measure_memory(name, size, amp)) - VRAM_RESERVED_GB
    return f"{estimate * 1024:.0f}"


def report(
    results: dict[str, dict[str, list[float] | float]],
    label: str,
    args: argparse.Namespace,
    amp: bool,
) -> None:
    print(f"\n### {label}\n")
    print(
        "| model | params | train img/s | infer img/s | infer fused img/s | infer ORT img/s "
        "| train peak MB (CUDA) | advisor estimate MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, values in results.items():
        params = sum(p.numel() for p in build(name).parameters()) / 1e6
        peak = values.get("peak_mb")
        peak_text = f"{peak:.0f}" if isinstance(peak, float) else "-"
        estimate = (
            advisor_estimate_mb(name, args.batch, args.size, amp) if peak_text != "-" else "-"
        )
        extra = [
            f"{statistics.median(values[step]):.1f}" if step in values else "-"
            for step in ("infer_fused", "infer_ort")
        ]
        print(
            f"| {name} | {params:.2f}M | {statistics.median(values['train']):.1f} | "
            f"{statistics.median(values['infer']):.1f} | {' | '.join(extra)} | {peak_text} | "
            f"{estimate} |"
        )
    print()
    for ours, peer in TARGETS:
        if ours not in results or peer not in results:
            continue
        for step in ("train", "infer", "infer_fused", "infer_ort"):
            if step not in results[ours]:
                continue
            # Like with like; ONNX Runtime against the peer's fused PyTorch inference.
            peer_step = "infer_fused" if step == "infer_ort" else step
            pairs = zip(results[ours][step], results[peer][peer_step], strict=True)
            ratios = [a / b for a, b in pairs]
            print(
                f"{ours} / {peer} {step}: median ratio {statistics.median(ratios):.2f}x (per repetition: "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + ")"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per repetition")
    parser.add_argument("--amp", action="store_true", help="also measure with autocast")
    parser.add_argument(
        "--channels-last", action="store_true", help="every model and batch channels-last"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime timing")
    parser.add_argument(
        "--models", nargs="+", default=["fast", "full", *PEERS], help="models to measure"
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, {args.size} px, "
        f"native CPU bf16: {cpu_has_native_bf16()}, channels-last: {args.channels_last}, "
        f"compile: {args.compile}"
    )
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(torch.device(args.device))}")
    full_precision = measure(args, amp=False)
    report(full_precision, "fp32", args, amp=False)
    if args.amp:
        autocast = measure(args, amp=True)
        report(autocast, "autocast (bf16 on CPU and on CUDA >= 8.0, else fp16)", args, amp=True)
        print("\nautocast / fp32 (ratio of medians, two runs one after the other):")
        for name in args.models:
            ratios = ", ".join(
                f"{step} {statistics.median(autocast[name][step]) / statistics.median(full_precision[name][step]):.2f}x"
                for step in ("train", "infer_fused")
            )
            print(f"  {name}: {ratios}")


if __name__ == "__main__":
    main()
