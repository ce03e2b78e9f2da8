"""Learning rate as a pure function of the optimizer step: linear warmup, then cosine to min_lr.

Nothing but (step, settings) decides the LR, so a resume can never make the cosine wrap around.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class WarmupCosine:
    """The schedule's settings; `lr_at(step)` is the LR of optimizer step `step` (0-based)."""

    base_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    shape: str = "cosine"
    # The step the schedule counts from: a --reset-scheduler resume starts a new curve there.
    start_step: int = 0

    def lr_at(self, step: int) -> float:
        local = step - self.start_step
        if self.warmup_steps > 0 and local < self.warmup_steps:
            return self.base_lr * (local + 1) / self.warmup_steps
        if self.shape == "constant":
            return self.base_lr
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (local - self.warmup_steps) / decay_steps))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (
            1.0 + math.cos(math.pi * progress)
        )

    def state_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, float | int | str]) -> WarmupCosine:
        return cls(**state)  # type: ignore[arg-type]


def effective_warmup_epochs(warmup_epochs: float, epochs: int) -> tuple[float, str | None]:
    """Warmup that fits the run, and a warning when it had to be shortened.

    A warmup as long as the run would never reach the peak LR; it is cut to half the run so that
    `--epochs 3` with the default 5 warmup epochs just works.
    """
    if warmup_epochs < epochs:
        return warmup_epochs, None
    shortened = epochs / 2
    return shortened, (
        f"warmup_epochs={warmup_epochs:g} is not shorter than the run ({epochs} epochs); "
        f"using {shortened:g} warmup epochs instead."
    )


def build_schedule(
    base_lr: float,
    min_lr: float,
    warmup_epochs: float,
    epochs: int,
    steps_per_epoch: int,
    shape: str,
    start_step: int = 0,
) -> tuple[WarmupCosine, str | None]:
    """The schedule of a run of `epochs` epochs starting at `start_step`, plus any warning."""
    warmup, warning = effective_warmup_epochs(warmup_epochs, epochs)
    schedule = WarmupCosine(
        base_lr=base_lr,
        min_lr=min_lr,
        warmup_steps=round(warmup * steps_per_epoch),
        total_steps=epochs * steps_per_epoch,
        shape=shape,
        start_step=start_step,
    )
    return schedule, warning


def resumed_schedule(
    saved: WarmupCosine,
    saved_epochs: int,
    total_epochs: int,
    completed_epochs: int,
    steps_per_epoch: int,
    global_step: int,
    new_lr: float | None,
    reset_scheduler: bool,
    warmup_epochs: float,
    min_lr: float,
    saved_steps_per_epoch: int | None = None,
) -> tuple[WarmupCosine, list[str]]:
    """The schedule a resumed run follows, and what changed (for the user).

    `saved_steps_per_epoch` differing from `steps_per_epoch` (a new batch size or accumulation,
    at an epoch boundary) rescales the saved curve so warmup and decay keep their epochs.

    - nothing changed: the saved curve, untouched (crash recovery);
    - more epochs: the same warmup, the cosine laid over the new total;
    - new_lr (--reset-lr): the same shape around the new base LR;
    - reset_scheduler: a fresh warmup + cosine from `global_step` over the remaining epochs.
    """
    notes: list[str] = []
    rescaled = saved_steps_per_epoch is not None and saved_steps_per_epoch != steps_per_epoch
    if rescaled:
        # Batch size or accumulation changed: the curve keeps its shape in epochs, not in steps.
        ratio = steps_per_epoch / saved_steps_per_epoch
        saved = WarmupCosine(
            base_lr=saved.base_lr,
            min_lr=saved.min_lr,
            warmup_steps=round(saved.warmup_steps * ratio),
            total_steps=saved.total_steps,
            shape=saved.shape,
            start_step=global_step - round((global_step - saved.start_step) * ratio),
        )
        notes.append(
            f"{steps_per_epoch} steps per epoch instead of {saved_steps_per_epoch}: "
            "warmup and decay kept in epochs"
        )
    base_lr = saved.base_lr if new_lr is None else new_lr
    if new_lr is not None:
        notes.append(f"base LR {saved.base_lr:.3g} -> {new_lr:.3g}")
    if reset_scheduler:
        remaining = max(1, total_epochs - completed_epochs)
        schedule, warning = build_schedule(
            base_lr,
            min(min_lr, base_lr),
            warmup_epochs,
            remaining,
            steps_per_epoch,
            saved.shape,
            start_step=global_step,
        )
        notes.append(f"fresh warmup + {saved.shape} over the remaining {remaining} epoch(s)")
        if warning:
            notes.append(warning)
        return schedule, notes
    total_steps = saved.total_steps
    if rescaled:
        # Only allowed at an epoch boundary, so the remaining steps are whole epochs.
        remaining = (total_epochs - completed_epochs) * steps_per_epoch
        total_steps = global_step - saved.start_step + remaining
        if total_epochs != saved_epochs:
            notes.append(f"{saved.shape} laid over {total_epochs} epochs instead of {saved_epochs}")
    elif total_epochs != saved_epochs:
        # The curve counts from its own start step; its end moves to the new last step.
        total_steps = total_epochs * steps_per_epoch - saved.start_step
        notes.append(f"{saved.shape} laid over {total_epochs} epochs instead of {saved_epochs}")
    schedule = WarmupCosine(
        base_lr=base_lr,
        min_lr=min(saved.min_lr, base_lr),
        warmup_steps=saved.warmup_steps,
        total_steps=total_steps,
        shape=saved.shape,
        start_step=saved.start_step,
    )
    return schedule, notes
