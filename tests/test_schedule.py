"""LR schedule: per-step linear warmup, cosine to min_lr, a pure function of the step."""

from __future__ import annotations

import itertools

import pytest

from fakedet.training.schedule import build_schedule


def test_warmup_is_linear_then_cosine_reaches_min_lr() -> None:
    schedule, warning = build_schedule(
        1e-3, 1e-5, warmup_epochs=2, epochs=10, steps_per_epoch=5, shape="cosine"
    )
    assert warning is None
    assert schedule.warmup_steps == 10
    assert [schedule.lr_at(step) for step in range(3)] == pytest.approx([1e-4, 2e-4, 3e-4])
    assert schedule.lr_at(9) == pytest.approx(1e-3)
    lrs = [schedule.lr_at(step) for step in range(10, 50)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert schedule.lr_at(50) == pytest.approx(1e-5)
    assert schedule.lr_at(500) == pytest.approx(1e-5)  # never wraps around


def test_warmup_as_long_as_the_run_is_shortened_with_a_warning() -> None:
    schedule, warning = build_schedule(
        1e-3, 1e-6, warmup_epochs=5, epochs=3, steps_per_epoch=4, shape="cosine"
    )
    assert warning is not None and "5" in warning
    assert schedule.warmup_steps == 6
    assert max(schedule.lr_at(step) for step in range(12)) == pytest.approx(1e-3)


def test_schedule_state_round_trips() -> None:
    from fakedet.training.schedule import WarmupCosine

    schedule, _ = build_schedule(1e-3, 1e-6, 1, 4, 3, "cosine")
    restored = WarmupCosine.from_state_dict(schedule.state_dict())
    assert [restored.lr_at(s) for s in range(12)] == [schedule.lr_at(s) for s in range(12)]
