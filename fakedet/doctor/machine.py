"""The doctor's hardware rule: settings that leave the machine's speed unused."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from fakedet.doctor.findings import (
    Finding,
    four_digits,
    new_run_command,
)
from fakedet.hardware import cuda_amp_dtype, default_num_workers

# Under-used hardware. Nothing here predicts images per second: `fakedet recommend` predicts a
# batch size, AMP, workers and an LR, not a throughput, and no GPU was at hand to calibrate one.
# So the rule compares the run's settings with the advisor's, and reports the measured img/s as
# context only. AMP where it runs natively is the large gain: 1.5-2x in the seed, 2.4x measured
# for bf16 on this project's CPU (SPEC 4).


def underused_hardware(
    images_per_sec: Sequence[float],
    num_workers: int,
    use_amp: bool,
    device: str,
    os_name: str,
    cpu_cores: int,
    cpu_bf16: bool,
    compute_capability: tuple[int, int] | None,
    run_dir: str = "RUN_DIR",
) -> Finding | None:
    """Settings below what the advisor recommends on the hardware the run used.

    Judged on settings, not on img/s: nothing predicts a throughput to compare with (see the
    comment above `Finding`); the measured median img/s is reported as context.

    Args:
        device: where the run trained ("cpu", "cuda", "mps").
    """
    workers = default_num_workers(os_name, cpu_cores)
    if device == "cuda":
        amp_available = cuda_amp_dtype(compute_capability or (0, 0)) is not None
    else:
        amp_available = device == "cpu" and cpu_bf16
    few_workers = num_workers < workers
    amp_unused = amp_available and not use_amp
    if not (few_workers or amp_unused):
        return None
    flags, signs = [], []
    if amp_unused:
        flags.append("--use-amp")
        where = "native bf16 on this CPU" if device == "cpu" else "this GPU's tensor cores"
        signs.append(f"AMP is off although it would run on {where} (1.5-2x in the seed's notes)")
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
