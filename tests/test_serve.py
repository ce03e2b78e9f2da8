"""`fakedet serve`: every endpoint, limit and error through FastAPI's TestClient, the batcher on
its own, the command line, and a real server process drained by SIGTERM."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import fakedet_command, write_image
from fakedet.cli import app as cli

pytest.importorskip("fastapi", reason="needs the serve extra")
from fastapi.testclient import TestClient

from fakedet.errors import UsageError
from fakedet.inference.explain import explain_maps
from fakedet.serve.app import app_from_env, create_app
from fakedet.serve.batching import Batcher, Job, QueueFull
from fakedet.serve.scoring import ServedModel
from fakedet.serve.settings import ServeSettings, build_settings

CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoint_0.2.0.pt"  # fast model, 64 px
KEY = "s3cret-key-for-tests"
MAX_PIXELS = 200 * 200
MAX_UPLOAD = 300_000
runner = CliRunner()


def png_bytes(seed: int, size: int | tuple[int, int] = 64, smooth: bool = False) -> bytes:
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    if smooth:
        half = rng.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
        pixels = half.repeat(2, axis=0).repeat(2, axis=1)
    else:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixel data: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def served() -> ServedModel:
    return ServedModel.load(CHECKPOINT, "cpu")


def _client(served: ServedModel, **overrides: object) -> TestClient:
    values: dict[str, object] = {
        "model": CHECKPOINT,
        "device": "cpu",
        "max_pixels": MAX_PIXELS,
        "max_upload_bytes": MAX_UPLOAD,
        "max_files": 4,
        "max_wait_ms": 2.0,
        **overrides,
    }
    return TestClient(create_app(served, build_settings(**values)))


@pytest.fixture(scope="module")
def client(served: ServedModel) -> Iterator[TestClient]:
    with _client(served) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keyed(served: ServedModel) -> Iterator[TestClient]:
    with _client(served, api_key=KEY) as test_client:
        yield test_client


def _files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in named]


def test_scores_equal_fakedet_predict_for_the_same_files(
    client: TestClient, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    for seed, size in enumerate((64, 96, 150)):
        write_image(images / f"real{seed}.png", seed, size)
        write_image(images / f"fake{seed}.png", seed + 10, size, smooth=True)
    small = Image.open(images / "real0.png").resize((40, 30))  # too small, as in predict
    small.save(images / "small.jpg", quality=90)
    Image.open(images / "fake1.png").convert("LA").save(images / "grey_alpha.png")
    result = runner.invoke(
        cli,
        ["predict", str(CHECKPOINT), str(images), "--json", "--raw", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    expected = {Path(row["path"]).name: row for row in json.loads(result.stdout)}
    verdicts = {row["verdict"] for row in expected.values()}
    assert len(expected) == 8 and verdicts == {"real", "fake", "too small"}
    assert expected["small.jpg"]["verdict"] == "too small"

    uploads = [(name, (images / name).read_bytes()) for name in sorted(expected)]
    rows = []
    for start in range(0, len(uploads), 4):  # max_files is 4 here
        answer = client.post("/v1/predict?raw=1", files=_files(*uploads[start : start + 4]))
        assert answer.status_code == 200, answer.text
        rows += answer.json()["predictions"]
    single = client.post("/v1/predict?raw=1&name=small.jpg", content=uploads[-1][1])
    rows.append(single.json()["predictions"][0])
    assert len(rows) == 9
    for row in rows:
        want = expected[row["path"]]
        assert row["verdict"] == want["verdict"], row["path"]
        assert row["realness"] == pytest.approx(want["realness"], abs=2e-6), row["path"]
        if want["verdict"] == "too small":
            assert row["realness"] is None and "64 px minimum" in row["error"]
            continue
        assert row["raw"] == pytest.approx(want["raw"], abs=2e-6), row["path"]
        assert row["threshold"] == 0.5 and row["model"].startswith("fast-64px-")
        assert row["error"] is None and "explanation" not in row


def test_health_and_model_describe_the_loaded_model(client: TestClient) -> None:
    health = client.get("/v1/health").json()
    info = client.get("/v1/model").json()
    assert health == {"status": "ok", "model": info["id"], "queued_images": 0}
    assert (info["mode"], info["img_size"], info["crops"], info["trained_with"]) == (
        "fast",
        64,
        1,
        "0.2.0",
    )
    assert info["calibration"]["method"] == "temperature" and info["threshold"] == 0.5
    assert info["file"] == CHECKPOINT.name and "temperature" in info["calibration_text"]


def test_openapi_documents_predict_and_its_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/health", "/v1/model"} <= set(schema["paths"])
    predict = schema["paths"]["/v1/predict"]["post"]
    assert {"multipart/form-data", "application/octet-stream"} <= set(
        predict["requestBody"]["content"]
    )
    assert {"200", "401", "413", "422", "503"} <= set(predict["responses"])
    assert client.get("/docs").status_code == 200


def test_page_is_served_from_the_package_without_a_cdn(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("static/app.js", "static/style.css"):
        assert asset in page.text
        text = client.get(f"/{asset}").text
        assert "http://" not in text and "https://" not in text, asset
    assert "http://" not in page.text and "https://" not in page.text


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "is empty"),
        (b"just some text, not a picture", "not an image format"),
        (png_bytes(1, 96)[:300], "truncated or corrupt"),
        (png_bytes(1, 96)[:200] + b"\xff" * 60 + png_bytes(1, 96)[260:], "truncated or corrupt"),
    ],
    ids=["empty", "text", "truncated", "corrupt"],
)
def test_undecodable_uploads_get_422_naming_the_problem(
    client: TestClient, data: bytes, problem: str
) -> None:
    answer = client.post("/v1/predict", files=_files(("photo.png", data)))
    assert answer.status_code == 422
    body = answer.json()
    assert problem in body["detail"] and body["detail"].startswith("photo.png")
    assert body["predictions"][0]["verdict"] == "unreadable"
    # ... and the next client is served as before.
    assert client.post("/v1/predict", files=_files(("ok.png", png_bytes(2)))).status_code == 200


def test_a_bad_upload_beside_good_ones_is_an_unreadable_row(client: TestClient) -> None:
    answer = client.post(
        "/v1/predict",
        files=_files(("a.png", png_bytes(3)), ("b.jpg", b"not an image"), ("c.png", png_bytes(4))),
    )
    assert answer.status_code == 200
    rows = answer.json()["predictions"]
    assert [row["path"] for row in rows] == ["a.png", "b.jpg", "c.png"]
    assert [row["verdict"] == "unreadable" for row in rows] == [False, True, False]
    assert "not an image format" in rows[1]["error"] and rows[1]["realness"] is None


def test_content_is_decided_by_decoding_not_name_or_type(client: TestClient) -> None:
    answer = client.post(
        "/v1/predict", files=[("files", ("notes.txt", png_bytes(5), "text/plain"))]
    )
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["verdict"] in ("real", "fake")
    disguised = client.post(
        "/v1/predict", files=[("files", ("photo.jpg", b"MZ\x90\x00", "image/jpeg"))]
    )
    assert disguised.status_code == 422


def test_pixel_limit_refuses_bombs_before_decoding(client: TestClient) -> None:
    too_big = client.post("/v1/predict", files=_files(("big.png", png_bytes(6, (250, 200)))))
    assert too_big.status_code == 413
    assert "250x200 = 50,000 pixels" in too_big.json()["detail"]
    assert "--max-pixels" in too_big.json()["detail"]
    # A 60000 x 60000 header (10 GB of RGB) in 45 bytes: refused from the header alone.
    bomb = client.post("/v1/predict", content=png_header_only(60_000, 60_000))
    assert bomb.status_code == 413 and "limit of 40,000 pixels" in bomb.json()["detail"]


def test_upload_size_limit_gives_413(client: TestClient) -> None:
    large = os.urandom(MAX_UPLOAD + 1)
    answer = client.post("/v1/predict", content=large)
    assert answer.status_code == 413 and "300,000 bytes" in answer.json()["detail"]
    split = client.post(
        "/v1/predict",
        files=_files(("a.bin", large[: MAX_UPLOAD // 2]), ("b.bin", large[MAX_UPLOAD // 2 :])),
    )
    assert split.status_code == 413


def test_streamed_body_over_the_limit_gives_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as bytes arrive
        for _ in range(4):
            yield b"\x00" * (MAX_UPLOAD // 3)

    answer = client.post("/v1/predict", content=chunks())
    assert answer.status_code == 413


def test_request_without_images_and_too_many_files(client: TestClient) -> None:
    nothing = client.post("/v1/predict")
    assert nothing.status_code == 422 and "has no image" in nothing.json()["detail"]
    wrong_field = client.post("/v1/predict", files=[("image", ("a.png", png_bytes(7)))])
    assert wrong_field.status_code == 422 and "`files`" in wrong_field.json()["detail"]
    text_field = client.post(
        "/v1/predict", data={"files": "a.png"}, files=[("other", ("b.png", png_bytes(7)))]
    )
    assert text_field.status_code == 422 and "must hold files" in text_field.json()["detail"]
    many = client.post("/v1/predict", files=_files(*[(f"{n}.png", png_bytes(n)) for n in range(5)]))
    assert many.status_code == 400 and "Too many files" in many.json()["detail"]


def test_full_queue_gives_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Batcher, job: Job) -> None:
        raise QueueFull

    monkeypatch.setattr(Batcher, "submit", full)
    answer = client.post("/v1/predict", files=_files(("a.png", png_bytes(8))))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "busy" in answer.json()["detail"]


def test_api_key_is_required_and_never_logged(
    keyed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    upload = _files(("a.png", png_bytes(9)))
    with caplog.at_level(logging.INFO, logger="fakedet.serve"):
        missing = keyed.post("/v1/predict", files=upload)
        wrong = keyed.post("/v1/predict", files=upload, headers={"X-API-Key": KEY + "x"})
        wrong_scheme = keyed.get("/v1/model", headers={"Authorization": f"Basic {KEY}"})
        bearer = keyed.post("/v1/predict", files=upload, headers={"Authorization": f"Bearer {KEY}"})
        header = keyed.get("/v1/model", headers={"X-API-Key": KEY})
    assert [missing.status_code, wrong.status_code, wrong_scheme.status_code] == [401, 401, 401]
    assert missing.headers["www-authenticate"] == "Bearer" and "API key" in missing.json()["detail"]
    assert (bearer.status_code, header.status_code) == (200, 200)
    assert keyed.get("/v1/health").status_code == 200  # probes need no key
    assert caplog.text.count('"POST /v1/predict"') == 3 and KEY not in caplog.text
    assert KEY not in repr(build_settings(model=CHECKPOINT, api_key=KEY))
    assert KEY not in build_settings(model=CHECKPOINT, api_key=KEY).to_env()


def _metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, name
    return values[0]


def test_metrics_count_requests_errors_latency_and_batches(served: ServedModel) -> None:
    with _client(served, max_batch=8) as fresh:
        for seed in range(3):
            fresh.post("/v1/predict", files=_files(("a.png", png_bytes(seed))))
        fresh.post("/v1/predict", files=_files(("a.png", png_bytes(1)), ("b.png", png_bytes(2))))
        fresh.post("/v1/predict", content=b"nope")
        text = fresh.get("/metrics").text
    label = 'route="/v1/predict"'
    assert _metric(text, f'fakedet_requests_total{{{label},status="200"}}') == 4
    assert _metric(text, f'fakedet_request_errors_total{{{label},status="422"}}') == 1
    assert _metric(text, f"fakedet_request_duration_seconds_count{{{label}}}") == 5
    assert _metric(text, f'fakedet_request_duration_seconds_bucket{{{label},le="+Inf"}}') == 5
    assert _metric(text, 'fakedet_images_total{outcome="scored"}') == 5
    assert _metric(text, 'fakedet_images_total{outcome="rejected"}') == 1
    assert _metric(text, "fakedet_batch_size_sum") == 5  # every scored image went through a batch
    assert 4 <= _metric(text, "fakedet_batch_size_count") <= 5
    assert _metric(text, "fakedet_requests_in_flight") == 1  # the scrape itself
    assert "# TYPE fakedet_request_duration_seconds histogram" in text


def test_explain_returns_the_patch_map_of_inference_explain(
    client: TestClient, served: ServedModel
) -> None:
    image = png_bytes(11, (160, 96))
    answer = client.post("/v1/predict?explain=1&raw=1", files=_files(("wide.png", image)))
    assert answer.status_code == 200
    row = answer.json()["predictions"][0]
    explanation = row["explanation"]
    assert (explanation["patch"], explanation["stride"]) == (64, 32)
    pixels = torch.from_numpy(np.array(Image.open(io.BytesIO(image)))).permute(2, 0, 1)[None]
    expected = explain_maps(served.model, pixels.float() / 255, 64, 32)[0]  # rows 0, 32
    assert np.array(explanation["patch_map"]) == pytest.approx(expected, abs=2e-6)
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (160, 96)
    # A patch's value is that patch scored alone, as predict would score it as a file.
    buffer = io.BytesIO()
    Image.open(io.BytesIO(image)).crop((32, 32, 96, 96)).save(buffer, "PNG")
    alone = client.post("/v1/predict?raw=1", content=buffer.getvalue()).json()["predictions"][0]
    assert explanation["patch_map"][1][1] == pytest.approx(alone["raw"], abs=2e-6)
    plain = client.post("/v1/predict?raw=1", content=image).json()["predictions"][0]
    assert row["raw"] == pytest.approx(plain["raw"], abs=2e-6)  # explaining leaves the score
    tiny = client.post("/v1/predict?explain=1", content=png_bytes(12, 40)).json()
    assert tiny["predictions"][0]["verdict"] == "too small"  # no map made up from a resize


def test_explain_refuses_images_over_its_pixel_limit(served: ServedModel) -> None:
    with _client(served, max_explain_pixels=64 * 64) as small_limit:
        answer = small_limit.post("/v1/predict?explain=1", content=png_bytes(13, (80, 64)))
        plain = small_limit.post("/v1/predict", content=png_bytes(13, (80, 64)))
    assert answer.status_code == 413 and "for a heatmap" in answer.json()["detail"]
    assert plain.status_code == 200


def _mean_pixel_model(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Realness = each image's mean pixel: a stand-in whose answers identify its inputs."""
    return {"score": images.mean(dim=(1, 2, 3))}


