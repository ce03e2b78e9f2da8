"""Gradient accumulation: 8 x 2 accumulated gives the gradients of one batch of 16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from conftest import make_folder_dataset
from fakedet.config import TrainingConfig
from fakedet.models import create_model
from fakedet.training import run
from fakedet.training.trainer import accumulation_window


@pytest.mark.parametrize(
    ("accumulation", "batches", "expected"),
    [
        (1, 3, [(1, True), (1, True), (1, True)]),
        (2, 4, [(2, False), (2, True), (2, False), (2, True)]),
        (2, 5, [(2, False), (2, True), (2, False), (2, True), (1, True)]),
        (4, 3, [(3, False), (3, False), (3, True)]),
    ],
)
def test_accumulation_windows_end_with_the_epoch(
    accumulation: int, batches: int, expected: list[tuple[int, bool]]
) -> None:
    windows = [accumulation_window(index, accumulation, batches) for index in range(batches)]
    assert windows == expected


def _frozen_model(name: str, img_size: int) -> nn.Module:
    """The registry's model, kept in eval mode: BatchNorm then uses running statistics, so a
    batch of 16 and two of 8 see the same normalisation and the gradients can be compared."""
    torch.manual_seed(0)  # the same initial weights in every run compared
    model = create_model(name, img_size=img_size)
    model.train = lambda mode=True: nn.Module.train(model, False)  # type: ignore[method-assign]
    return model


def _step_gradients(
    data: Path, output: Path, batch_size: int, accumulation: int, mode: str, hold: bool = False
) -> list[list[torch.Tensor]]:
    """Run one epoch and return the gradients each optimizer step was about to apply.

    `hold` keeps the weights still: the hook takes the gradients away, and AdamW skips
    parameters without one, so every step's gradient is taken at the initial weights.
    """
    captured: list[list[torch.Tensor]] = []

    def capture(optimizer: torch.optim.Optimizer, *_: object) -> None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        captured.append([p.grad.detach().clone() for p in parameters if p.grad is not None])
        if hold:
            for parameter in parameters:
                parameter.grad = None

    config = TrainingConfig(
        data_root=data,
        output_dir=output,
        mode=mode,
        img_size=64,
        batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        epochs=1,
        lr=1e-3,
        num_workers=0,
        device="cpu",
        use_tensorboard=False,
        plots=False,
        # The ranking term pairs images within a micro-batch, so 8 + 8 sees fewer pairs than 16;
        # the pointwise terms (MSE, CE) are means and add up exactly.
        ranking_weight=0.0,
        # Clipping rescales the whole gradient; off, so a wrong loss scale cannot hide.
        grad_clip=0.0,
    )
    handle = register_optimizer_step_pre_hook(capture)
    try:
        run.train(config, model=_frozen_model(mode, config.img_size))
    finally:
        handle.remove()
    return captured


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_batch_8_times_2_equals_batch_16(tmp_path: Path, mode: str) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=8)  # 16 train images: one batch
    one_batch = _step_gradients(data, tmp_path / "a", batch_size=16, accumulation=1, mode=mode)
    accumulated = _step_gradients(data, tmp_path / "b", batch_size=8, accumulation=2, mode=mode)
    assert len(one_batch) == len(accumulated) == 1
    assert len(one_batch[0]) == len(accumulated[0]) > 0
    for big, small in zip(one_batch[0], accumulated[0], strict=True):
        torch.testing.assert_close(small, big, rtol=1e-4, atol=1e-7)


def test_partial_last_window_is_a_mean_over_its_own_batches(tmp_path: Path) -> None:
    """24 images, batch 8, accumulation 2: windows of 2 batches and of 1. With the weights held
    still, window 1 is the mean of batches 1 and 2, and window 2 is batch 3 itself (dividing it
    by the nominal 2 would halve it)."""
    data = make_folder_dataset(tmp_path / "data", per_class=12)
    windows = _step_gradients(data, tmp_path / "a", 8, accumulation=2, mode="fast", hold=True)
    batches = _step_gradients(data, tmp_path / "b", 8, accumulation=1, mode="fast", hold=True)
    assert (len(windows), len(batches)) == (2, 3)
    for window, first, second in zip(windows[0], batches[0], batches[1], strict=True):
        torch.testing.assert_close(window, (first + second) / 2, rtol=1e-4, atol=1e-7)
    for window, third in zip(windows[1], batches[2], strict=True):
        torch.testing.assert_close(window, third, rtol=1e-4, atol=1e-7)
