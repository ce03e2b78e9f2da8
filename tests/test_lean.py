"""Scoring stays lean: predict imports no training code and none of the heavy libraries, and an
ONNX export is scored without torch. Checked in a fresh interpreter's `sys.modules`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_0.2.0.pt"  # fast, 64 px
# What scoring one image must not pull in: the trainer and its side jobs, and the libraries only
# training, evaluation, plots and the demo data need.
NEVER_FOR_SCORING = (
    "fakedet.training",
    "fakedet.evaluation",
    "fakedet.doctor",
    "fakedet.sources.layouts",
    "fakedet.sources.index_cache",
    "sklearn",
    "scipy",
    "pandas",
    "tensorboard",
    "matplotlib",
    "skimage",
)


def _predict_modules(model: Path, image: Path) -> tuple[set[str], list[dict]]:
    """The modules loaded by `fakedet predict MODEL IMAGE --json`, and its rows."""
    code = (
        "import json, sys\nfrom typer.testing import CliRunner\nfrom fakedet.cli import app\n"
        f"result = CliRunner().invoke(app, ['predict', {str(model)!r}, {str(image)!r}, '--json',"
        " '--device', 'cpu'])\nassert result.exit_code == 0, result.output\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'rows': json.loads(result.stdout)}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    values = json.loads(done.stdout.strip().splitlines()[-1])
    return set(values["modules"]), values["rows"]


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if any(m == name or m.startswith(name + ".") for m in modules)]


def _image(path: Path, size: int = 80) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_predict_with_a_checkpoint_imports_no_training_code(tmp_path: Path) -> None:
    modules, rows = _predict_modules(FIXTURE, _image(tmp_path / "photo.png"))
    assert rows[0]["verdict"] in ("real", "fake")
    assert _loaded(modules, NEVER_FOR_SCORING) == []


def _tiny_onnx(path: Path, img_size: int) -> Path:
    """A hand-built ONNX detector with fakedet's inputs, outputs and metadata (realness = mean
    pixel), so the test needs no exporter."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Identity", ["pooled"], ["raw"]),
        helper.make_node("Identity", ["pooled"], ["realness"]),
        helper.make_node("Unsqueeze", ["pooled", "axis"], ["column"]),
        helper.make_node("Concat", ["column", "column"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, img_size, img_size])],
        [
            helper.make_tensor_value_info("realness", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["N"]),
        ],
        [helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {"mode": "fast", "img_size": img_size, "fakedet_version": "0.2.0"}
    metadata |= {"calibration": None, "threshold": 0.5, "config": {}}
    helper.set_model_props(model, {"fakedet": json.dumps(metadata)})
    onnx.save(model, str(path))
    return path


def test_predict_with_an_onnx_export_imports_no_torch(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx", img_size=32)
    image = tmp_path / "grey.png"
    Image.new("RGB", (48, 40), (204, 204, 204)).save(image)
    modules, rows = _predict_modules(model, image)
    assert _loaded(modules, ("torch", "torchvision", *NEVER_FOR_SCORING)) == []
    # The centre crop of a uniform image: its mean pixel, 204 / 255, is the realness.
    assert rows[0]["realness"] == pytest.approx(204 / 255, abs=1e-5)
    assert rows[0]["verdict"] == "real"
