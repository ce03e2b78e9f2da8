"""Hardware advisor: the seed's table as the floor, measured memory, and `fakedet recommend`."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakedet import advisor, memory
from fakedet.advisor import HardwareInfo, recommend
from fakedet.cli import app
from fakedet.memory import MemoryProfile
from fakedet.models.backbones.spec import BackboneChoice

runner = CliRunner()

GPU = HardwareInfo(
    device="cuda",
    device_name="test GPU",
    vram_gb=24.0,
    compute_capability=(8, 6),
    os="Linux",
    cpu_cores=16,
    cpu_bf16=False,
    torch_version="x",
    cuda_version="12",
)
CPU = replace(GPU, device="cpu", vram_gb=None, compute_capability=None, cuda_version=None)


@pytest.mark.parametrize(
    ("vram", "fast", "full"), [(6, 16, 8), (8, 32, 16), (12, 64, 32), (24, 128, 64), (80, 128, 64)]
)
def test_seed_table_rows(vram: float, fast: int, full: int) -> None:
    info = replace(GPU, vram_gb=vram)
    assert (recommend(info, "fast").batch_size, recommend(info, "full").batch_size) == (fast, full)


def test_amp_workers_and_lr_rules() -> None:
    # Ampere and later: fp32 (TF32) trained faster than bf16 autocast on an H200, so no AMP.
    assert not recommend(GPU, "fast").use_amp
    assert not recommend(replace(GPU, compute_capability=(9, 0)), "full").use_amp
    turing = recommend(replace(GPU, compute_capability=(7, 5)), "fast")
    assert turing.use_amp and turing.amp_dtype == "fp16"
    assert not recommend(replace(GPU, compute_capability=(6, 1)), "fast").use_amp
    # A GPU waits on the loader: up to 12 workers there, 4 where the model shares the CPU.
    assert recommend(GPU, "fast").num_workers == 12
    assert recommend(replace(GPU, cpu_cores=64), "fast").num_workers == 12
    assert recommend(CPU, "fast").num_workers == 4
    assert recommend(replace(GPU, os="Windows"), "fast").num_workers == 0
    assert recommend(replace(GPU, cpu_cores=2), "fast").num_workers == 2
    cpu = recommend(CPU, "full")
    assert not cpu.use_amp and cpu.batch_size * cpu.gradient_accumulation_steps == 32
    # Native bf16 on a CPU: AMP for full (1.31x measured), not for fast (0.57-0.96x).
    assert recommend(replace(CPU, cpu_bf16=True), "full").use_amp
    assert not recommend(replace(CPU, cpu_bf16=True), "fast").use_amp
    # LR scales with the effective batch: 128 is 4x the 32 the fp32 base LR is set for.
    assert recommend(GPU, "fast").lr == pytest.approx(4 * advisor.BASE_LR_FP32)
    assert turing.lr == pytest.approx(4 * advisor.BASE_LR_AMP)


def test_autocast_memory_is_counted_with_its_larger_overhead() -> None:
    fp32 = MemoryProfile(activation_bytes_per_image=10 * 1024**2, parameter_count=1000)
    amp = replace(fp32, amp=True)
    ratio = memory.ACTIVATION_OVERHEAD_AMP / memory.ACTIVATION_OVERHEAD
    assert amp.per_image_bytes() == pytest.approx(fp32.per_image_bytes() * ratio)
    assert memory.estimated_peak_gb(64, amp) > memory.estimated_peak_gb(64, fp32)


def test_measured_memory_grows_the_batch_but_never_past_what_fits() -> None:
    profile = MemoryProfile(activation_bytes_per_image=100 * 1024**2, parameter_count=5_000_000)
    six = recommend(replace(GPU, vram_gb=6.0), "full", profile)
    assert six.batch_size == 32 > 8  # above the table's 8, a power of two
    assert six.estimated_peak_gb is not None and six.estimated_peak_gb <= 6.0 * 0.85
    assert memory.estimated_peak_gb(64, profile) > 6.0 * 0.85  # the next power of two won't
    small = recommend(replace(GPU, vram_gb=2.0), "fast", profile)
    assert small.batch_size == 4 and "does not fit" in small.reason  # the table would say 8
    assert recommend(GPU, "fast", profile).batch_size == memory.MAX_BATCH


def test_activation_memory_is_measured_per_image() -> None:
    small = memory.measure_memory("fast", 64, amp=False)
    large = memory.measure_memory("fast", 128, amp=False)
    half = memory.measure_memory("fast", 128, amp=True)
    assert 3.0 < large.activation_bytes_per_image / small.activation_bytes_per_image < 5.0
    assert half.activation_bytes_per_image < large.activation_bytes_per_image
    from fakedet.models import create_model

    fast = create_model("fast", img_size=64)
    total = sum(p.numel() for p in fast.parameters())
    assert small.parameter_count + small.frozen_parameter_count == total
    # The spectral branch's fp32 FFT buffers: per pixel, in both precisions, outside the factor.
    assert large.transient_bytes_per_image == 4 * small.transient_bytes_per_image > 0
    assert half.transient_bytes_per_image == large.transient_bytes_per_image
    factor = memory.ACTIVATION_OVERHEAD
    assert large.per_image_bytes() == pytest.approx(
        large.activation_bytes_per_image * factor + large.transient_bytes_per_image
    )


def _check_recommendation(item: dict, img_size: int) -> None:
    """The numbers are sane and the ready `fakedet train` line sets exactly those numbers."""
    batch, accumulation = item["batch_size"], item["gradient_accumulation_steps"]
    assert 1 <= batch <= memory.MAX_BATCH and batch & (batch - 1) == 0, batch  # a power of two
    assert accumulation >= 1 and item["lr"] > 0 and item["num_workers"] >= 0 and item["reason"]
    if item["use_amp"]:
        assert item["amp_dtype"] in ("bf16", "fp16")
    words = shlex.split(item["command"])
    assert words[:4] == ["fakedet", "train", "DATA_ROOT", f"--{item['mode']}"]
    options = {
        word: (following if not following.startswith("--") else None)
        for word, following in zip(words[4:], [*words[5:], "--"], strict=True)
        if word.startswith("--")
    }
    assert int(options["--batch-size"]) == batch
    assert int(options.get("--gradient-accumulation-steps") or 1) == accumulation
    assert float(options["--lr"]) == pytest.approx(item["lr"])
    assert int(options["--num-workers"]) == item["num_workers"]
    assert int(options["--img-size"]) == img_size
    assert ("--use-amp" in options) == item["use_amp"]
    if item["use_amp"]:
        assert options["--amp-dtype"] == item["amp_dtype"]


def test_recommend_command() -> None:
    result = runner.invoke(app, ["recommend", "--mode", "fast", "--img-size", "64", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert set(plan) >= {"hardware", "img_size", "recommendations", "notes"}
    assert plan["img_size"] == 64
    assert plan["hardware"]["device"] in ("cpu", "cuda", "mps")
    assert plan["hardware"]["cpu_cores"] >= 1
    (item,) = plan["recommendations"]
    assert item["command"].startswith("fakedet train DATA_ROOT --fast --batch-size")
    assert item["mode"] == "fast"
    _check_recommendation(item, 64)
    fast_here = item["command"]
    planned = runner.invoke(
        app,
        ["recommend", "--vram", "12", "--compute-capability", "7.5", "--os", "Windows",
         "--img-size", "64", "--json"],
    )  # fmt: skip
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert plan["hardware"]["vram_gb"] == 12 and plan["hardware"]["os"] == "Windows"
    assert plan["hardware"]["device"] == "cuda" and plan["hardware"]["compute_capability"] == [7, 5]
    assert [item["mode"] for item in plan["recommendations"]] == ["fast", "full"]
    for item in plan["recommendations"]:
        _check_recommendation(item, 64)
        assert item["use_amp"] and item["amp_dtype"] == "fp16"  # Turing: fp16, no bf16
        assert item["estimated_peak_gb"] is not None and item["estimated_peak_gb"] <= 12 * 0.85
        assert "--use-amp --amp-dtype fp16" in item["command"] and item["num_workers"] == 0
        assert item["batch_size"] >= {"fast": 64, "full": 32}[item["mode"]]  # the table's floor
    table = runner.invoke(app, ["recommend", "--img-size", "64"])
    assert table.exit_code == 0 and "fakedet train DATA_ROOT --full" in table.output
    assert "settings at 64 px" in table.output
    assert fast_here in table.output  # the same machine, mode and size: the same line as --json


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compute-capability", "eight"], "is not MAJOR.MINOR"),
        (["--img-size", "100"], "multiple of 32"),
        (["--mode", "huge"], "is not one of fast, full"),
        (["--os", "BeOS"], "is not Linux, Windows or macOS (Darwin)"),
    ],
)
def test_recommend_bad_input_exits_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["recommend", *args])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(
    ("typed", "system"),
    [("linux", "Linux"), ("LINUX", "Linux"), ("windows", "Windows"), ("win", "Windows"),
     ("darwin", "Darwin"), ("macos", "Darwin"), ("mac", "Darwin"), ("macOS", "Darwin")],
)  # fmt: skip
def test_recommend_accepts_the_os_as_people_type_it(typed: str, system: str) -> None:
    result = runner.invoke(
        app, ["recommend", "--vram", "8", "--compute-capability", "8.6", "--os", typed, "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["hardware"]["os"] == system
    workers = {item["num_workers"] for item in plan["recommendations"]}
    assert workers == ({0} if system == "Windows" else workers - {0})


def test_peak_live_bytes_counts_storages_while_they_live() -> None:
    import torch

    def ones_plus_one() -> None:
        ones = torch.ones(1000)  # 4000 bytes
        ones.view(10, 100).relu_()  # a view and an in-place result: the same storage
        ones + 1  # another 4000 bytes while `ones` lives

    assert memory.peak_live_bytes(ones_plus_one) == 8000
    assert memory.peak_live_bytes(lambda: [torch.ones(1000) for _ in range(3)]) == 12000


def _backbone(finetune: bool, lora_rank: int = 0) -> BackboneChoice:
    # No weights file and no download: the architecture alone is measured.
    return BackboneChoice("timm", "resnet18", None, None, finetune, lora_rank, False)


def test_backbone_memory_a_probe_extracts_without_grad_a_finetune_keeps_activations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any download attempt would raise
    probe = memory.measure_backbone_memory(_backbone(False), 64, amp=False)
    full = memory.measure_backbone_memory(_backbone(True), 64, amp=False)
    # resnet18 without its classifier: 11.2M weights; the head reads its 512 features.
    assert probe.parameter_count == 513 and probe.frozen_parameter_count == pytest.approx(
        11.2e6, rel=0.01
    )
    assert (
        full.frozen_parameter_count == 0
        and full.parameter_count == probe.frozen_parameter_count + 513
    )
    # Backward keeps every layer's activations; a forward without grad holds a few at a time.
    assert full.activation_bytes_per_image > 2 * probe.activation_bytes_per_image > 0
    # The first convolution's (64, 32, 32) fp32 output alone is 256 KiB per image.
    assert probe.activation_bytes_per_image >= 64 * 32 * 32 * 4
    assert probe.fixed_bytes() < full.fixed_bytes() / 3  # frozen weights: no grads, no AdamW state
    pytest.importorskip("peft")
    lora = memory.measure_backbone_memory(_backbone(True, lora_rank=2), 64, amp=False)
    assert lora.frozen_parameter_count == full.parameter_count - 513
    assert 513 < lora.parameter_count < full.parameter_count / 20  # adapters and head train
    assert lora.activation_bytes_per_image > 2 * probe.activation_bytes_per_image


def test_recommend_a_backbone_offline_gives_memory_batch_amp_and_the_train_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any download attempt would raise, exit 2
    weights = tmp_path / "my weights.safetensors"
    weights.write_bytes(b"never read: memory is measured on the architecture")
    planned = ["--vram", "12", "--compute-capability", "7.5", "--img-size", "64", "--json"]
    items = {}
    for training in (["--probe"], ["--finetune"]):
        result = runner.invoke(
            app,
            ["recommend", "--backbone", "timm:resnet18", "--weights", str(weights), *training,
             *planned],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        assert plan["img_size"] == 64
        (item,) = plan["recommendations"]
        items[training[0]] = item
        assert item["mode"] == "timm:resnet18" and item["memory_per_image_mb"] > 0
        assert item["estimated_peak_gb"] <= 12 * 0.85 and item["batch_size"] in (64, 128)
        assert item["use_amp"] and item["amp_dtype"] == "fp16"  # Turing: fp16 is faster
        assert any("random weights" in note for note in plan["notes"])
        words = shlex.split(item["command"])
        assert words[:7] == ["fakedet", "train", "DATA_ROOT", "--backbone", "timm:resnet18",
                             "--weights", str(weights)]  # fmt: skip
        assert training[0] in words and "--use-amp" in words
        assert words[words.index("--batch-size") + 1] == str(item["batch_size"])
        assert words[words.index("--img-size") + 1] == "64"
    assert items["--probe"]["lr"] == 1e-3 and items["--finetune"]["lr"] == 1e-4  # train's defaults
    assert items["--finetune"]["memory_per_image_mb"] > items["--probe"]["memory_per_image_mb"]
    # Without --weights, offline: planned all the same, saying where the weights would come from.
    result = runner.invoke(app, ["recommend", "--backbone", "timm:resnet18", "--vram", "8"])
    assert result.exit_code == 0, result.output
    assert "--backbone timm:resnet18 --probe --batch-size" in result.output
    assert "no --weights" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", "keras:resnet"], "must be SOURCE:NAME"),
        (["--backbone", "timm:no_such_net"], "timm has no model named 'no_such_net'"),
        (["--backbone", "timm:resnet18", "--mode", "fast"], "exclude each other"),
        (["--backbone", "timm:resnet18", "--weights", "missing.pth"], "is not a file"),
        (["--backbone", "timm:resnet18", "--lora-rank", "2"], "applies only with --finetune"),
        (["--finetune"], "given without --backbone"),
    ],
)
def test_recommend_bad_backbone_input_is_one_sentence_exit_2(args: list[str], message: str) -> None:
    pytest.importorskip("timm")
    result = runner.invoke(app, ["recommend", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_recommend_a_backbone_without_its_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "open_clip" else real(name)
    )
    result = runner.invoke(app, ["recommend", "--backbone", "open_clip:ViT-B-32"])
    assert result.exit_code == 2
    assert 'pip install -e ".[backbones]"' in " ".join(result.output.split())
