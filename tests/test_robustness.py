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
from typer.testing import CliRunner

from conftest import fakedet_command, make_folder_dataset, signal_when_written, tiny_train_args
from fakedet.cli import app
from fakedet.config import build_config
from fakedet.engine import trainer as trainer_module
from fakedet.engine.checkpoint import load_checkpoint
from fakedet.engine.losses import LossTerms
from fakedet.engine.trainer import Trainer
from fakedet.errors import TrainingError
from fakedet.models import create_model


def _config(data_root: Path, output_dir: Path, **overrides: object):
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
        **overrides,
    }
    return build_config(values)


def _fit(config) -> dict:
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _nan_loss_on(calls_to_poison: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    original = trainer_module.detector_loss
    counter = {"calls": 0}

    def poisoned(*args: object, **kwargs: object) -> LossTerms:
        terms = original(*args, **kwargs)
        counter["calls"] += 1
        if counter["calls"] in calls_to_poison:
            nan = terms.total * float("nan")
            return LossTerms(nan, terms.regression, terms.classification, terms.ranking)
        return terms

    monkeypatch.setattr(trainer_module, "detector_loss", poisoned)


def test_a_nan_step_is_skipped_and_counted(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_loss_on({1}, monkeypatch)
    result = _fit(_config(folder_dataset, tmp_path / "run"))
    assert result["nonfinite_steps"] == 1
    state = load_checkpoint(tmp_path / "run" / "latest_model.pt")
    assert state["nonfinite_steps"] == 1
    assert all(
        torch.isfinite(t).all() for t in state["model_state_dict"].values() if t.is_floating_point()
    )


def test_many_nan_steps_stop_with_advice_and_a_loadable_checkpoint(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_loss_on(set(range(1, 1000)), monkeypatch)
    with pytest.raises(TrainingError, match=r"non-finite.*lower --lr"):
        _fit(_config(folder_dataset, tmp_path / "run", max_nonfinite_steps=2))
    assert load_checkpoint(tmp_path / "run" / "latest_model.pt")["global_step"] == 2


def test_early_stopping_after_patience(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    original = Trainer._validate

    def worsening(self: Trainer) -> tuple[dict[str, float], Any]:
        metrics, scores = original(self)
        metrics["val_loss"] = next(losses)
        return metrics, scores

    monkeypatch.setattr(Trainer, "_validate", worsening)
    result = _fit(_config(folder_dataset, tmp_path / "run", epochs=5, early_stopping_patience=2))
    assert result["epochs_run"] == 3 and result["best_epoch"] == 1
    assert "early stopping" in result["stop_reason"]
    state = load_checkpoint(tmp_path / "run" / "latest_model.pt")
    assert state["epochs_without_improvement"] == 2 and state["best_val_loss"] == 1.0


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
    assert state["global_step"] >= 1


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
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's OutOfMemoryError, raised on CPU by a model that runs out in epoch 2."""
    calls = {"train_batches": 0}

    def hungry_model(name: str, img_size: int = 256, **kwargs: object) -> torch.nn.Module:
        model = create_model(name, img_size=img_size, **kwargs)
        forward = model.forward

        def forward_or_oom(images: torch.Tensor) -> dict[str, torch.Tensor]:
            if model.training:
                calls["train_batches"] += 1
                if calls["train_batches"] > 2:  # epoch 1 has 2 batches of 8
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return forward(images)

        model.forward = forward_or_oom  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(trainer_module, "create_model", hungry_model)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, tiny_train_args(folder_dataset, out))
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "Out of memory on cpu in epoch 2 at batch size 8" in message
    assert "--batch-size 4 --gradient-accumulation-steps 2 (effective batch 8)" in message
    assert "--batch-size auto" in message
    assert f"fakedet resume {out} --batch-size 4" in message
    assert "Traceback" not in result.output
    assert load_checkpoint(out / "latest_model.pt")["epoch"] == 1


def test_smaller_batch_keeps_the_effective_batch() -> None:
    from fakedet.advisor import smaller_batch

    assert smaller_batch(64, 1) == (32, 2)
    assert smaller_batch(8, 2) == (4, 4)
    assert smaller_batch(1, 4) is None
