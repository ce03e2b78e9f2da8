"""CUDA paths: AMP training (fp16 + GradScaler, bf16), fp32 spectra under autocast, and a real
out-of-memory. Marked `gpu`; every test skips on a machine without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_train_args
from fakedet.cli import app
from fakedet.engine.checkpoint import load_checkpoint
from fakedet.models import create_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
runner = CliRunner()


def _cuda_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [*tiny_train_args(data, out, *extra), "--device", "cuda"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_amp_training_on_cuda(folder_dataset: Path, tmp_path: Path, dtype: str) -> None:
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    out = tmp_path / dtype
    result = runner.invoke(app, _cuda_args(folder_dataset, out, "--use-amp", "--amp-dtype", dtype))
    assert result.exit_code == 0, result.output
    assert ("GradScaler" in result.output) is (dtype == "fp16")
    state = load_checkpoint(out / "latest_model.pt")
    assert state.state.epoch == 2
    assert all(torch.isfinite(t).all() for t in state.model_state.values())
    if dtype == "fp16":
        assert state.scaler_state["scale"] > 0


def test_spectrum_is_fp32_under_cuda_autocast() -> None:
    model = create_model("full", img_size=64).cuda()
    images = torch.rand(2, 3, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        assert model.spectral_branch.log_spectrum(images).dtype == torch.float32
        assert model.statistical_branch.features(images).dtype == torch.float32
        assert model(images)["score"].isfinite().all()


def test_real_cuda_out_of_memory_names_a_smaller_batch(
    folder_dataset: Path, tmp_path: Path
) -> None:
    # A 64 MiB cap makes any GPU run out on batch 16 of the full model at 256 px (~0.3 GB), where
    # a share of the card would not: 0.5% of an H200 is 0.7 GB and the run fit.
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(64 * 1024**2 / total)
    try:
        result = runner.invoke(
            app,
            _cuda_args(
                folder_dataset, tmp_path / "oom", "--full", "--img-size", "256",
                "--batch-size", "16", "--epochs", "1",
            ),
        )  # fmt: skip
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "Out of memory on cuda" in message
    assert "--batch-size 8 --gradient-accumulation-steps 2" in message
