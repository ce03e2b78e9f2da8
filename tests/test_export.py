"""Export (SPEC 14): both models in every format reproduce the checkpoint's scores, with the
calibration inside, and an exported file scores images as the checkpoint does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_image
from fakedet.checkpoints.calibration import Calibration
from fakedet.checkpoints.files import load_checkpoint, save_checkpoint
from fakedet.errors import UsageError
from fakedet.evaluation.calibration import fit_calibration
from fakedet.export.writer import CalibratedDetector, export_model
from fakedet.inference.exported import exported_checkpoint, load_exported
from fakedet.inference.metadata import PARITY_LIMIT, SUFFIXES, ExportError
from fakedet.inference.predictor import load_detector, predict_images
from fakedet.models import create_model
from fakedet.sources.samples import IMAGE_SUFFIXES

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_0.1.0.pt"
HAS_ONNXRUNTIME = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_onnx = pytest.mark.skipif(
    not HAS_ONNXRUNTIME, reason='onnx/onnxruntime absent: pip install -e ".[onnx]"'
)
FORMATS = [
    pytest.param("onnx", marks=needs_onnx),
    "torchscript",
    "safetensors",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 0.1.0 fixture (fast, 64 px) and a full model with fresh weights in the same run."""
    folder = tmp_path_factory.mktemp("checkpoints")
    fast = load_checkpoint(FIXTURE)
    save_checkpoint(folder / "fast.pt", fast)
    torch.manual_seed(0)
    full = load_checkpoint(FIXTURE)
    full.config = full.config.model_copy(update={"mode": "full"})
    full.model_state = create_model("full", img_size=64).state_dict()
    save_checkpoint(folder / "full.pt", full)
    return {"fast": folder / "fast.pt", "full": folder / "full.pt"}


def demo_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:12]


