"""Training robustness: non-finite losses, early stopping, signals, kills and a full disk."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import (
    fakedet_command,
    make_folder_dataset,
    poisoned_loss,
    signal_when_written,
    tiny_train_args,
)
from fakedet.checkpoints.files import load_checkpoint
from fakedet.config import TrainingConfig
from fakedet.config_files import build_config
from fakedet.errors import TrainingError
from fakedet.evaluation.validation import LossFunction, build_loss
from fakedet.models import create_model
from fakedet.sources.layouts import index_dataset
from fakedet.training import run
from fakedet.training.build import build_runtime, build_training, seed_everything
from fakedet.training.checkpointer import Checkpointer
from fakedet.training.logging import Reporter
from fakedet.training.trainer import Trainer


def _config(data_root: Path, output_dir: Path, **overrides: object) -> TrainingConfig:
    values = {
        "data_root": data_root,
        "output_dir": output_dir,
        "img_size": 64,
        "batch_size": 8,
        "epochs": 2,
        "lr": 1e-3,
        "num_workers": 0,
        "device": "cpu",
        "use_tensorboard": False,
        "plots": False,
        **overrides,
    }
    return build_config(values)


def _fit(
    config: TrainingConfig, loss: LossFunction | None = None, trainer_class: type = Trainer
) -> dict:
    """A run assembled from its parts, as `engine.run.train` does, with some parts swapped."""
    seed_everything(config.seed)
    runtime = build_runtime(config.device)
    parts, state = build_training(config, runtime, index_dataset(config), Reporter())
    if loss is not None:
        parts.loss = loss
    checkpointer = Checkpointer(Path(config.output_dir), save_every=config.save_every)
    return trainer_class(config, parts, state, checkpointer).fit()


def test_a_nan_step_is_skipped_and_counted(folder_dataset: Path, tmp_path: Path) -> None:
    config = _config(folder_dataset, tmp_path / "run")
    result = _fit(config, poisoned_loss(build_loss(config), {1}))
    assert result["nonfinite_steps"] == 1
    state = load_checkpoint(tmp_path / "run" / "latest_model.pt")
    assert state.state.nonfinite_steps == 1
    assert all(torch.isfinite(t).all() for t in state.model_state.values() if t.is_floating_point())


def test_many_nan_steps_stop_with_advice_and_a_loadable_checkpoint(
    folder_dataset: Path, tmp_path: Path
) -> None:
    config = _config(folder_dataset, tmp_path / "run", max_nonfinite_steps=2)
    with pytest.raises(TrainingError, match=r"non-finite.*lower --lr"):
        _fit(config, poisoned_loss(build_loss(config), set(range(1, 1000))))
    assert load_checkpoint(tmp_path / "run" / "latest_model.pt").state.global_step == 2


class _WorseningTrainer(Trainer):
    """Reports a val_loss of 1, 2, 3, ...: never an improvement after epoch 1."""

    def validate(self) -> tuple[dict[str, float], Any]:
        metrics, scores = super().validate()
        metrics["val_loss"] = float(self.state.epoch)
        return metrics, scores


def test_early_stopping_after_patience(folder_dataset: Path, tmp_path: Path) -> None:
    config = _config(folder_dataset, tmp_path / "run", epochs=5, early_stopping_patience=2)
    result = _fit(config, trainer_class=_WorseningTrainer)
    assert result["epochs_run"] == 3 and result["best_epoch"] == 1
    assert "early stopping" in result["stop_reason"]
    state = load_checkpoint(tmp_path / "run" / "latest_model.pt")
    assert state.state.epochs_without_improvement == 2 and state.state.best_val_loss == 1.0


def test_validate_interval_and_save_every(folder_dataset: Path, tmp_path: Path) -> None:
    _fit(_config(folder_dataset, tmp_path / "run", epochs=4, validate_interval=2, save_every=2))
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert ["val_loss" in row for row in history] == [False, True, False, True]
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint_epoch_*.pt")) == [
        "checkpoint_epoch_2.pt",
        "checkpoint_epoch_4.pt",
    ]


def _train_command(data_root: Path, output_dir: Path, *extra: str) -> list[str]:
    return fakedet_command(*tiny_train_args(data_root, output_dir, "--batch-size", "4", *extra))


def test_sigterm_saves_latest_and_exits_143(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    code, output = signal_when_written(
        _train_command(data, out, "--epochs", "500"), out / "latest_model.pt"
    )
    assert code == 143, output
    assert "fakedet resume" in output
    state = load_checkpoint(out / "latest_model.pt")
    assert state.state.global_step >= 1


def _limit_file_size() -> None:
    signal.signal(
        signal.SIGXFSZ, signal.SIG_IGN
    )  # write() then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_disk_full_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    subprocess.run(_train_command(data, out, "--epochs", "1"), check=True, capture_output=True)
    before = (out / "latest_model.pt").read_bytes()
    result = subprocess.run(
        _train_command(data, out, "--epochs", "1"),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "file size limit" in result.stderr
    assert (out / "latest_model.pt").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_out_of_memory_names_a_smaller_batch_and_the_resume(
    folder_dataset: Path, tmp_path: Path
) -> None:
    """CUDA's OutOfMemoryError, raised on CPU by a model that runs out in epoch 2."""
    calls = {"train_batches": 0}
    model = create_model("fast", img_size=64)
    forward = model.forward

    def forward_or_oom(images: torch.Tensor) -> dict[str, torch.Tensor]:
        if model.training:
            calls["train_batches"] += 1
            if calls["train_batches"] > 2:  # epoch 1 has 2 batches of 8
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return forward(images)

    model.forward = forward_or_oom  # type: ignore[method-assign]
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as raised:
        run.train(_config(folder_dataset, out), model=model)
    assert raised.value.exit_code == 1
    message = str(raised.value)
    assert "Out of memory on cpu in epoch 2 at batch size 8" in message
    assert "--batch-size 4 --gradient-accumulation-steps 2 (effective batch 8)" in message
    assert "--batch-size auto" in message
    assert f"fakedet resume {out} --batch-size 4" in message
    assert load_checkpoint(out / "latest_model.pt").state.epoch == 1


def test_smaller_batch_keeps_the_effective_batch() -> None:
    from fakedet.advisor import smaller_batch

    assert smaller_batch(64, 1) == (32, 2)
    assert smaller_batch(8, 2) == (4, 4)
    assert smaller_batch(1, 4) is None
