"""The input pipeline's speed-ups: torchvision JPEG decoding, the decoded cache and its command,
batch augmentation on the device, and the compile switch. CUDA paths are GPU-marked."""

from __future__ import annotations

import io
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fakedet.cli import app
from fakedet.config import TrainingConfig
from fakedet.data.dataset import ImageDataset
from fakedet.data.decode import decode_rgb
from fakedet.data.decoded_cache import build_decoded_cache, open_decoded_cache
from fakedet.data.gpu_augment import BatchAugment, gaussian_blur, jpeg_like
from fakedet.data.images import load_rgb
from fakedet.data.transforms import EvalTransform
from tests.conftest import make_folder_dataset

runner = CliRunner()
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def photo(size: int = 96, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8 with smooth structure and some noise, like a small photo."""
    generator = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)
    base = (ramp[None, :, None] + ramp[:, None, None] * np.array([0.2, 0.5, 0.8])) / 2
    noisy = base + generator.normal(0, 12, (size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_torchvision_decodes_a_jpeg_to_pillows_pixels(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    path = tmp_path / "a.jpg"
    Image.fromarray(photo()).save(path, quality=85)
    assert np.array_equal(np.asarray(decode_rgb(str(path))), np.asarray(load_rgb(str(path))))


def test_a_torchvision_without_image_decoders_falls_back_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchvision = pytest.importorskip("torchvision")
    from fakedet.data.decode import torchvision_io

    path = tmp_path / "a.jpg"
    Image.fromarray(photo()).save(path, quality=85)
    monkeypatch.setattr(torchvision, "io", types.SimpleNamespace())  # decoders removed
    torchvision_io.cache_clear()
    try:
        assert torchvision_io() is None
        assert np.array_equal(np.asarray(decode_rgb(str(path))), np.asarray(load_rgb(str(path))))
    finally:
        monkeypatch.undo()
        torchvision_io.cache_clear()
    assert torchvision_io() is not None


def test_transparent_png_goes_through_pillow_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba).save(path)
    assert np.asarray(decode_rgb(str(path))).min() == 255


def test_the_cache_command_decodes_once_then_reuses(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=2, size=48)
    first = runner.invoke(app, ["cache", str(root)])
    assert first.exit_code == 0, first.output
    assert "Decoded 8 images" in first.output
    again = runner.invoke(app, ["cache", str(root)])
    assert again.exit_code == 0 and "Up to date: 8 images" in again.output


def test_cached_pixels_are_the_decoded_ones_and_a_changed_file_is_decoded_again(
    tmp_path: Path,
) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=2, size=48)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    build_decoded_cache(root, paths)
    reader = open_decoded_cache(root).reader(paths, fallback=lambda path: pytest.fail(path))
    assert np.array_equal(np.asarray(reader(paths[0])), np.asarray(load_rgb(paths[0])))
    Image.fromarray(photo(48, seed=5)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))  # a changed file: other size or mtime
    fresh = open_decoded_cache(root).reader(paths, fallback=load_rgb)
    assert paths[1] not in fresh.fresh
    assert np.array_equal(np.asarray(fresh(paths[1])), photo(48, seed=5))
    assert build_decoded_cache(root, paths).rebuilt  # and the command decodes it anew


def test_max_side_keeps_the_centre_pixels_unresampled(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "train" / "real").mkdir(parents=True)
    path = root / "train" / "real" / "wide.png"
    pixels = photo(96)
    Image.fromarray(pixels[:, :]).save(path)
    build_decoded_cache(root, [str(path)], max_side=64)
    image = open_decoded_cache(root).reader([str(path)])(str(path))
    assert image.size == (64, 64)
    assert np.array_equal(np.asarray(image), pixels[16:80, 16:80])


def test_a_dataset_decodes_through_the_cache_reader(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=1, size=48, with_val=False)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    build_decoded_cache(root, paths)
    reader = open_decoded_cache(root).reader(paths, fallback=lambda path: pytest.fail(path))
    from fakedet.sources.samples import Sample

    dataset = ImageDataset([Sample(paths[0], 1.0)], EvalTransform(32), decode=reader)
    expected = EvalTransform(32)(load_rgb(paths[0]))
    assert torch.equal(dataset[0]["image"], expected)


def test_jpeg_like_loses_what_pillows_jpeg_loses() -> None:
    original = Image.fromarray(photo(64))
    images = torch.from_numpy(np.array(original)).permute(2, 0, 1)[None].float() / 255
    for quality in (30, 90):
        buffer = io.BytesIO()
        original.save(buffer, format="JPEG", quality=quality)
        pillow = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255
        ours = jpeg_like(images, torch.tensor([quality]))[0].permute(1, 2, 0).numpy()
        # Within about one 8-bit level of Pillow on average, and as far from the original.
        assert np.abs(ours - pillow).mean() < 2 / 255
        loss_ours = np.abs(ours - np.asarray(original) / 255).mean()
        loss_pillow = np.abs(pillow - np.asarray(original) / 255).mean()
        assert abs(loss_ours - loss_pillow) < 0.3 * loss_pillow


def test_blur_sigma_zero_is_the_identity_and_a_blur_removes_detail() -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(images, torch.tensor([0.0, 2.0]), radius=6)
    torch.testing.assert_close(blurred[0], images[0])
    detail = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert detail(blurred[1]) < 0.3 * detail(images[1])


def test_batch_augmentation_depends_on_the_seed_and_step_only() -> None:
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    augment = BatchAugment(seed=3, hflip=True, blur_prob=0.5, jpeg_prob=0.5, blur_sigma_max=2.0)
    first = augment(images, step=7)
    assert torch.equal(first, augment(images, step=7))  # a resumed run draws the same
    assert not torch.equal(first, augment(images, step=8))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert bool(((first >= 0) & (first <= 1)).all())
    off = BatchAugment(seed=3, hflip=False, blur_prob=0.0, jpeg_prob=0.0, blur_sigma_max=2.0)
    assert torch.equal(off(images, step=7), images)


def test_compile_wraps_what_trains_and_leaves_the_saved_module_bare(tmp_path: Path) -> None:
    from fakedet.sources.layouts import index_dataset
    from fakedet.training.build import build_runtime, build_training
    from fakedet.training.logging import Reporter

    root = make_folder_dataset(tmp_path / "data", per_class=2, size=64)
    config = TrainingConfig(
        data_root=root, img_size=64, batch_size=2, device="cpu", compile=True, num_workers=0
    )
    parts, _ = build_training(config, build_runtime("cpu"), index_dataset(config), Reporter())
    # torch.compile is lazy: nothing compiles until the first step.
    assert isinstance(parts.model, torch._dynamo.eval_frame.OptimizedModule)
    assert parts.model._orig_mod is parts.module
    assert not isinstance(parts.module, torch._dynamo.eval_frame.OptimizedModule)
    assert parts.augment is None  # on the CPU the workers augment, whatever gpu_augment says


def test_channels_last_trains_the_same_weights_in_the_other_layout(tmp_path: Path) -> None:
    from fakedet.sources.layouts import index_dataset
    from fakedet.training.build import build_runtime, build_training
    from fakedet.training.logging import Reporter

    root = make_folder_dataset(tmp_path / "data", per_class=4, size=64)
    config = TrainingConfig(
        data_root=root, img_size=64, batch_size=4, device="cpu", channels_last=True, num_workers=0
    )
    parts, _ = build_training(config, build_runtime("cpu"), index_dataset(config), Reporter())
    convs = [m for m in parts.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    weights = {}
    for layout in ("--channels-last", "--no-channels-last"):
        out = tmp_path / layout
        result = runner.invoke(
            app,
            [
                "train", str(root), "--epochs", "1", "--img-size", "64", "--batch-size", "4",
                "--device", "cpu", layout, "--num-workers", "0", "--no-plots",
                "--no-use-tensorboard", "--output-dir", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        saved = torch.load(out / "latest_model.pt", map_location="cpu", weights_only=True)
        weights[layout] = saved["model_state_dict"]
    # The same steps in another memory layout: equal up to the kernels' rounding.
    for name, value in weights["--channels-last"].items():
        if value.is_floating_point():
            assert torch.allclose(value, weights["--no-channels-last"][name], atol=1e-4), name


def test_compile_and_gpu_augmentation_are_off_unless_asked() -> None:
    config = TrainingConfig(data_root=Path("data"))
    assert config.compile is False and config.gpu_augment is False
    assert config.channels_last is False
    help_text = runner.invoke(app, ["train", "--help"]).output
    for flag in ("--compile", "--gpu-augment", "--channels-last"):
        assert flag in help_text


@pytest.mark.gpu
@cuda
def test_batch_augmentation_on_cuda_never_waits_for_the_host() -> None:
    images = torch.rand(16, 3, 64, 64, device="cuda")
    augment = BatchAugment(seed=0, hflip=True, blur_prob=0.5, jpeg_prob=0.5, blur_sigma_max=3.0)
    augment(images, step=0)  # first call: kernels load
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(images, step=1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == images.shape and bool(torch.isfinite(out).all())


def test_batch_augmentation_builds_no_tensor_from_host_values_after_its_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a GPU such a tensor is a host-to-device copy the host waits for, once per step (the
    # CUDA test above sees it as a synchronising call); here the same rule: refuse them.
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    augment = BatchAugment(seed=0, hflip=True, blur_prob=1.0, jpeg_prob=1.0, blur_sigma_max=3.0)
    first = augment(images, step=0)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a step built a tensor from host values")

    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch.linalg, "inv", refuse)
    assert torch.equal(augment(images, step=0), first)


@pytest.mark.gpu
@cuda
def test_jpeg_like_and_blur_on_cuda_equal_the_cpu() -> None:
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    quality = torch.tensor([30, 50, 75, 100])
    on_cuda = jpeg_like(images.cuda(), quality.cuda()).cpu()
    # Rounding to 8-bit levels can flip a value by one level where CPU and GPU round differently.
    assert (on_cuda - jpeg_like(images, quality)).abs().max() <= 1 / 255 + 1e-6
    sigma = torch.tensor([0.0, 0.5, 1.5, 3.0])
    torch.testing.assert_close(
        gaussian_blur(images.cuda(), sigma.cuda(), 9).cpu(), gaussian_blur(images, sigma, 9)
    )


@pytest.mark.gpu
@cuda
def test_training_on_cuda_with_device_augmentation(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, size=64)
    result = runner.invoke(
        app,
        [
            "train", str(root), "--epochs", "1", "--img-size", "64", "--batch-size", "4",
            "--device", "cuda", "--gpu-augment", "--no-plots",
            "--no-use-tensorboard", "--output-dir", str(tmp_path / "run"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "best_model.pt").is_file()


def test_depthwise_convolutions_run_in_fp32_under_bf16_autocast() -> None:
    from fakedet.models import create_model
    from fakedet.models.layers import DepthwiseConv2d

    torch.manual_seed(0)
    model = create_model("fast", img_size=64).eval()
    depthwise = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    pointwise = [
        m for m in model.modules() if type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1)
    ]
    assert depthwise and pointwise
    assert all(m.groups == m.in_channels > 1 for m in depthwise)
    seen: dict[str, list[torch.dtype]] = {"depthwise": [], "pointwise": []}
    for name, modules in (("depthwise", depthwise), ("pointwise", pointwise)):
        for module in modules:
            module.register_forward_hook(lambda _m, _i, out, n=name: seen[n].append(out.dtype))
    images = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(images)
    # The depthwise ones compute in fp32; the pointwise ones, where the MACs are, in bf16.
    assert set(seen["depthwise"]) == {torch.float32}
    assert set(seen["pointwise"]) == {torch.bfloat16}
    conv = depthwise[0]
    x = torch.rand(2, conv.in_channels, 16, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = conv(x)
    torch.testing.assert_close(inside, torch.nn.functional.conv2d(
        x.float(), conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups
    ))  # fmt: skip
    # Outside autocast it is a plain convolution, with a plain Conv2d's state dict keys.
    assert set(conv.state_dict()) == {"weight"}


def test_attention_uses_the_math_kernel_under_cpu_bf16_autocast_only() -> None:
    from torch.profiler import ProfilerActivity, profile

    from fakedet.models import create_model

    torch.manual_seed(0)
    model = create_model("full", img_size=64).train()
    images = torch.rand(2, 3, 64, 64)

    def attention_ops(autocast: bool) -> set[str]:
        bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
        with profile(activities=[ProfilerActivity.CPU]) as prof, bf16:
            model(images)["logits"].float().sum().backward()
        return {event.key for event in prof.key_averages() if "attention" in event.key}

    # fp32 keeps PyTorch's choice (flash on CPU); bf16 autocast takes the math path, whose
    # backward is batched products, not flash attention's slow bf16 backward.
    assert any("flash" in op for op in attention_ops(False))
    assert not any("flash" in op for op in attention_ops(True))