def test_batcher_groups_queued_jobs_within_max_batch_and_routes_results() -> None:
    sizes: list[int] = []
    batcher = Batcher(
        _mean_pixel_model, torch.device("cpu"), 4, 0.0, 64, lambda n, _: sizes.append(n), 4, 4
    )
    jobs = [Job(torch.full((3, 8, 8), value, dtype=torch.uint8)) for value in range(10)]
    futures = [batcher.submit(job) for job in jobs[:6]]
    image = torch.zeros(3, 8, 4, dtype=torch.uint8)
    image[:, 4:] = 255  # bottom half white
    heatmap = batcher.submit(Job(image, explain=True))
    futures += [batcher.submit(job) for job in jobs[6:]]
    batcher.start()
    batcher.stop()
    # Never above max_batch; the heatmap ran on its own call after its batch's scores.
    assert sizes == [4, 3, 1, 3]
    assert [future.result(timeout=5) for future in futures] == [
        [pytest.approx(value / 255)] for value in range(10)
    ]
    assert heatmap.result(timeout=5) == pytest.approx(np.array([[0.0], [1.0]]))


def test_batcher_refuses_past_max_queue_and_reports_model_failures() -> None:
    def broken(images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise RuntimeError("out of memory")

    batcher = Batcher(broken, torch.device("cpu"), 8, 0.0, 2)
    first = batcher.submit(Job(torch.zeros(3, 8, 8, dtype=torch.uint8)))
    batcher.submit(Job(torch.zeros(3, 8, 8, dtype=torch.uint8)))
    with pytest.raises(QueueFull):
        batcher.submit(Job(torch.zeros(3, 8, 8, dtype=torch.uint8)))
    batcher.start()
    with pytest.raises(RuntimeError, match="out of memory"):
        first.result(timeout=5)
    batcher.stop()


def test_settings_travel_to_workers_without_the_key() -> None:
    settings = build_settings(model=CHECKPOINT, max_batch=3, api_key=KEY)
    environ = {"FAKEDET_SERVE_SETTINGS": settings.to_env(), "FAKEDET_API_KEY": KEY}
    again = ServeSettings.from_env(environ)
    assert again.max_batch == 3 and again.api_key is not None
    assert again.api_key.get_secret_value() == KEY


def test_worker_factory_builds_the_app_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FAKEDET_SERVE_SETTINGS", raising=False)
    with pytest.raises(UsageError, match="FAKEDET_SERVE_SETTINGS is not set"):
        app_from_env()
    settings = build_settings(model=CHECKPOINT, device="cpu")
    monkeypatch.setenv("FAKEDET_SERVE_SETTINGS", settings.to_env())
    monkeypatch.setenv("FAKEDET_API_KEY", KEY)
    with TestClient(app_from_env()) as worker:
        assert worker.get("/v1/model").status_code == 401
        answer = worker.get("/v1/model", headers={"Authorization": f"Bearer {KEY}"})
        assert answer.json()["mode"] == "fast"


def test_cli_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = runner.invoke(cli, ["serve", str(CHECKPOINT)])
    assert result.exit_code == 2 and 'pip install -e ".[serve]"' in result.output


def test_cli_refuses_a_bad_checkpoint_and_bad_settings(tmp_path: Path) -> None:
    missing = runner.invoke(cli, ["serve", str(tmp_path / "nothing.pt")])
    assert missing.exit_code == 2 and "nothing.pt" in missing.output
    crops = runner.invoke(cli, ["serve", str(CHECKPOINT), "--crops", "3"])
    assert crops.exit_code == 2 and "crops" in crops.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_drains_requests_in_flight_and_exits_0() -> None:
    import httpx

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # A batch waits 2 s for company, so the request is still in flight when SIGTERM arrives.
    command = fakedet_command(
        "serve", str(CHECKPOINT), "--port", str(port), "--device", "cpu", "--max-wait-ms", "2000"
    )
    environ = {**os.environ, "FAKEDET_API_KEY": KEY}
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        answers: list[httpx.Response] = []
        answered_at: list[float] = []

        def send() -> None:
            answers.append(
                httpx.post(
                    f"{base}/v1/predict",
                    files=_files(("a.png", png_bytes(13))),
                    headers={"X-API-Key": KEY},
                    timeout=60,
                )
            )
            answered_at.append(time.monotonic())

        sender = threading.Thread(target=send)
        sender.start()
        while _metric(httpx.get(f"{base}/metrics").text, "fakedet_requests_in_flight") < 2:
            time.sleep(0.02)
        signalled_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        sender.join(timeout=60)
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output
    assert answers[0].status_code == 200 and answered_at[0] > signalled_at
    assert answers[0].json()["predictions"][0]["verdict"] in ("real", "fake")
    assert '"POST /v1/predict" 200' in output and " ms" in output
    assert KEY not in output
