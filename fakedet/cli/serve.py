"""`fakedet serve`: a trained detector behind an HTTP API and a web page (the serve extra)."""

from __future__ import annotations

import copy
import os
import signal
from typing import Annotated

import typer

from fakedet.cli.base import CheckpointArgument, CropsOption, DeviceOption, errors_to_exit_codes
from fakedet.errors import UsageError

SERVE_EXTRA_HINT = 'pip install -e ".[serve]"'


def serve(
    model: CheckpointArgument,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to bind; 0.0.0.0 reaches beyond this machine (set a key)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    device: DeviceOption = "auto",
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Most images the model scores at once.")
    ] = 16,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms", min=0.0, help="Longest a batch waits for more images to join it."
        ),
    ] = 5.0,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.001, help="Largest request body, in MB.")
    ] = 20.0,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels",
            min=1,
            help="Largest image (width x height) decoded; larger ones get 413 unread.",
        ),
    ] = 40_000_000,
    max_files: Annotated[
        int, typer.Option("--max-files", min=1, help="Most images in one request.")
    ] = 32,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="FAKEDET_API_KEY",
            show_envvar=True,
            help="Requests to /v1/predict and /v1/model must carry it (Authorization: Bearer "
            "KEY, or X-API-Key: KEY). Prefer the environment variable: a flag shows in `ps`.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes behind the one port, each with its own copy of the model and "
            "batcher (torch threads split between them).",
        ),
    ] = 1,
    crops: CropsOption = 1,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Serve a detector over HTTP: a JSON API, OpenAPI docs at /docs and a web page at /.

    POST /v1/predict takes images (multipart `files`, or one image as the raw body) and answers
    each with the row `fakedet predict --json` prints; concurrent requests are batched on the
    device. SIGTERM finishes the requests in flight, then exits 0.

    Examples:

        fakedet serve runs/demo

        FAKEDET_API_KEY=secret fakedet serve runs/demo/best_model.pt --host 0.0.0.0 --workers 2

        curl -F files=@photo.jpg http://127.0.0.1:8000/v1/predict
    """
    with errors_to_exit_codes():
        try:
            import uvicorn

            from fakedet.serve.app import create_app
            from fakedet.serve.scoring import ServedModel
            from fakedet.serve.settings import API_KEY_ENV, SETTINGS_ENV, build_settings
        except ImportError as exc:
            raise UsageError(
                f"fakedet serve needs the optional serve extra ({exc.name} is missing): "
                f"{SERVE_EXTRA_HINT}"
            ) from None

        torch_threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
        settings = build_settings(
            model=model,
            device=device,
            crops=crops,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_upload_bytes=round(max_upload_mb * 1024**2),
            max_pixels=max_pixels,
            max_files=max_files,
            torch_threads=torch_threads,
            api_key=api_key or None,
        )
        # Loaded here even with workers, so that a bad checkpoint fails before a port is bound.
        served = ServedModel.load(settings.model, settings.device, settings.crops)
        logging_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
        logging_config["formatters"]["default"]["fmt"] = "%(asctime)s %(levelprefix)s %(message)s"
        logging_config["loggers"]["fakedet.serve"] = {
            "handlers": ["default"],
            "level": log_level.upper(),
            "propagate": False,
        }
        options = {
            "host": host,
            "port": port,
            "log_config": logging_config,
            "log_level": log_level,
            "access_log": False,  # fakedet.serve logs each request with its latency instead
            "timeout_graceful_shutdown": 30,
        }
        # uvicorn drains on SIGTERM, then raises the signal again once its own handler is gone;
        # with this one in its place that second delivery does nothing and the command exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        if workers == 1:
            uvicorn.run(create_app(served, settings), **options)
            return
        # Worker processes import the app by name and build it from the environment.
        os.environ[SETTINGS_ENV] = settings.to_env()
        if settings.api_key is not None:
            os.environ[API_KEY_ENV] = settings.api_key.get_secret_value()
        del served
        uvicorn.run("fakedet.serve.app:app_from_env", factory=True, workers=workers, **options)
