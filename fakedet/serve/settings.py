"""What a server is told: the model, the device, batching bounds and the limits on uploads."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from fakedet.config_files import describe_validation_error
from fakedet.data.images import CROP_CHOICES
from fakedet.errors import ConfigError

# Where `--workers N` hands the settings to each worker process (JSON, without the API key,
# which travels in API_KEY_ENV as it does when a user sets it).
SETTINGS_ENV = "FAKEDET_SERVE_SETTINGS"
API_KEY_ENV = "FAKEDET_API_KEY"


class ServeSettings(BaseModel):
    """One server's configuration; the CLI's flags, or the JSON a worker process reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path = Field(description="Checkpoint file, run folder, or .onnx/.ts/.safetensors.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    crops: int = Field(1, description="Views per image, as predict's --crops (1 or 5).")
    max_batch: int = Field(16, ge=1, le=4096, description="Most images in one model call.")
    max_wait_ms: float = Field(
        5.0, ge=0.0, le=10_000.0, description="Longest a batch waits for more images."
    )
    max_queue: int = Field(
        512, ge=1, description="Images waiting for the model before new ones get 503."
    )
    max_upload_bytes: int = Field(
        20 * 1024**2, ge=1, description="Largest request body (all files of a request)."
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest image (width x height) decoded; more is a bomb."
    )
    max_files: int = Field(32, ge=1, description="Most images in one request.")
    max_explain_pixels: int = Field(
        4_000_000, ge=1, description="Largest image a heatmap is drawn for (explain=1)."
    )
    decode_threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="Uploads decoded at once (each thread holds one decoded image).",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads [default: torch's own]."
    )
    api_key: SecretStr | None = Field(
        None, exclude=True, description="Requests must carry it; never serialised or logged."
    )

    @field_validator("crops")
    @classmethod
    def _known_crops(cls, crops: int) -> int:
        if crops not in CROP_CHOICES:
            raise ValueError(f"crops = {crops} is not one of {CROP_CHOICES}")
        return crops

    def to_env(self) -> str:
        """JSON for SETTINGS_ENV (the key is excluded)."""
        return self.model_dump_json()

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ[str]) -> ServeSettings:
        """Settings a worker process finds in its environment (see `to_env`)."""
        values = cls.model_validate_json(environ[SETTINGS_ENV])
        key = environ.get(API_KEY_ENV) or None
        return values.model_copy(update={"api_key": SecretStr(key) if key else None})


def build_settings(**values: object) -> ServeSettings:
    """Validate a server's settings.

    Raises:
        ConfigError: naming every bad value and the allowed range.
    """
    try:
        return ServeSettings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"Invalid server settings: {describe_validation_error(exc)}.") from None
