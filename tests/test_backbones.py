"""Pretrained backbones without network: tiny randomly initialised timm, open_clip and
torchvision models saved to local files and loaded through `--weights`, as a user's are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_folder_dataset, tiny_train_args
from fakedet.cli import app
from fakedet.errors import CheckpointError, UsageError

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

# A CLIP small enough for a test: 64 px, two blocks, a one-layer text tower.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small dataset and a weights file per source, each written the way users get theirs."""
    import torchvision
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18").state_dict(), str(root / "resnet18.safetensors"))
    torch.save(torchvision.models.resnet18().state_dict(), root / "tv_resnet18.pth")
    config = root / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.save(open_clip.create_model("tiny-clip").state_dict(), root / "tiny_clip.pt")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2)
    torch.save(vit.state_dict(), root / "vit_tiny.pth")
    return {
        "data": make_folder_dataset(root / "data", per_class=6),
        "timm": root / "resnet18.safetensors",
        "torchvision": root / "tv_resnet18.pth",
        "open_clip": root / "tiny_clip.pt",
        "vit": root / "vit_tiny.pth",
    }


SPECS = {
    "timm": "timm:resnet18",
    "torchvision": "torchvision:resnet18",
    "open_clip": "open_clip:tiny-clip",
}


def _train(assets: dict[str, Path], output: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, tiny_train_args(assets["data"], output, *extra))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("source", ["timm", "torchvision", "open_clip"])
def test_probe_trains_from_cached_features_and_predicts(
    assets: dict[str, Path], tmp_path: Path, source: str
) -> None:
    from fakedet.inference.describe import describe_checkpoint
    from fakedet.inference.predictor import load_detector, predict_images

    args = ("--backbone", SPECS[source], "--weights", str(assets[source]), "--with-spectral")
    first = _train(assets, tmp_path / "a", *args, "--epochs", "1")
    assert "views computed" in first
    again = _train(assets, tmp_path / "b", *args, "--epochs", "1")
    assert "from the cache" in again and "views computed" not in again
    facts = describe_checkpoint(tmp_path / "b")
    assert facts.backbone is not None and facts.backbone["spec"] == SPECS[source]
    assert len(facts.backbone["weights_sha256"]) == 64 and facts.backbone["frozen_parameters"] > 0
    # The probe checkpoint holds the head alone; the backbone comes from the recorded file.
    saved = torch.load(tmp_path / "b" / "latest_model.pt", weights_only=True)
    assert not any(key.startswith("backbone.") for key in saved["model_state_dict"])
    model, checkpoint = load_detector(tmp_path / "b", "cpu")
    images = sorted((assets["data"] / "val").rglob("*.png"))[:3]
    predictions = predict_images(model, images, checkpoint.img_size, num_workers=0)
    assert all(0.0 <= p.realness <= 1.0 for p in predictions)


