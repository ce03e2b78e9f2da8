"""CUDA paths: AMP training (fp16 + GradScaler, bf16), fp32 spectra under autocast, and a real
out-of-memory. Marked `gpu`; every test skips on a machine without CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_train_args
from fakedet.checkpoints.files import load_checkpoint
from fakedet.cli import app
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


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_coherence_branch_on_cuda_matches_cpu_and_stays_fp32(mode: str) -> None:
    # cuFFT and the CPU's pocketfft must agree on the branch's profiles, and fp16 autocast must
    # not reach the FFTs (cuFFT in half precision takes power-of-two sizes only and loses the
    # log-power tails the logits read).
    torch.manual_seed(0)
    model = create_model(mode, img_size=96).eval()
    images = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        expected = model.coherence_branch.profiles(images)
        expected_score = model(images)["score"]
        model = model.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            found = model.coherence_branch.profiles(images.cuda())
            score = model(images.cuda())["score"]
    for cpu, cuda in zip(expected, found, strict=True):
        assert cuda.dtype == torch.float32
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-4)
    assert score.isfinite().all()
    torch.testing.assert_close(score.float().cpu(), expected_score, rtol=0, atol=5e-3)


def test_every_export_predicts_on_cuda_as_the_checkpoint_does(
    demo_dataset: Path, tmp_path: Path
) -> None:
    # TorchScript traced on the CPU once kept "cpu" in its graph and failed on CUDA; ONNX
    # Runtime once raced on the radial profiles. `fakedet predict --device cuda` on each export.
    import pandas as pd

    run = tmp_path / "run"
    result = runner.invoke(app, _cuda_args(demo_dataset, run, "--epochs", "1"))
    assert result.exit_code == 0, result.output
    checkpoint = run / "best_model.pt"
    images = demo_dataset / "train"
    tables = {}
    for name in ("best_model.pt", "m.ts", "m.safetensors", "m.onnx"):
        source = checkpoint if name == "best_model.pt" else tmp_path / name
        if name != "best_model.pt":
            if name.endswith(".onnx") and importlib.util.find_spec("onnxruntime") is None:
                continue
            exported = runner.invoke(app, ["export", str(checkpoint), "-o", str(source)])
            assert exported.exit_code == 0, exported.output
        csv = tmp_path / f"{name}.csv"
        args = ["predict", str(source), str(images), "--device", "cuda", "--output", str(csv)]
        predicted = runner.invoke(app, args)
        assert predicted.exit_code == 0, predicted.output
        tables[name] = pd.read_csv(csv).set_index("path")
    expected = tables.pop("best_model.pt")
    for name, table in tables.items():
        difference = (table["realness"] - expected["realness"]).abs().max()
        assert len(table) == len(expected) and difference < 1e-3, (name, difference)


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
