"""The training loop never waits for the device between host reads: loss sums and skip counts
stay on the device, a non-finite step is skipped by the fused optimizer, and the host reads them
every `read_every` steps. The CUDA check is GPU-marked."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import make_folder_dataset, poisoned_loss
from fakedet.checkpoints.files import load_checkpoint
from fakedet.config_files import build_config
from fakedet.errors import TrainingError
from fakedet.evaluation.validation import build_loss
from fakedet.models import create_model
from fakedet.models.loading import forward_batch
from fakedet.sources.layouts import index_dataset
from fakedet.training.build import build_runtime, build_training, seed_everything, use_kernel
from fakedet.training.callbacks import Callback
from fakedet.training.checkpointer import Checkpointer
from fakedet.training.logging import Reporter
from fakedet.training.trainer import Trainer

# Every way a tensor's value reaches Python: each waits for the device that holds it.
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
# Reads made by the data pipeline (random draws of CPU tensors in the workers' transforms) are
# not the loop's: their tensors never were on the device.
LOADER_FILES = ("torch/utils/data/", "/fakedet/data/", "/fakedet/sources/")


def _trainer(root: Path, tmp_path: Path, device: str = "cpu", **overrides: object) -> Trainer:
    values = {
        "data_root": root,
        "output_dir": tmp_path / "run",
        "img_size": 64,
        "batch_size": 4,
        "epochs": 1,
        "lr": 1e-3,
        "num_workers": 0,
        "device": device,
        "use_tensorboard": False,
        "plots": False,
        **overrides,
    }
    config = build_config(values)
    seed_everything(config.seed)
    parts, state = build_training(
        config, build_runtime(config.device), index_dataset(config), Reporter()
    )
    return Trainer(config, parts, state, Checkpointer(config.output_dir, save_every=0))


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Where the code under test read a tensor on the host (file:line), loader reads left out."""
    reads: list[str] = []

    def counted(name: str):
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            frame = sys._getframe(1)
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
            while frame is not None:
                if any(part in frame.f_code.co_filename for part in LOADER_FILES):
                    break
                frame = frame.f_back
            else:
                reads.append(f"{name} at {where}")
            return original(self, *args, **kwargs)

        return wrapper

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    yield reads


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_an_epoch_reads_the_device_only_at_its_read_points(
    tmp_path: Path, host_reads: list[str], mode: str
) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=12)  # 24 images: 6 steps of 4
    trainer = _trainer(root, tmp_path, mode=mode)
    trainer.read_every = 1  # the CPU's setting: a read after every step
    trainer.train_epoch(1)
    every_step = len(host_reads)
    host_reads.clear()
    trainer.read_every = 1000  # an accelerator's: no read until the epoch's end
    trainer.train_epoch(2)
    # Two reads at the end (the loss sums, the skip counters); none per step.
    assert len(host_reads) <= 2, host_reads
    assert every_step >= 6 * 2  # the counter sees the per-step reads when they happen


def _nan_on(steps: set[int], trainer: Trainer) -> None:
    trainer.parts.loss = poisoned_loss(trainer.parts.loss, steps)


def test_a_nan_step_is_skipped_on_the_device_and_counted_at_the_next_read(
    tmp_path: Path,
) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4)  # 2 steps of 4
    trainer = _trainer(root, tmp_path)
    assert trainer.parts.optimizer.param_groups[0]["fused"]
    trainer.read_every = 1000
    _nan_on({2}, trainer)
    optimizer = trainer.parts.optimizer
    weights: dict[str, torch.Tensor] = {}
    steps: list[float] = []

    def remember(_trainer: Trainer, _loss: object) -> None:
        if not weights:  # after the first (good) step: what the skipped second must keep
            module = trainer.parts.module  # parameters: BatchNorm's running stats move anyway
            weights.update({k: v.detach().clone() for k, v in module.named_parameters()})
            steps.extend(float(s["step"]) for s in optimizer.state.values())

    class Spy(Callback):
        def on_optimizer_step(self, trainer: Trainer, loss: torch.Tensor | None) -> None:
            remember(trainer, loss)

    trainer.callbacks = [Spy()]
    row = trainer.train_epoch(1)
    assert trainer.state.nonfinite_steps == 1
    after = dict(trainer.parts.module.named_parameters())
    for name, value in weights.items():
        assert torch.equal(after[name], value), name
    assert [float(s["step"]) for s in optimizer.state.values()] == steps  # not counted either
    assert row["train_loss"] == row["train_loss"]  # the NaN batch added nothing to the mean


