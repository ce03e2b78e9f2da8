"""A backbone fine-tune gets the built-in models' machinery: DDP through torchrun (`--devices 2`,
gloo on CPU) with LoRA adapters, and bf16 autocast (`--use-amp`) where the CPU has it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import fakedet_command, make_folder_dataset, tiny_train_args
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app

timm = pytest.importorskip("timm")
pytest.importorskip("peft")

VIT = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-block ViT at 64 px saved as a user's weights file, and a small dataset."""
    root = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2)
    torch.save(model.state_dict(), root / "vit.pth")
    return {"weights": root / "vit.pth", "data": make_folder_dataset(root / "data", per_class=6)}


def test_lora_finetune_trains_in_two_processes(vit: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(vit["data"], out, "--batch-size", "4", "--devices", "2")
    args += ["--backbone", VIT, "--weights", str(vit["weights"]), "--finetune", "--lora-rank", "2"]
    result = subprocess.run(fakedet_command(*args), capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 processes (DDP)" in result.stdout
    # 12 train images, 6 per rank: batches of 4 and 2, one step each per epoch.
    assert "effective batch 8" in result.stdout
    assert result.stdout.count("epoch 2: train loss") == 1  # rank 0 alone reports
    state = load_checkpoint(out / "latest_model.pt")
    assert state.state.epoch == 2
    weights = state.model_state
    assert any("lora_A" in key for key in weights)
    # The adapters moved from their start (lora_B starts at zero) in both processes' steps.
    assert any(value.abs().sum() > 0 for key, value in weights.items() if "lora_B" in key)


def test_finetune_under_bf16_autocast(vit: dict[str, Path], tmp_path: Path) -> None:
    from fakedet.hardware import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: --use-amp would train in fp32")
    args = tiny_train_args(vit["data"], tmp_path / "run", "--batch-size", "4", "--epochs", "1")
    args += ["--backbone", VIT, "--weights", str(vit["weights"]), "--finetune", "--use-amp"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bf16 autocast" in result.output
    history = load_checkpoint(tmp_path / "run" / "latest_model.pt").state.history
    assert history and all(torch.isfinite(torch.tensor(row["train_loss"])) for row in history)
