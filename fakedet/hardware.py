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
# Loader workers on Linux/macOS when the model trains on the CPU: up to this many (they share
# the cores with the model's threads).
MAX_DEFAULT_WORKERS = 4
# On a GPU the loader is the bottleneck: an H200 trains the fast model at 4,600-8,500 img/s
# (benchmarks/models.py, 256 px) while PNG decoding fed it 846 img/s with 4 workers and 1,282
# with 12 (16 cores, `fakedet train --use-amp --batch-size 128`, 2026-11-30).
MAX_GPU_WORKERS = 12
# When the model trains on the CPU, workers at this niceness fill idle gaps instead of
# pre-empting an intra-op thread and stalling its barrier (benchmarks/data.py: 1.19x -> 1.04x).
CPU_TRAINING_WORKER_NICE = 19


def default_num_workers(
    os_name: str | None = None,
    cpu_cores: int | None = None,
    device_type: str = "cpu",
    processes: int = 1,
) -> int:
    """0 on Windows (spawned workers cost more than they give), else min(4, CPU cores) when the
    model trains on the CPU or MPS and min(12, CPU cores) on CUDA.

    Without `os_name` and `cpu_cores`, for this machine; with them, for the machine being planned
    for. `processes` that share the machine (DDP) split its cores.
    """
    system = os_name if os_name is not None else platform.system()
    if system == "Windows":
        return 0
    cores = (cpu_cores if cpu_cores is not None else (os.cpu_count() or 1)) // max(1, processes)
    limit = MAX_GPU_WORKERS if device_type == "cuda" else MAX_DEFAULT_WORKERS
    return max(1, min(limit, cores))


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


# bf16 autocast over fp32 training on a CPU with native bf16 (benchmarks/models.py --amp, batch
# 16, 256 px, this project's 2-core VM, 2026-12-04): fast 0.96x, 0.57x, 0.84x over two sessions;
# full 1.31x, 0.90x (revision 1), 1.31x (revision 2). With the depthwise convolutions in fp32
# under autocast and the full model's attention on the math kernel (sixth session) fast reached
# 0.94-1.07x (models.py) and 1.10-1.16x (benchmarks/amp.py), full 1.22x and 1.30x: for fast a
# gain inside this host's run-to-run spread (0.2-0.4), so the advisor does not ask for AMP
# there. Other models (full, backbones, registered ones) keep the rule that native bf16 pays.
CPU_AMP_SLOWER = frozenset({"fast"})


def cpu_amp_is_faster(mode: str) -> bool:
    """Whether bf16 autocast speeds up training of model `mode` on a CPU with native bf16."""
    return mode not in CPU_AMP_SLOWER


def cuda_amp_is_faster(capability: tuple[int, int]) -> bool:
    """Whether CUDA autocast speeds up training of these models on a GPU of `capability`.

    From Ampere (8.0) fp32 convolutions already run on tensor cores as TF32, and bf16 autocast
    only adds casts around the small models' memory-bound layers: on an H200 it trained at
    0.55x (fast) and 0.95x (full) the fp32 speed at batch 256, 0.85x / 0.95x at batch 64
    (benchmarks/models.py --device cuda --amp, 2026-11-30). It still cuts activation memory
    by about 40% there. Volta and Turing (7.x) have fp16 tensor cores and no TF32, where the
    seed's notes give 1.5-2x; that is not measured here.
    """
    return AMP_MIN_CAPABILITY <= capability < BF16_MIN_CAPABILITY


def cuda_amp_dtype(capability: tuple[int, int], requested: str = "auto") -> str | None:
    """The autocast dtype ("bf16" or "fp16") for a GPU of `capability`; None: no AMP there.

    `requested` is the config's amp_dtype: "auto" picks bf16 from compute capability 8.0.
    """
    if capability < AMP_MIN_CAPABILITY:
        return None
    if requested == "bf16" or (requested == "auto" and capability >= BF16_MIN_CAPABILITY):
        return "bf16"
    return "fp16"


def workers_or_default(num_workers: int | None, device_type: str) -> int:
    """`num_workers` when given, else the default for one process on `device_type`."""
    return default_num_workers(device_type=device_type) if num_workers is None else num_workers
