"""The JSON the API answers with, as pydantic models (they are the OpenAPI schema too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Explanation(BaseModel):
    """Where the score comes from: patches of the image, each scored on its own."""

    overlay_png: str = Field(description="Base64 PNG: the image under its patch map (red: fake).")
    patch: int = Field(description="Side of every patch, in the image's pixels.")
    stride: int = Field(description="Step between patches (the last is flush with the edge).")
    patch_map: list[list[float]] = Field(
        description="The model's raw realness of each patch, rows top to bottom (uncalibrated)."
    )


class PredictionRow(BaseModel):
    """One uploaded image: the row `fakedet predict --json` prints, plus the threshold and the
    model that gave it."""

    path: str = Field(description="The upload's file name.")
    realness: float | None = Field(description="Calibrated realness in [0, 1]; 1 = a real photo.")
    verdict: Literal["real", "fake", "too small", "unreadable", "error"]
    error: str | None = Field(description="Why an image was not scored.")
    threshold: float = Field(description="Realness at or above this is 'real'.")
    model: str = Field(description="The id of the model that scored it (GET /v1/model).")
    raw: float | None = Field(None, description="The uncalibrated score, with ?raw=1.")
    explanation: Explanation | None = Field(None, description="With ?explain=1.")


class PredictResponse(BaseModel):
    predictions: list[PredictionRow]


class ErrorResponse(BaseModel):
    """A request the server did not answer with scores; `detail` says why in one sentence."""

    detail: str
    predictions: list[PredictionRow] | None = Field(
        None, description="Every upload's row, when all of a request's uploads were rejected."
    )


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    queued_images: int


class ModelInfo(BaseModel):
    id: str
    file: str
    mode: str
    img_size: int
    crops: int
    trained_with: str = Field(description="fakedet version that wrote the checkpoint.")
    server_version: str
    device: str
    calibration: dict[str, Any] | None
    calibration_text: str
    threshold: float
