"""Device and precision choices."""

from __future__ import annotations

import pytest
import torch

from fakedet import hardware, runtime
from fakedet.errors import ConfigError


def test_cpu_amp_without_native_bf16_warns_and_uses_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    precision, warning = runtime.resolve_precision(
        torch.device("cpu"), use_amp=True, amp_dtype="auto"
    )
    assert not precision.enabled and precision.dtype == torch.float32
    assert warning is not None and "bf16" in warning


def test_cpu_amp_with_native_bf16_uses_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    precision, warning = runtime.resolve_precision(
        torch.device("cpu"), use_amp=True, amp_dtype="auto"
    )
    assert precision.enabled and precision.dtype == torch.bfloat16 and not precision.use_scaler
    assert warning is None


def test_no_amp_is_fp32_without_warning() -> None:
    precision, warning = runtime.resolve_precision(
        torch.device("cpu"), use_amp=False, amp_dtype="auto"
    )
    assert not precision.enabled and warning is None


def test_auto_device_is_cpu_here_and_missing_cuda_is_a_config_error() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        runtime.resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_picks_bf16_on_ampere_or_fp16_with_scaler() -> None:
    precision, _ = runtime.resolve_precision(torch.device("cuda"), use_amp=True, amp_dtype="auto")
    major, _ = torch.cuda.get_device_capability()
    if major >= 8:
        assert precision.dtype == torch.bfloat16 and not precision.use_scaler
    else:
        assert precision.dtype == torch.float16 and precision.use_scaler


def test_auto_device_prefers_cuda_then_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.resolve_device("auto").type == "mps"


@pytest.mark.parametrize(
    ("capability", "requested", "expected"),
    [((6, 1), "auto", None), ((7, 5), "auto", "fp16"), ((8, 0), "auto", "bf16"),
     ((8, 6), "fp16", "fp16"), ((7, 5), "bf16", "bf16")],
)  # fmt: skip
def test_cuda_amp_dtype_by_compute_capability(
    capability: tuple[int, int], requested: str, expected: str | None
) -> None:
    assert hardware.cuda_amp_dtype(capability, requested) == expected
