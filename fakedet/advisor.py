"""Hardware advisor: what this machine has, and the batch size, AMP, workers and LR to use there.

`detect_hardware()` reads the machine; `recommend(info, mode)` is a pure function of what it read,
so a plan for another machine is the same call with other numbers.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from fakedet import hardware
from fakedet.errors import ConfigError
from fakedet.memory import (
    MemoryProfile,
    batch_that_fits,
    estimated_peak_gb,
    measure_backbone_memory,
    measure_memory,
)

if TYPE_CHECKING:
    from fakedet.config import TrainingConfig

# The seed's rows (GPU VRAM in GB) and each model's batch per row; the advisor never recommends
# less. A model registered later takes the larger model's column until its memory is measured.
VRAM_ROWS_GB = (24.0, 12.0, 8.0, 6.0)


SEED_BATCHES = {"fast": (128, 64, 32, 16), "full": (64, 32, 16, 8)}


CPU_BATCH = {"fast": 16, "full": 8}


DEFAULT_TABLE_MODEL = "full"


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
    # From the measured memory per image (CUDA only): what the batch is expected to take.
    memory_per_image_mb: float | None = None
    estimated_peak_gb: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# The seed's LR ranges ("Выбор LR"), at TARGET_EFFECTIVE_BATCH; a larger batch scales them.
SEED_LR_RANGE_AMP = (1.25e-5, 1e-4)


SEED_LR_RANGE_FP32 = (1e-4, 3e-4)


# The advisor's LR at the reference batch: a point inside each range.
BASE_LR_AMP = 1e-4


BASE_LR_FP32 = 2e-4


def advised_lr(amp: bool, effective_batch: int) -> float:
    """The LR to train with: 1e-4 with AMP, 2e-4 without, per TARGET_EFFECTIVE_BATCH images."""
    return (BASE_LR_AMP if amp else BASE_LR_FP32) * effective_batch / TARGET_EFFECTIVE_BATCH


def smaller_batch(batch_size: int, accumulation: int) -> tuple[int, int] | None:
    """After running out of memory: half the batch and twice the accumulation, which keeps the
    effective batch (so the LR still fits); None when the batch is already 1."""
    if batch_size <= 1:
        return None
    return batch_size // 2, accumulation * 2


def detect_hardware() -> HardwareInfo:
    """Read the device, VRAM, compute capability, OS, cores and versions of this machine."""
    import torch

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
            cpu_bf16=hardware.cpu_has_native_bf16(),
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
        cpu_bf16=hardware.cpu_has_native_bf16(),
        torch_version=torch.__version__,
        cuda_version=None,
    )


def recommend(info: HardwareInfo, mode: str, memory: MemoryProfile | None = None) -> Recommendation:
    """Batch size, accumulation, AMP, workers and LR for model `mode` on `info`.

    On CUDA the seed's VRAM table is the floor; with a measured `memory` profile the batch
    grows to the largest power of two that fits (and shrinks below the table only when even
    the table's batch would not fit).
    """
    table_model = mode if mode in SEED_BATCHES else DEFAULT_TABLE_MODEL
    memory_per_image = peak = None
    if info.device == "cuda" and info.vram_gb is not None:
        batch = CPU_BATCH[table_model] // 2
        reason = f"{info.vram_gb:g} GB VRAM is below the 6 GB row"
        for vram, row_batch in zip(VRAM_ROWS_GB, SEED_BATCHES[table_model], strict=True):
            if info.vram_gb >= vram:
                batch, reason = row_batch, f"{info.vram_gb:g} GB VRAM (>= {vram:g} GB row)"
                break
        if memory is not None:
            fits = batch_that_fits(info.vram_gb, memory)
            if fits != batch:
                measured = (
                    f"{info.vram_gb:g} GB VRAM, {memory.activation_bytes_per_image / 1024**2:.3g} "
                    "MB per image measured"
                )
                if fits > batch:
                    reason = f"{measured}: largest power of two that fits"
                elif fits >= 1:
                    reason = f"{measured}: the table's {batch} does not fit, {fits} does"
                else:
                    needed = estimated_peak_gb(1, memory)
                    smaller = "--fast" if mode in SEED_BATCHES else "--lora-rank, --use-amp"
                    reason = (
                        f"{measured}: even batch 1 needs about {needed:.2f} GB, more than this "
                        f"GPU has; try {smaller}, a smaller --img-size or a larger GPU"
                    )
                batch = max(fits, 1)
            memory_per_image = round(memory.activation_bytes_per_image / 1024**2, 1)
            peak = round(estimated_peak_gb(batch, memory), 2)
        # AMP only where it is faster (Volta, Turing); from Ampere on fp32 trains as TF32 and was
        # faster than bf16 autocast (hardware.cuda_amp_is_faster); --use-amp still saves memory.
        capability = info.compute_capability or (0, 0)
        use_amp = hardware.cuda_amp_is_faster(capability)
        amp_dtype = hardware.cuda_amp_dtype(capability) or "auto"
    else:
        batch, reason = CPU_BATCH[table_model], f"no GPU ({info.device})"
        # bf16 on a CPU that has it natively, for the models it speeds up (not fast's FFTs).
        use_amp = info.device == "cpu" and info.cpu_bf16 and hardware.cpu_amp_is_faster(mode)
        amp_dtype = "bf16"
    accumulation = max(1, TARGET_EFFECTIVE_BATCH // batch)
    workers = hardware.default_num_workers(info.os, info.cpu_cores, info.device)
    lr = advised_lr(use_amp, batch * accumulation)
    return Recommendation(
        mode=mode,
        batch_size=batch,
        gradient_accumulation_steps=accumulation,
        use_amp=use_amp,
        amp_dtype=amp_dtype if use_amp else "auto",
        num_workers=workers,
        lr=lr,
        reason=reason,
        memory_per_image_mb=memory_per_image,
        estimated_peak_gb=peak,
    )


# What people type for --os, lower-cased, and the platform.system() name it means.
OS_NAMES = {
    "linux": "Linux",
    "windows": "Windows",
    "win": "Windows",
    "win32": "Windows",
    "darwin": "Darwin",
    "macos": "Darwin",
    "mac": "Darwin",
    "osx": "Darwin",
}


def parse_os(text: str) -> str:
    """ "linux", "Windows", "macOS" ... -> the platform.system() name (Linux, Windows, Darwin).

    Raises:
        ConfigError: a name that is none of them.
    """
    name = OS_NAMES.get(text.strip().lower().replace(" ", ""))
    if name is None:
        raise ConfigError(f"--os {text!r} is not Linux, Windows or macOS (Darwin).")
    return name


def parse_compute_capability(text: str) -> tuple[int, int]:
    """ "8.6" -> (8, 6).

    Raises:
        ConfigError: anything that is not MAJOR.MINOR.
    """
    major, dot, minor = text.partition(".")
    if not (major.isdigit() and (not dot or minor.isdigit())):
        raise ConfigError(f"--compute-capability {text!r} is not MAJOR.MINOR (e.g. 7.5, 8.6, 9.0).")
    return int(major), int(minor or 0)


def train_command(
    recommendation: Recommendation, img_size: int, backbone: TrainingConfig | None = None
) -> str:
    """The `fakedet train` line that applies a recommendation (for `backbone`'s detector)."""
    mode = recommendation.mode
    # --fast / --full are the short spellings; any other registered model goes by --mode NAME.
    model_flag = f"--{mode}" if mode in ("fast", "full") else f"--mode {mode}"
    if backbone is not None:
        model_flag = backbone_flags(backbone)
    parts = [
        f"fakedet train DATA_ROOT {model_flag}",
        f"--batch-size {recommendation.batch_size}",
    ]
    if recommendation.gradient_accumulation_steps > 1:
        parts.append(f"--gradient-accumulation-steps {recommendation.gradient_accumulation_steps}")
    parts.append(f"--lr {recommendation.lr:.3g}")
    if recommendation.use_amp:
        parts.append(f"--use-amp --amp-dtype {recommendation.amp_dtype}")
    parts.append(f"--num-workers {recommendation.num_workers}")
    if img_size != 256 or backbone is not None:
        parts.append(f"--img-size {img_size}")
    return " ".join(parts)


def backbone_flags(config: TrainingConfig) -> str:
    """`--backbone SOURCE:NAME [--weights FILE] --probe|--finetune [--lora-rank N] ...`."""
    flags = [f"--backbone {config.backbone}"]
    if config.weights is not None:
        flags.append(f"--weights {shlex.quote(str(config.weights))}")
    flags.append("--finetune" if config.finetune else "--probe")
    if config.lora_rank:
        flags.append(f"--lora-rank {config.lora_rank}")
    if config.with_spectral:
        flags.append("--with-spectral")
    return " ".join(flags)


def advise(
    modes: tuple[str, ...] = ("fast", "full"),
    img_size: int = 256,
    vram_gb: float | None = None,
    os_name: str | None = None,
    compute_capability: str | None = None,
    cpu_cores: int | None = None,
    backbone: TrainingConfig | None = None,
) -> dict[str, object]:
    """`fakedet recommend`: this machine (or the one described by the overrides) and the
    settings per mode, each with a ready `fakedet train` line. With `backbone` (a config that
    names one), the settings of that backbone detector at its `img_size` instead of `modes`.

    Raises:
        ConfigError: a bad image size, mode, OS or compute capability.
    """
    from fakedet.models.backbones.spec import backbone_choice
    from fakedet.models.registry import check_img_size, list_models

    choice = backbone_choice(backbone) if backbone is not None else None
    if backbone is not None:
        modes, img_size = (str(backbone.backbone),), backbone.img_size
    try:
        check_img_size(img_size)
    except ValueError as exc:
        raise ConfigError(f"--img-size {img_size} {exc}.") from None
    for mode in modes if choice is None else ():
        if mode not in list_models():
            raise ConfigError(f"--mode {mode!r} is not one of {', '.join(list_models())}.")
    info, notes = _planned_hardware(vram_gb, os_name, compute_capability, cpu_cores)
    recommendations = []
    for mode in modes:
        memory = None
        if info.device == "cuda":
            amp = hardware.cuda_amp_is_faster(info.compute_capability or (0, 0))
            memory = (
                measure_memory(mode, img_size, amp)
                if choice is None
                else measure_backbone_memory(choice, img_size, amp)
            )
        recommendation = recommend(info, mode, memory)
        if backbone is not None:  # a probe's or a fine-tune's own default LR
            recommendation = replace(recommendation, lr=backbone.lr)
        command = train_command(recommendation, img_size, backbone)
        recommendations.append({**recommendation.as_dict(), "command": command})
    if info.device == "cpu" and not info.cpu_bf16:
        notes.append("this CPU has no native bf16 (AVX512-BF16/AMX): AMP stays off")
    if info.device == "cuda":
        notes.append(
            "batch sizes come from activation memory measured on the CPU, scaled by factors "
            "fitted on an H200 (est. peak was 1.08-1.17x the card memory a training step used)"
        )
    if backbone is not None:
        notes += backbone_notes(backbone, measured=info.device == "cuda")
    return {
        "hardware": asdict(info),
        "img_size": img_size,
        "recommendations": recommendations,
        "notes": notes,
    }


def backbone_notes(config: TrainingConfig, measured: bool) -> list[str]:
    """What a backbone's plan rests on: a measured architecture, and where its weights come from."""
    notes = []
    if measured:
        notes.append(
            f"memory measured on {config.backbone}'s architecture with random weights (memory "
            "does not depend on their values: no weights file read, nothing downloaded)"
            + ("" if config.finetune else "; a probe's is its frozen forward without grad")
        )
    if config.weights is None:
        notes.append(
            f"no --weights: `fakedet train` downloads {config.backbone}'s weights through its "
            "library; offline, fetch the file and pass --weights FILE"
        )
    return notes


def _planned_hardware(
    vram_gb: float | None,
    os_name: str | None,
    compute_capability: str | None,
    cpu_cores: int | None,
) -> tuple[HardwareInfo, list[str]]:
    """This machine, or the one the overrides describe, and what was assumed about it."""
    if os_name is not None:
        os_name = parse_os(os_name)
    info = detect_hardware()
    notes: list[str] = []
    if vram_gb is not None:
        if not math.isfinite(vram_gb) or vram_gb <= 0:
            raise ConfigError(f"--vram {vram_gb:g} must be a positive number of GB.")
        planned = info.device != "cuda"
        info = replace(
            info,
            device="cuda",
            device_name="planned GPU" if planned else info.device_name,
            vram_gb=vram_gb,
            compute_capability=info.compute_capability if not planned else (8, 0),
        )
        if planned and compute_capability is None:
            notes.append("no --compute-capability given: planning for 8.0 (bf16)")
    if compute_capability is not None:
        info = replace(info, compute_capability=parse_compute_capability(compute_capability))
    if os_name is not None:
        info = replace(info, os=os_name)
    if cpu_cores is not None:
        info = replace(info, cpu_cores=cpu_cores)
    return info, notes