def test_too_many_skipped_steps_stop_at_the_next_read_with_a_good_checkpoint(
    tmp_path: Path,
) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=12)  # 6 steps of 4
    trainer = _trainer(root, tmp_path, max_nonfinite_steps=2)
    trainer.read_every = 4
    _nan_on(set(range(1, 100)), trainer)
    with pytest.raises(TrainingError, match=r"4 optimizer steps in a row.*global step 4"):
        trainer.train_epoch(1)
    saved = load_checkpoint(tmp_path / "run" / "latest_model.pt")
    assert saved.state.global_step == 4 and saved.state.nonfinite_steps == 4
    assert all(torch.isfinite(t).all() for t in saved.model_state.values() if t.is_floating_point())


def test_a_checkpoint_of_an_unfused_optimizer_resumes_on_the_fused_kernel() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    old = torch.optim.AdamW([param], lr=0.1)  # how checkpoints before fusing were made
    param.grad = torch.ones(3)
    old.step()
    fresh = torch.optim.AdamW([param], lr=0.1, fused=True)
    fresh.load_state_dict(old.state_dict())
    assert not fresh.param_groups[0]["fused"]  # the checkpoint's choice came with it
    use_kernel(fresh, True)
    assert fresh.param_groups[0]["fused"]
    fresh.found_inf = torch.ones(())  # a skipped step: nothing moves
    before = param.detach().clone()
    fresh.step()
    del fresh.found_inf
    assert torch.equal(param, before) and float(fresh.state[param]["step"]) == 1.0
    fresh.step()
    assert float(fresh.state[param]["step"]) == 2.0 and not torch.equal(param, before)


def test_validation_sums_match_a_batch_by_batch_host_sum(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=6)
    trainer = _trainer(root, tmp_path)
    metrics, scores = trainer.validate()
    loss = build_loss(trainer.config)
    module, total, seen = trainer.parts.module.eval(), 0.0, 0
    with torch.no_grad():
        for batch in trainer.parts.val_loader:
            outputs = forward_batch(module, batch["images"].float() / 255.0)
            total += loss(outputs, batch["labels"]).total.item() * len(batch["labels"])
            seen += len(batch["labels"])
    assert metrics["val_loss"] == pytest.approx(total / seen, rel=1e-6)
    assert len(scores.scores) == seen


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_epoch_makes_no_synchronising_call_between_reads(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=12)
    trainer = _trainer(root, tmp_path, device="cuda")
    trainer.read_every = 1000
    trainer.train_epoch(1)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_epoch(2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ours = [
        w
        for w in caught
        if "synchroniz" in str(w.message) and not any(part in w.filename for part in LOADER_FILES)
    ]
    # The epoch's end reads twice (loss sums, skip counters): a handful, never one per step.
    assert len(ours) <= 4, [f"{w.filename}:{w.lineno}" for w in ours]


@pytest.mark.parametrize("name", ["fast", "full"])
def test_a_training_forward_builds_no_tensor_from_host_values_after_the_first(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a GPU a tensor made from host values inside the forward is a copy the host waits for
    # at every step (the CUDA test above counts it); constants are made once per device.
    model = create_model(name, img_size=64).train()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model(images)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the forward built a tensor from host values")

    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch, "as_tensor", refuse)
    outputs = model(images)
    assert outputs["score"].shape == (2,)
