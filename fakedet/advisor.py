"""Hardware advisor: what this machine has, and the batch size, AMP, workers and LR to use there.

`detect_hardware()` reads the machine; `recommend(info, mode)` is a pure function of what it read,
so a plan for another machine is the same call with other numbers.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

# Seed rules (GPU VRAM in GB -> batch size per mode); the advisor never recommends less.
VRAM_TABLE: tuple[tuple[float, int, int], ...] = (
    (24.0, 128, 64),
    (12.0, 64, 32),
    (8.0, 32, 16),
    (6.0, 16, 8),
)
CPU_BATCH = {"fast": 16, "full": 8}
TARGET_EFFECTIVE_BATCH = 32


@dataclass(frozen=True)
class HardwareInfo:
    """What the advisor needs to know about a machine."""

    device: str  # "cuda", "mps" or "cpu"
    device_name: str
    vram_gb: float | None
    compute_capability: tuple[int, int] | None
    os: str  # platform.system(): Linux, Windows, Darwin
    cpu_cores: int
    cpu_bf16: bool
    torch_version: str
    cuda_version: str | None


@dataclass(frozen=True)
class Recommendation:
    """Settings for one mode on one machine, with the reason for the batch size."""

    mode: str
    batch_size: int
    gradient_accumulation_steps: int
    use_amp: bool
    amp_dtype: str
    num_workers: int
    lr: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def smaller_batch(batch_size: int, accumulation: int) -> tuple[int, int] | None:
    """After running out of memory: half the batch and twice the accumulation, which keeps the
    effective batch (so the LR still fits); None when the batch is already 1."""
    if batch_size <= 1:
        return None
    return batch_size // 2, accumulation * 2


def detect_hardware() -> HardwareInfo:
    """Read the device, VRAM, compute capability, OS, cores and versions of this machine."""
    import torch

    from fakedet.engine.runtime import cpu_has_native_bf16

    system = platform.system()
    cores = os.cpu_count() or 1
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        return HardwareInfo(
            device="cuda",
            device_name=properties.name,
            vram_gb=round(properties.total_memory / 1024**3, 1),
            compute_capability=(properties.major, properties.minor),
            os=system,
            cpu_cores=cores,
            cpu_bf16=cpu_has_native_bf16(),
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
        )
    device = "mps" if torch.backends.mps.is_available() else "cpu"
    return HardwareInfo(
        device=device,
        device_name=platform.processor() or platform.machine(),
        vram_gb=None,
        compute_capability=None,
        os=system,
        cpu_cores=cores,
        cpu_bf16=cpu_has_native_bf16(),
        torch_version=torch.__version__,
        cuda_version=None,
    )


def recommend(info: HardwareInfo, mode: str) -> Recommendation:
    """Batch size, accumulation, AMP, workers and LR for `mode` ("fast" or "full") on `info`."""
    column = 1 if mode == "fast" else 2
    if info.device == "cuda" and info.vram_gb is not None:
        batch, reason = CPU_BATCH[mode] // 2, f"{info.vram_gb:g} GB VRAM is below the 6 GB row"
        for vram, *batches in VRAM_TABLE:
            if info.vram_gb >= vram:
                batch, reason = (
                    batches[column - 1],
                    f"{info.vram_gb:g} GB VRAM (>= {vram:g} GB row)",
                )
                break
        major = info.compute_capability[0] if info.compute_capability else 0
        use_amp = major >= 7
        amp_dtype = "bf16" if major >= 8 else "fp16"
    else:
        batch, reason = CPU_BATCH[mode], f"no GPU ({info.device})"
        use_amp = info.device == "cpu" and info.cpu_bf16
        amp_dtype = "bf16"
    accumulation = max(1, TARGET_EFFECTIVE_BATCH // batch)
    workers = 0 if info.os == "Windows" else min(4, info.cpu_cores)
    # The seed's ranges: 1.25e-5..1e-4 with AMP, 1e-4..3e-4 without, scaled with the batch.
    base_lr = 1e-4 if use_amp else 2e-4
    lr = base_lr * (batch * accumulation) / TARGET_EFFECTIVE_BATCH
    return Recommendation(
        mode=mode,
        batch_size=batch,
        gradient_accumulation_steps=accumulation,
        use_amp=use_amp,
        amp_dtype=amp_dtype if use_amp else "auto",
        num_workers=workers,
        lr=lr,
        reason=reason,
    )
