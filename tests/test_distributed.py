"""DDP on CPU: `fakedet train --devices 2` starts torchrun with the gloo backend."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import fakedet_command, make_folder_dataset, signal_when_written, tiny_train_args
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app


def test_two_processes_train_gather_validation_and_resume_exactly(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data")
    # Two files whose headers read but whose pixels do not: found when a batch decodes them,
    # on whichever rank's share they fall.
    for number in range(2):
        good = (data / "train" / "real" / f"{number}.png").read_bytes()
        (data / "train" / "fake" / f"cut{number}.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    command = fakedet_command(
        *tiny_train_args(data, out, "--batch-size", "4", "--save-every", "1", "--devices", "2")
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=280)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "effective batch 8; 2 steps/epoch" in result.stdout  # 18 images: 9 per rank
    skipped = (out / "skipped_files.txt").read_text()
    assert "cut0.png" in skipped and "cut1.png" in skipped
    assert "2 processes (DDP)" in result.stdout
    assert result.stdout.count("epoch 2: train loss") == 1  # rank 0 alone reports
    state = load_checkpoint(out / "latest_model.pt")
    assert (state.state.epoch, state.state.global_step) == (2, 4)

    # Each rank scored half the val set; the gathered metrics are those of the saved model on
    # the whole set. (The ranking term, and so the total loss, pair images within a batch, so
    # they depend on how the set was split into batches.)
    last = json.loads((out / "training_history.json").read_text())[-1]
    validated = CliRunner().invoke(app, ["validate", str(out), str(data), "--json"])
    assert validated.exit_code == 0, validated.output
    single = json.loads(validated.stdout)
    assert single["images"] == 16
    for name in ("regression", "classification", "accuracy", "real_acc", "fake_acc", "auc", "ap"):
        assert last[f"val_{name}"] == pytest.approx(single["metrics"][name], rel=1e-5), name

    # `fakedet resume --devices 2` from epoch 1 ends where the uninterrupted 2-process run did.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(out / "checkpoint_epoch_1.pt", resumed / "latest_model.pt")
    command = fakedet_command("resume", str(resumed), "--devices", "2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Starting 2 processes" in result.stdout
    final, again = load_checkpoint(out / "latest_model.pt"), load_checkpoint(resumed)
    assert again.state.epoch == 2
    for name, tensor in final.model_state.items():
        assert torch.equal(again.model_state[name], tensor), name


def test_sigterm_reaches_every_rank_and_latest_is_saved(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data")
    out = tmp_path / "run"
    command = fakedet_command(
        *tiny_train_args(data, out, "--batch-size", "4", "--epochs", "500", "--devices", "2")
    )
    code, output = signal_when_written(command, out / "latest_model.pt")
    assert code == 143, output
    assert "Stopped by SIGTERM" in output
    assert load_checkpoint(out / "latest_model.pt").state.global_step >= 2
