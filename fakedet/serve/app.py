"""The FastAPI app: routes, the API key check, request limits, request logs and metrics.

`create_app` serves a model already loaded (the CLI loads it first, so a bad checkpoint fails
before a port is bound); `app_from_env` is the factory each `--workers` process imports.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fakedet import __version__
from fakedet.data.transforms import TOO_SMALL, TooSmallError, to_tensor
from fakedet.errors import UsageError
from fakedet.inference.explain import overlay_png, pixel_map
from fakedet.serve import metrics as prometheus
from fakedet.serve.batching import Batcher, Job, QueueFull
from fakedet.serve.schemas import (
    ErrorResponse,
    Explanation,
    Health,
    ModelInfo,
    PredictionRow,
    PredictResponse,
)
from fakedet.serve.scoring import ServedModel
from fakedet.serve.settings import SETTINGS_ENV, ServeSettings
from fakedet.serve.uploads import UploadRejected, decode_upload

STATIC = Path(__file__).parent / "static"
FILES_FIELD = "files"
ROUTES = ("/", "/v1/predict", "/v1/health", "/v1/model", "/metrics", "/docs", "/openapi.json")
# The heatmap's grid: explain_maps' own defaults (a 64 px patch every 32 px), whatever the
# model's img_size, at the image's native pixels.
PATCH, STRIDE = 64, 32
OVERLAY_SIDE = 512  # longest side of the heatmap PNG sent back
log = logging.getLogger("fakedet.serve")


@dataclass
class Server:
    """What the routes share: the model, its batcher, the limits and the metrics."""

    served: ServedModel
    settings: ServeSettings
    batcher: Batcher
    metrics: prometheus.Metrics
    decoding: anyio.CapacityLimiter | None = None  # made in the lifespan, inside the event loop


class RequestLog:
    """One log line and the metrics of every request: method, path, status, latency. Headers
    (where an API key travels) are never logged."""

    def __init__(self, app: ASGIApp, metrics: prometheus.Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before it answers

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.request_started()
        try:
            await self.app(scope, receive, recording)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"]
            route = (
                path if path in ROUTES else "/static" if path.startswith("/static/") else "other"
            )
            self.metrics.request_finished(route, status, seconds)
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s "%s %s" %d %.1f ms', client[0], scope["method"], path, status, seconds * 1e3
            )


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The app serving `served` under `settings`' limits; the batcher runs while the app does
    (its lifespan), and stops after the last request in flight has been answered."""
    metrics = prometheus.Metrics()
    batcher = Batcher(
        served.model,
        served.device,
        settings.max_batch,
        settings.max_wait_ms / 1e3,
        settings.max_queue,
        on_batch=metrics.batch_done,
    )
    server = Server(served, settings, batcher, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        server.decoding = anyio.CapacityLimiter(settings.decode_threads)
        batcher.start()
        log.info("Serving %s (%s) on %s", served.model_id, served.source, served.device)
        try:
            yield
        finally:
            batcher.stop()  # uvicorn has drained the requests in flight by now

    app = FastAPI(
        title="fakedet",
        version=__version__,
        summary="Is an image a real photo or AI-generated? A trained fakedet detector.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestLog, metrics=metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    authorised = [Depends(_key_check(settings))]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/v1/health")
    async def health() -> Health:
        """Liveness: the model is loaded and the batcher runs."""
        return Health(status="ok", model=served.model_id, queued_images=batcher.waiting)

    @app.get("/v1/model", dependencies=authorised, responses={401: {"model": ErrorResponse}})
    async def model_info() -> ModelInfo:
        """The model: mode, image size, calibration, threshold, versions."""
        return ModelInfo(**served.info())

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> PlainTextResponse:
        text = metrics.render(queued_images=batcher.waiting)
        return PlainTextResponse(text, media_type=prometheus.CONTENT_TYPE)

    @app.post(
        "/v1/predict",
        dependencies=authorised,
        responses={status: {"model": ErrorResponse} for status in (400, 401, 413, 422, 503)},
        openapi_extra={"requestBody": _REQUEST_BODY},
        response_model=PredictResponse,
        response_model_exclude_unset=True,  # `raw` and `explanation` only when asked for
    )
    async def predict(
        request: Request,
        explain: bool = Query(False, description="Add each image's heatmap (slower)."),
        raw: bool = Query(False, description="Add the uncalibrated score, as predict --raw."),
        name: str = Query("upload", description="The path a raw-body upload's row shows."),
    ) -> PredictResponse | JSONResponse:
        """Score images: multipart files under `files`, or one image as the raw body.

        Each image is scored as `fakedet predict` scores a file. An upload that cannot be
        decoded gets an `unreadable` row; when no upload of a request could be, the answer is
        that upload's 4xx status with the reason.
        """
        uploads = await _uploads(request, settings, name)
        # Every upload's scoring runs to its end before a failure (a full queue) is raised.
        outcomes = await asyncio.gather(
            *(_score(server, upload_name, data, explain, raw) for upload_name, data in uploads),
            return_exceptions=True,
        )
        rows, failures = [], []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            row, status = outcome
            rows.append(row)
            if status is not None:
                failures.append(status)
        if len(failures) == len(rows):
            return JSONResponse(
                status_code=failures[0],
                content={
                    "detail": rows[0].error,
                    "predictions": [row.model_dump(exclude_unset=True) for row in rows],
                },
            )
        return PredictResponse(predictions=rows)

    return app


def app_from_env() -> FastAPI:
    """The app of one `--workers` process: settings from SETTINGS_ENV, the model loaded here.

    Raises:
        UsageError: SETTINGS_ENV is not set (start the server with `fakedet serve`).
    """
    if SETTINGS_ENV not in os.environ:
        raise UsageError(
            f"{SETTINGS_ENV} is not set; start the server with `fakedet serve MODEL --workers N`."
        )
    settings = ServeSettings.from_env(os.environ)
    served = ServedModel.load(settings.model, settings.device, settings.crops)
    return create_app(served, settings)


def _key_check(settings: ServeSettings) -> Any:
    """A dependency refusing requests without the API key (constant-time comparison)."""
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key")
        if not hmac.compare_digest((given or "").encode(), expected):
            raise HTTPException(
                401,
                "This server needs an API key: send `Authorization: Bearer KEY` or `X-API-Key: "
                "KEY`.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


async def _uploads(
    request: Request, settings: ServeSettings, raw_name: str
) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each image in the request, within the size and count limits."""
    body = await _read_body(request, settings.max_upload_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise HTTPException(422, _NOTHING_SENT)
        return [(raw_name, body)]

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=settings.max_files)
    files = form.getlist(FILES_FIELD)
    if not files:
        raise HTTPException(422, _NOTHING_SENT)
    if not all(isinstance(item, UploadFile) for item in files):
        raise HTTPException(422, f"The form field `{FILES_FIELD}` must hold files, not text.")
    uploads = []
    for number, item in enumerate(files):
        assert isinstance(item, UploadFile)
        uploads.append((item.filename or f"file {number + 1}", await item.read()))
    await form.close()
    return uploads


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = HTTPException(
        413,
        f"The request is over this server's limit of {limit:,} bytes (--max-upload-mb); send "
        "fewer or smaller images per request.",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _score(
    server: Server, name: str, data: bytes, explain: bool, with_raw: bool
) -> tuple[PredictionRow, int | None]:
    """One upload's row, and the 4xx status of a rejected one (None when scored)."""
    served, settings = server.served, server.settings
    common = {"threshold": served.threshold, "model": served.model_id}
    try:
        image, pixels = await anyio.to_thread.run_sync(
            _decode, served, data, name, settings, explain, limiter=server.decoding
        )
    except UploadRejected as rejected:
        server.metrics.images_done("rejected")
        row = PredictionRow(
            path=name, realness=None, verdict="unreadable", error=rejected.message, **common
        )
        return row, rejected.status
    except TooSmallError as small:  # an answer, as predict's: no verdict made up from a resize
        server.metrics.images_done("too_small")
        return PredictionRow(
            path=name, realness=None, verdict=TOO_SMALL, error=str(small), **common
        ), None
    try:
        whole = server.batcher.submit(Job(pixels))
        patches = server.batcher.submit(Job(to_tensor(image), explain=True)) if explain else None
    except QueueFull:
        raise HTTPException(
            503,
            "The server is busy (its queue of images is full); retry shortly.",
            headers={"Retry-After": "1"},
        ) from None
    raw = (await asyncio.wrap_future(whole))[0]
    server.metrics.images_done("scored")
    row = PredictionRow(**served.prediction(name, raw).as_row(with_raw), **common)
    if patches is not None:
        patch_map = await asyncio.wrap_future(patches)
        png = await anyio.to_thread.run_sync(
            _heatmap_png, image, patch_map, limiter=server.decoding
        )
        row.explanation = Explanation(
            overlay_png=base64.b64encode(png).decode("ascii"),
            patch=PATCH,
            stride=STRIDE,
            patch_map=np.round(patch_map.astype(np.float64), 6).tolist(),
        )
    return row, None


def _decode(
    served: ServedModel, data: bytes, name: str, settings: ServeSettings, explain: bool
) -> tuple[Image.Image, torch.Tensor]:
    """The image and the view(s) predict scores of it (in a worker thread: decoding is CPU work
    the event loop must not wait on).

    Raises:
        UploadRejected: undecodable, over the pixel limit, or with `explain` over the heatmap's.
    """
    image = decode_upload(data, name, settings.max_pixels)
    pixels = image.width * image.height
    if explain and pixels > settings.max_explain_pixels:
        raise UploadRejected(
            413,
            f"{name} is {image.width}x{image.height} = {pixels:,} pixels, over this server's "
            f"limit of {settings.max_explain_pixels:,} for a heatmap; send it without "
            "explain=1, or a smaller image.",
        )
    return image, served.pixels(image)


def _heatmap_png(image: Image.Image, patch_map: np.ndarray) -> bytes:
    """explain's overlay at display size (longest side OVERLAY_SIDE at most): each pixel's
    realness (the mean of the patches covering it) is taken at the image's own size, then the
    image and that map are shrunk together."""
    per_pixel = pixel_map(patch_map, image.height, image.width, PATCH, STRIDE)  # (H, W)
    scale = min(1.0, OVERLAY_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    shown = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
    realness = np.asarray(Image.fromarray(per_pixel).resize(size, Image.Resampling.BILINEAR))
    return overlay_png(shown, realness)


_NOTHING_SENT = (
    f"The request has no image: send files as multipart form data under `{FILES_FIELD}`, or "
    "one image as the raw request body."
)

_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    FILES_FIELD: {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more images (any format Pillow decodes).",
                    }
                },
                "required": [FILES_FIELD],
            }
        },
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "description": "One image."}
        },
    },
}