@pytest.fixture(scope="module")
def parity_batch(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    from fakedet.data.transforms import EvalTransform, load_rgb
    from fakedet.demo.dataset import build_demo_dataset

    root = tmp_path_factory.mktemp("parity")
    build_demo_dataset(root, num_images=12, img_size=64, seed=1)
    transform = EvalTransform(64)
    return torch.stack([transform(load_rgb(str(p))) for p in demo_images(root)]).float() / 255


@torch.no_grad()
def pytorch_outputs(checkpoint: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    model, _ = load_detector(checkpoint, "cpu")
    return model(images)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_export_reproduces_the_checkpoint(
    mode: str, fmt: str, checkpoints: dict[str, Path], parity_batch: torch.Tensor, tmp_path: Path
) -> None:
    output = tmp_path / f"model{SUFFIXES[fmt]}"
    result = export_model(checkpoints[mode], fmt, output, parity_batch)
    assert result.path == output and output.is_file()
    assert result.max_diff <= PARITY_LIMIT
    model, metadata = load_exported(output, "cpu")
    assert (metadata.mode, metadata.img_size, metadata.calibration) == (mode, 64, None)
    expected = pytorch_outputs(checkpoints[mode], parity_batch[:5])  # a batch size not traced
    got = model(parity_batch[:5])
    # The export's own contract (PARITY_LIMIT): ONNX Runtime's FFT rounds differently, and the
    # coherence branch's BatchNorm scales its features' rounding up (1.1e-5 measured on full).
    torch.testing.assert_close(got["realness"], expected["score"], atol=PARITY_LIMIT, rtol=0)
    torch.testing.assert_close(got["score"], expected["score"], atol=PARITY_LIMIT, rtol=0)
    # Logits are unbounded and carry one more term, the patch read's pooled logit, after the
    # full model's attention: 1.2e-4 seen on full's ONNX export, its realness within 1e-4.
    torch.testing.assert_close(got["logits"], expected["logits"], atol=2e-4, rtol=0)


@needs_onnx
def test_onnx_scores_each_image_of_a_large_batch_as_pytorch_does(
    checkpoints: dict[str, Path], parity_batch: torch.Tensor, tmp_path: Path
) -> None:
    # ONNX Runtime ran the Scatter-add that index_add exported to on several threads, with a race
    # on repeated indices: from about 250k updates (a batch of 64 at 64 px) the radial profiles
    # came out wrong and a trained model's realness moved by up to 0.99. The radial means are
    # matrix products now; a full model with a non-zero spectrum read, so both profiles count.
    import onnx

    checkpoint = load_checkpoint(checkpoints["full"])
    torch.manual_seed(1)
    model = create_model("full", img_size=64)
    with torch.no_grad():
        model.coherence_branch.spectrum_linear.weight.normal_(0, 1e-3)
    checkpoint.model_state = model.state_dict()
    save_checkpoint(tmp_path / "full.pt", checkpoint)
    output = export_model(tmp_path / "full.pt", "onnx", tmp_path / "m.onnx", parity_batch).path
    reductions = [
        attribute.s
        for node in onnx.load(str(output)).graph.node
        if node.op_type.startswith("Scatter")
        for attribute in node.attribute
        if attribute.name == "reduction"
    ]
    assert b"add" not in reductions
    images = torch.rand(128, 3, 64, 64)
    expected = pytorch_outputs(tmp_path / "full.pt", images)
    got = load_exported(output, "cpu")[0](images)
    torch.testing.assert_close(got["logits"], expected["logits"], atol=1e-3, rtol=0)
    torch.testing.assert_close(got["score"], expected["score"], atol=PARITY_LIMIT, rtol=0)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_torchscript_export_names_no_device(
    mode: str, checkpoints: dict[str, Path], parity_batch: torch.Tensor, tmp_path: Path
) -> None:
    # A traced graph that creates a tensor "on cpu" (torch.ones(..., device=x.device) while
    # tracing) keeps that device: loaded on CUDA, the export then fails on mixed devices. The
    # graph may hold tensor constants (moved by map_location), never a device. Fresh weights:
    # the fast fixture is 0.1.0's, without the spectral-coherence branch.
    checkpoint = load_checkpoint(checkpoints[mode])
    checkpoint.model_state = create_model(mode, img_size=64).state_dict()
    save_checkpoint(tmp_path / "model.pt", checkpoint)
    output = export_model(
        tmp_path / "model.pt", "torchscript", tmp_path / "m.ts", parity_batch
    ).path
    graph = str(torch.jit.load(str(output)).inlined_graph)
    assert "Device = prim::Constant" not in graph


class ScoresAsGiven(torch.nn.Module):
    """A stand-in detector whose raw score is its input, to probe the calibration's edges."""

    def forward(self, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": scores, "logits": torch.zeros(len(scores), 2)}


def fitted_calibration(raw: np.ndarray, method: str) -> Calibration:
    rng = np.random.default_rng(0)
    # Synthetic labels spread around the real scores, so the fitted map is not the identity.
    synthetic = np.concatenate([raw, np.clip(raw + rng.normal(0, 0.05, raw.shape), 0, 1)])
    return fit_calibration(synthetic, np.arange(len(synthetic)) % 2, method, "eer")


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibration_as_graph_ops_equals_calibration_apply(
    method: str, checkpoints: dict[str, Path], parity_batch: torch.Tensor
) -> None:
    model, _ = load_detector(checkpoints["fast"], "cpu")
    raw = pytorch_outputs(checkpoints["fast"], parity_batch)["score"].double().numpy()
    calibration = fitted_calibration(raw, method)
    with torch.no_grad():
        realness, _, _ = CalibratedDetector(model, calibration)(parity_batch)
    np.testing.assert_allclose(realness.double().numpy(), calibration.apply(raw), atol=1e-6)
    # Beyond the fitted range too: isotonic clamps, the logit maps clip at EPSILON.
    edges = torch.tensor([0.0, 1e-9, 0.25, 1 - 1e-9, 1.0])
    realness, _, _ = CalibratedDetector(ScoresAsGiven(), calibration)(edges)
    np.testing.assert_allclose(
        realness.double().numpy(), calibration.apply(edges.double().numpy()), atol=1e-6
    )


@pytest.mark.parametrize(
    ("method", "fmt"),
    [
        pytest.param("isotonic", "onnx", marks=needs_onnx),
        ("platt", "torchscript"),
        ("temperature", "safetensors"),
    ],
)
def test_export_builds_the_calibration_in(
    method: str, fmt: str, checkpoints: dict[str, Path], parity_batch: torch.Tensor, tmp_path: Path
) -> None:
    raw = pytorch_outputs(checkpoints["fast"], parity_batch)["score"].double().numpy()
    calibration = fitted_calibration(raw, method)
    checkpoint = load_checkpoint(checkpoints["fast"])
    checkpoint.calibration = calibration
    save_checkpoint(tmp_path / "calibrated.pt", checkpoint)
    output = tmp_path / f"calibrated{SUFFIXES[fmt]}"
    export_model(tmp_path / "calibrated.pt", fmt, output, parity_batch)
    model, metadata = load_exported(output, "cpu")
    assert metadata.calibration == calibration
    assert metadata.threshold == calibration.threshold
    got = model(parity_batch)["realness"].double().numpy()
    np.testing.assert_allclose(got, calibration.apply(raw), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_on_an_export_matches_the_checkpoint(
    fmt: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from fakedet.demo.dataset import build_demo_dataset

    build_demo_dataset(tmp_path / "images", num_images=8, img_size=64, seed=2)
    images = demo_images(tmp_path / "images")
    output = export_model(checkpoints["fast"], fmt, tmp_path / f"model{SUFFIXES[fmt]}").path
    model, metadata = load_exported(output, "cpu")
    reference, checkpoint = load_detector(checkpoints["fast"], "cpu")
    expected = predict_images(reference, images, checkpoint.img_size, num_workers=0)
    got = predict_images(model, images, metadata.img_size, num_workers=0)
    assert [p.verdict for p in got] == [p.verdict for p in expected]
    np.testing.assert_allclose(
        [p.realness for p in got], [p.realness for p in expected], atol=1e-5, rtol=0
    )


def test_safetensors_loads_as_a_checkpoint(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    output = export_model(checkpoints["full"], "safetensors", tmp_path / "m.safetensors").path
    loaded = exported_checkpoint(output)
    original = load_checkpoint(checkpoints["full"])
    assert loaded.config == original.config
    assert loaded.model_state.keys() == original.model_state.keys()
    for name, value in original.model_state.items():
        assert torch.equal(loaded.model_state[name], value)


def test_export_cli_prints_parity_and_writes_beside_the_checkpoint(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    import typer

    from fakedet.cli.export import export

    app = typer.Typer()
    app.command()(export)
    app.command("other")(lambda: None)  # two commands, so Typer keeps the name
    checkpoint = tmp_path / "run.pt"
    checkpoint.write_bytes(checkpoints["fast"].read_bytes())
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run.ts").is_file()
    assert "max abs realness difference" in result.output
    # Without --format, the output's suffix names it.
    result = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "m.ts")])
    assert result.exit_code == 0, result.output
    assert "(torchscript," in " ".join(result.output.split())
    assert torch.jit.load(str(tmp_path / "m.ts")) is not None


def test_bad_format_or_suffix_is_a_usage_error(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="--format 'tflite'"):
        export_model(checkpoints["fast"], "tflite")
    with pytest.raises(UsageError, match=r"must end in \.ts"):
        export_model(checkpoints["fast"], "torchscript", Path("model.onnx"))


def test_export_beyond_the_parity_limit_fails_and_removes_the_file(
    checkpoints: dict[str, Path],
    parity_batch: torch.Tensor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fakedet.export.writer as export_module

    monkeypatch.setattr(export_module, "parity_difference", lambda *args: 3e-4)
    output = tmp_path / "model.ts"
    with pytest.raises(ExportError, match=r"limit 0\.0001") as caught:
        export_model(checkpoints["fast"], "torchscript", output, parity_batch)
    assert caught.value.exit_code == 1
    assert not output.exists()


def test_onnx_without_onnxruntime_names_the_extra(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def refuse_onnxruntime(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_onnxruntime)
    with pytest.raises(UsageError, match=r'pip install -e "\.\[onnx\]"') as caught:
        export_model(checkpoints["fast"], "onnx")
    assert caught.value.exit_code == 2


def test_predict_command_on_a_safetensors_export_matches_the_checkpoint(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fakedet.cli import app

    runner = CliRunner()
    folder = tmp_path / "images"
    for number in range(3):
        write_image(folder / f"{number}.png", number)
    exported = export_model(FIXTURE, "safetensors", tmp_path / "model.safetensors").path
    rows = {}
    for model in (FIXTURE, exported):
        result = runner.invoke(app, ["predict", str(model), str(folder), "--json", "--raw"])
        assert result.exit_code == 0, result.output
        rows[model] = json.loads(result.stdout)
    for ours, theirs in zip(rows[FIXTURE], rows[exported], strict=True):
        assert ours["verdict"] == theirs["verdict"]
        assert ours["raw"] == pytest.approx(theirs["raw"], abs=1e-5)


@needs_onnx
def test_torch_free_onnx_predict_matches_the_checkpoint(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """`predict MODEL.onnx` scores with numpy and ONNX Runtime alone: the same views, averaging,
    calibration and verdicts as the checkpoint scored in PyTorch, with one view and with five."""
    from fakedet.demo.dataset import build_demo_dataset
    from fakedet.inference.onnx_scoring import OnnxDetector, predict_onnx

    build_demo_dataset(tmp_path / "images", num_images=8, img_size=96, seed=3)
    images = demo_images(tmp_path / "images")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = [*images, broken]
    output = export_model(checkpoints["fast"], "onnx", tmp_path / "model.onnx").path
    reference, checkpoint = load_detector(checkpoints["fast"], "cpu")
    detector = OnnxDetector(output, "cpu")
    for crops in (1, 5):
        expected = predict_images(
            reference, images, checkpoint.img_size, num_workers=0, crops=crops
        )
        got = predict_onnx(detector, images, batch_size=3, crops=crops)
        assert [p.path for p in got] == [p.path for p in expected]
        assert [p.verdict for p in got] == [p.verdict for p in expected]
        assert got[-1].verdict == "unreadable" and got[-1].error
        np.testing.assert_allclose(
            [p.realness for p in got[:-1]], [p.realness for p in expected[:-1]], atol=1e-5, rtol=0
        )
