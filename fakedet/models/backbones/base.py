"""What every source adapter returns, and the guard that turns a failed download into one
sentence naming the file to fetch and `--weights`."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from torch import nn

from fakedet.errors import UsageError

# How long one look for the download host may take; a machine without network fails at once
# (no DNS), one behind a dead proxy after this.
REACH_TIMEOUT_S = 10.0

T = TypeVar("T")


class BackboneError(UsageError):
    """A backbone that cannot be built: unknown name, no weights offline, a size it refuses."""


@dataclass(frozen=True)
class Preprocessing:
    """The backbone's own input settings, from its library's configuration."""

    input_size: int  # the side it was pretrained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # what its library resizes with; fakedet crops, and only upscales

    def as_dict(self) -> dict[str, object]:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


@dataclass
class LoadedBackbone:
    """A feature extractor: normalised (B, 3, S, S) images -> pooled features (B, feature_dim)."""

    module: nn.Module
    feature_dim: int
    preprocessing: Preprocessing


@dataclass(frozen=True)
class WeightsSource:
    """Where a library downloads a backbone's weights from: what the user can fetch instead."""

    host: str
    url: str


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=REACH_TIMEOUT_S):
            return True
    except OSError:
        return False


def offline_error(spec: str, source: WeightsSource | None, reason: str) -> BackboneError:
    fetch = f"fetch {source.url}" if source else "fetch its weights file"
    return BackboneError(
        f"Could not download the pretrained weights of {spec} ({reason}); {fetch} and pass "
        "it with --weights FILE."
    )


@contextmanager
def _no_retries() -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(REACH_TIMEOUT_S * 3)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_guarded(spec: str, source: WeightsSource | None, create: Callable[[], T]) -> T:
    """Run `create` (a library call that downloads weights) when the host answers; otherwise,
    or when the download fails, one sentence naming the file to fetch and --weights.

    Raises:
        BackboneError: offline, HF_HUB_OFFLINE set, or the download failed.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise offline_error(spec, source, "HF_HUB_OFFLINE is set")
    if source is not None and not _reachable(source.host):
        raise offline_error(spec, source, f"{source.host} cannot be reached")
    try:
        with _no_retries():
            return create()
    except (OSError, RuntimeError, ValueError) as exc:  # the libraries' download errors
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise offline_error(spec, source, f"{exc.__class__.__name__}: {first}") from None
