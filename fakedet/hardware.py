"""Hardware rules that several parts apply: AMP by compute capability, CPU bf16, loader workers.

Torch-free on purpose: the config, the advisor and the engine read the same rules from here.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CUDA autocast below Volta (7.0) has no tensor cores to gain from; bf16 needs Ampere (8.0).
AMP_MIN_CAPABILITY = (7, 0)
BF16_MIN_CAPABILITY = (8, 0)
# Loader workers on Linux/macOS: up to this many (more rarely helps a small model).
MAX_DEFAULT_WORKERS = 4
# When the model trains on the CPU, workers at this niceness fill idle gaps instead of
# pre-empting an intra-op thread and stalling its barrier (benchmarks/data.py: 1.19x -> 1.04x).
CPU_TRAINING_WORKER_NICE = 19


def default_num_workers(os_name: str | None = None, cpu_cores: int | None = None) -> int:
    """0 on Windows (spawned workers cost more than they give), else min(4, CPU cores).

    Without arguments, for this machine; with them, for the machine being planned for.
    """
    system = os_name if os_name is not None else platform.system()
    if system == "Windows":
        return 0
    cores = cpu_cores if cpu_cores is not None else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_WORKERS, cores)


def worker_nice(device_type: str) -> int:
    """The niceness of loader workers when the model runs on `device_type`."""
    return CPU_TRAINING_WORKER_NICE if device_type == "cpu" else 0


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    if platform.system() != "Linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_amp_dtype(capability: tuple[int, int], requested: str = "auto") -> str | None:
    """The autocast dtype ("bf16" or "fp16") for a GPU of `capability`; None: no AMP there.

    `requested` is the config's amp_dtype: "auto" picks bf16 from compute capability 8.0.
    """
    if capability < AMP_MIN_CAPABILITY:
        return None
    if requested == "bf16" or (requested == "auto" and capability >= BF16_MIN_CAPABILITY):
        return "bf16"
    return "fp16"