def _same_run(first: Path, second: Path) -> None:
    """Bit-equal weights and optimizer moments, and the same history but for timings."""
    a = torch.load(first / "latest_model.pt", weights_only=True)
    b = torch.load(second / "latest_model.pt", weights_only=True)
    assert a["model_state_dict"].keys() == b["model_state_dict"].keys()
    for key, value in a["model_state_dict"].items():
        assert torch.equal(b["model_state_dict"][key], value), key
    for number, moments in a["optimizer_state_dict"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(b["optimizer_state_dict"]["state"][number][name], value), name
    timing = {"images_per_sec", "epoch_time_s"}
    rows = [
        [{k: v for k, v in row.items() if k not in timing} for row in json.loads(path.read_text())]
        for path in (first / "training_history.json", second / "training_history.json")
    ]
    assert rows[0] == rows[1]


def test_probe_resumes_bit_exact_with_augmented_views_and_an_unreadable_image(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    data = make_folder_dataset(tmp_path / "data", per_class=5)
    broken = data / "train" / "real" / "0.png"
    broken.write_bytes(broken.read_bytes()[:200])  # the header reads, the pixels do not
    args = ["--backbone", "timm:resnet18", "--weights", str(assets["timm"]), "--probe-augment"]
    args += ["2", "--epochs", "3", "--save-every", "1", "--batch-size", "4"]
    _train({"data": data}, tmp_path / "straight", *args)
    assert "0.png" in (tmp_path / "straight" / "skipped_files.txt").read_text()
    resumed = ["resume", str(tmp_path / "straight" / "checkpoint_epoch_1.pt")]
    result = CliRunner().invoke(app, [*resumed, "--output-dir", str(tmp_path / "split")])
    assert result.exit_code == 0, result.output
    # The unreadable image is never cached: it is tried again, and skipped again.
    assert "2 views computed" in result.output and "19 images from the cache" in result.output
    _same_run(tmp_path / "straight", tmp_path / "split")


def test_a_cpu_probe_trains_its_head_on_one_thread(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakedet.runtime import trains_head_only
    from fakedet.training.trainer import Trainer

    threads: list[int] = []
    fit = Trainer.fit

    def counted_fit(trainer: Trainer) -> dict:
        threads.append(torch.get_num_threads())
        return fit(trainer)

    monkeypatch.setattr(Trainer, "fit", counted_fit)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _train(assets, tmp_path / "run", "--backbone", "timm:resnet18", "--weights",
               str(assets["timm"]), "--epochs", "1")  # fmt: skip
        assert threads == [1] and torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(before)
    # The extraction before, a fine-tune, a GPU and the built-in models keep every thread.
    assert not trains_head_only("timm:resnet18", True, torch.device("cpu"))
    assert not trains_head_only("timm:resnet18", False, torch.device("cuda"))
    assert not trains_head_only(None, False, torch.device("cpu"))


def test_probe_and_whole_model_read_the_same_features(assets: dict[str, Path]) -> None:
    """The probe trained on cached features is the head of the model that scores images."""
    from fakedet.models.backbones import BackboneChoice, build_backbone_detector

    choice = BackboneChoice("timm", "resnet18", assets["timm"], None, False, 0, True)
    model = build_backbone_detector(choice, 64).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(images)["score"]
        from_features = super(type(model), model).forward(model.features(images))["score"]
    torch.testing.assert_close(whole, from_features)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_changed_weights_file_is_named_and_refused(assets: dict[str, Path], tmp_path: Path) -> None:
    from fakedet.inference.predictor import load_detector

    weights = tmp_path / "copy.safetensors"
    weights.write_bytes(assets["timm"].read_bytes())
    _train(
        assets,
        tmp_path / "run",
        "--backbone",
        "timm:resnet18",
        "--weights",
        str(weights),
        "--epochs",
        "1",
    )
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match=r"copy\.safetensors has changed"):
        load_detector(tmp_path / "run", "cpu")
    result = CliRunner().invoke(app, ["inspect-checkpoint", str(tmp_path / "run")])
    assert result.exit_code == 2 and "has changed" in result.output
    weights.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_detector(tmp_path / "run", "cpu")


def test_feature_cache_recomputes_a_changed_image(assets: dict[str, Path], tmp_path: Path) -> None:
    from fakedet.data.feature_cache import FeatureKey, cached_features
    from fakedet.sources.samples import Sample

    images = sorted((assets["data"] / "train").rglob("*.png"))[:3]
    copies = []
    for number, image in enumerate(images):
        copies.append(tmp_path / f"{number}.png")
        copies[-1].write_bytes(image.read_bytes())
    samples = [Sample(str(path), 1.0) for path in copies]
    key = FeatureKey("timm:resnet18", None, 64, "{}", False, "centre")
    seen: list[int] = []

    def compute(todo: list[Sample]) -> tuple[torch.Tensor, dict[int, str]]:
        seen.append(len(todo))
        return torch.ones(len(todo), 1, 4) * len(seen), {}

    notes: list[str] = []
    first = cached_features(samples, tmp_path, key, compute, notes.append)
    copies[1].write_bytes(images[2].read_bytes())  # changed size: computed again
    second = cached_features(samples, tmp_path, key, compute, notes.append)
    assert seen == [3, 1] and first.computed == 3 and second.computed == 1
    assert second.features[0].sum() == first.features[0].sum() and second.features[1, 0, 0] == 2
    other = FeatureKey("timm:resnet18", None, 96, "{}", False, "centre")
    assert cached_features(samples, tmp_path, other, compute, notes.append).computed == 3


@pytest.mark.slow
def test_lora_finetune_resumes_where_the_run_went_and_exports_onnx(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    pytest.importorskip("onnxruntime")
    from fakedet.export.writer import export_model

    args = ("--backbone", "timm:vit_tiny_patch16_224", "--weights", str(assets["vit"]))
    args += ("--finetune", "--lora-rank", "2", "--batch-size", "4")
    _train(assets, tmp_path / "straight", *args, "--save-every", "1")
    # Continue the run from its epoch-1 checkpoint, elsewhere: it must end where the run did.
    resumed = ["resume", str(tmp_path / "straight" / "checkpoint_epoch_1.pt")]
    result = CliRunner().invoke(app, [*resumed, "--output-dir", str(tmp_path / "split")])
    assert result.exit_code == 0, result.output
    split = torch.load(tmp_path / "split" / "latest_model.pt", weights_only=True)
    assert any("lora_A" in key for key in split["model_state_dict"])
    _same_run(tmp_path / "straight", tmp_path / "split")
    exported = export_model(
        tmp_path / "split", "onnx", tmp_path / "lora.onnx", torch.rand(3, 3, 64, 64)
    )
    assert exported.max_diff <= 1e-4


def test_probe_exports_onnx_and_safetensors_with_the_backbone_baked_in(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from fakedet.export.writer import export_model
    from fakedet.inference.predictor import load_detector

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(assets["timm"].read_bytes())
    _train(
        assets,
        tmp_path / "run",
        "--backbone",
        "timm:resnet18",
        "--weights",
        str(weights),
        "--epochs",
        "1",
    )
    batch = torch.rand(3, 3, 64, 64)
    assert export_model(tmp_path / "run", "onnx", tmp_path / "p.onnx", batch).max_diff <= 1e-4
    export_model(tmp_path / "run", "safetensors", tmp_path / "p.safetensors", batch)
    weights.unlink()  # the exports need the weights file no more
    model, _ = load_detector(tmp_path / "p.safetensors", "cpu")
    assert model(batch)["score"].shape == (3,)


def test_full_finetune_trains_the_backbone_at_a_lower_lr(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    args = ("--backbone", "torchvision:resnet18", "--weights", str(assets["torchvision"]))
    _train(
        assets, tmp_path / "run", *args, "--finetune", "--backbone-lr-scale", "0.5", "--epochs", "1"
    )
    saved = torch.load(tmp_path / "run" / "latest_model.pt", weights_only=True)
    before = torch.load(assets["torchvision"], weights_only=True)["conv1.weight"]
    assert not torch.equal(saved["model_state_dict"]["backbone.conv1.weight"], before)
    groups = saved["optimizer_state_dict"]["param_groups"]
    assert len(groups) == 4  # backbone (decay, no decay), head (decay, no decay)
    assert [len(group["params"]) for group in groups[2:]] == [1, 1]  # head weight, head bias
    assert groups[0]["lr"] == pytest.approx(0.5 * groups[2]["lr"])
    # The head is the optimizer's too: a weight outside it would never move, and its gradient,
    # never cleared, would grow inside the clipping norm. Every weight there has stepped.
    stepped = saved["optimizer_state_dict"]["state"]
    assert all(index in stepped for group in groups for index in group["params"])


def test_init_from_starts_a_new_run_from_a_checkpoint(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    _train(assets, tmp_path / "first", "--epochs", "1")
    data = make_folder_dataset(tmp_path / "new", per_class=4)
    args = ["train", str(data), "--init-from", str(tmp_path / "first" / "latest_model.pt")]
    args += ["--output-dir", str(tmp_path / "second"), "--epochs", "1", "--batch-size", "4"]
    args += ["--num-workers", "0", "--no-plots", "--no-use-tensorboard"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "second" / "latest_model.pt", weights_only=True)
    assert saved["config"]["init_from"] == str(tmp_path / "first" / "latest_model.pt")
    assert saved["config"]["lr"] == 2e-5 and saved["config"]["img_size"] == 64
    assert saved["epoch"] == 1 and len(saved["train_history"]) == 1


def test_no_weights_offline_is_one_sentence_naming_the_file(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(
        app, tiny_train_args(assets["data"], tmp_path / "run", "--backbone", "timm:resnet18")
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "Could not download the pretrained weights of timm:resnet18" in message
    assert "huggingface.co/timm/resnet18" in message and "--weights FILE" in message
    assert "Traceback" not in result.output


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fakedet.models.backbones.spec import require_source

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "timm" else real(name)
    )
    with pytest.raises(UsageError, match=r'pip install -e "\.\[backbones\]"'):
        require_source("timm")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"backbone": "keras:resnet"}, "must be SOURCE:NAME"),
        ({"backbone": "timm:resnet18", "lora_rank": 4}, "lora_rank 4 applies only with --finetune"),
        ({"finetune": True}, "finetune given without --backbone"),
    ],
)
def test_bad_backbone_settings_are_one_sentence(settings: dict, fragment: str) -> None:
    from fakedet.config_files import build_config
    from fakedet.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment):
        build_config({"data_root": "x", **settings})
