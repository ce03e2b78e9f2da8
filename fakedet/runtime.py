"""Device and precision choices: which device `auto` means, what `--use_amp` can do there, and
how many CPU threads a loop of tiny ops should use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fakedet import hardware
from fakedet.config import DEVICE_PATTERN
from fakedet.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    """auto -> cuda, else mps, else cpu; an explicit device must exist here.

    Raises:
        ConfigError: the requested device is not available on this machine.
    """
    if not DEVICE_PATTERN.match(requested):
        raise ConfigError(
            f"device = '{requested}' is invalid: must be auto, cpu, cuda, cuda:N or mps."
        )
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device = '{requested}' but CUDA is not available here; use --device cpu or auto."
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"device = '{requested}' but this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device = '{requested}' but MPS is not available here; use --device cpu or auto."
        )
    return device


@dataclass(frozen=True)
class Precision:
    """What autocast does in this run."""

    enabled: bool
    dtype: torch.dtype
    use_scaler: bool
    description: str


FP32 = Precision(False, torch.float32, False, "fp32")


def resolve_precision(
    device: torch.device, use_amp: bool, amp_dtype: str
) -> tuple[Precision, str | None]:
    """Pick autocast dtype and GradScaler use for `device`, plus a warning when AMP cannot run.

    CUDA: bf16 without a scaler on compute capability >= 8.0 (or when asked), else fp16 with the
    conservative GradScaler; no AMP below 7.0. CPU: bf16 only where it is native.
    """
    fp32 = FP32
    if not use_amp:
        return fp32, None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        dtype = hardware.cuda_amp_dtype((major, minor), amp_dtype)
        if dtype is None:
            needed = ".".join(map(str, hardware.AMP_MIN_CAPABILITY))
            return (
                fp32,
                f"AMP needs compute capability >= {needed} (this GPU has {major}.{minor}); "
                "training in fp32.",
            )
        if dtype == "bf16" and torch.cuda.is_bf16_supported():
            return Precision(True, torch.bfloat16, False, "bf16 autocast (CUDA)"), None
        return Precision(True, torch.float16, True, "fp16 autocast + GradScaler (CUDA)"), None
    if device.type == "cpu":
        if amp_dtype == "fp16":
            return fp32, "fp16 AMP is not available on the CPU; training in fp32."
        if hardware.cpu_has_native_bf16():
            return Precision(True, torch.bfloat16, False, "bf16 autocast (CPU, native bf16)"), None
        return (
            fp32,
            "This CPU has no native bf16 (AVX512-BF16/AMX), so AMP would be slower; training in fp32.",
        )
    return fp32, f"AMP is not supported on {device.type}; training in fp32."


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the plain RuntimeError that MPS and the CPU allocator raise."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def trains_head_only(backbone: str | None, finetune: bool, device: torch.device) -> bool:
    """A probe on the CPU: after the extraction, every step trains one linear layer on cached
    features. Its ops take microseconds, so a second intra-op thread adds a barrier per op and
    nothing else, and on a busy machine that barrier waits for a descheduled thread: beside one
    busy process on 2 cores, a demo epoch from the cache took 0.18 s with 2 threads and 0.04 s
    with 1 (benchmarks/backbones.py --busy 1)."""
    return backbone is not None and not finetune and device.type == "cpu"


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside (None: left as it is), then restored."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
