"""The doctor's hardware rule: settings that leave the machine's speed unused."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from fakedet.doctor.findings import (
    Finding,
    four_digits,
    new_run_command,
)
from fakedet.hardware import cpu_amp_is_faster, cuda_amp_is_faster, default_num_workers

# Under-used hardware. Nothing here predicts images per second: `fakedet recommend` predicts a
# batch size, AMP, workers and an LR, not a throughput. So the rule compares the run's settings
# with the advisor's, and reports the measured img/s as context only. AMP counts only where it
# speeds training up: bf16 on a CPU with native bf16 for the models it speeds up (full 1.31x
# measured; not fast, `hardware.cpu_amp_is_faster`) and fp16 on Volta and Turing GPUs (the
# seed's 1.5-2x); from Ampere on, fp32 runs as TF32 and bf16 autocast was slower on an H200
# (`hardware.cuda_amp_is_faster`). On a GPU, loader workers are the gain.


def underused_hardware(
    images_per_sec: Sequence[float],
    num_workers: int | None,
    use_amp: bool,
    device: str,
    os_name: str,
    cpu_cores: int,
    cpu_bf16: bool,
    compute_capability: tuple[int, int] | None,
    run_dir: str = "RUN_DIR",
    mode: str = "fast",
) -> Finding | None:
    """Settings below what the advisor recommends on the hardware the run used.

    Judged on settings, not on img/s: nothing predicts a throughput to compare with (see the
    comment above `Finding`); the measured median img/s is reported as context.

    Args:
        num_workers: the run's setting; None (unset) took the device's default at start.
        device: where the run trained ("cpu", "cuda", "mps").
        mode: the model trained (bf16 speeds some up on a CPU, not others).
    """
    workers = default_num_workers(os_name, cpu_cores, device)
    if num_workers is None:
        num_workers = workers
    if device == "cuda":
        amp_available = cuda_amp_is_faster(compute_capability or (0, 0))
    else:
        amp_available = device == "cpu" and cpu_bf16 and cpu_amp_is_faster(mode)
    few_workers = num_workers < workers
    amp_unused = amp_available and not use_amp
    if not (few_workers or amp_unused):
        return None
    flags, signs = [], []
    if amp_unused:
        flags.append("--use-amp")
        if device == "cpu":
            signs.append(
                f"AMP is off although this CPU runs bf16 natively, which trains {mode} faster"
            )
        else:
            signs.append(
                "AMP is off although this GPU's fp16 tensor cores would run it (1.5-2x in the seed's notes)"
            )
    if few_workers:
        flags.append(f"--num-workers {workers}")
        signs.append(f"{num_workers} loader worker(s) where the advisor uses {workers}")
    speed = statistics.median(images_per_sec) if images_per_sec else None
    measured = f" The run measured {speed:.1f} img/s." if speed is not None else ""
    return Finding(
        rule="underused_hardware",
        # Info: these settings cost time, never the model's quality (a healthy quickstart run
        # on a CPU with native bf16 has AMP off).
        severity="info",
        evidence={
            "images_per_sec": four_digits(speed) if speed is not None else None,
            "num_workers": num_workers,
            "advised_workers": workers,
            "use_amp": use_amp,
            "amp_available": amp_available,
        },
        advice=f"Hardware left unused: {'; '.join(signs)}.{measured}",
        flags=new_run_command(run_dir, "fast", " ".join(flags)),
    )
