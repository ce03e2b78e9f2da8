"""The page at `/` in a real browser: headless Chromium (the distribution's), driven by
Playwright, loads it, picks an image by keyboard alone and reads the verdict."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import write_image

pytestmark = pytest.mark.browser
pytest.importorskip("fastapi", reason="needs the serve extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium binary (apt-get install chromium)", allow_module_level=True)

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from fakedet.serve.app import create_app  # noqa: E402
from fakedet.serve.scoring import ServedModel  # noqa: E402
from fakedet.serve.settings import build_settings  # noqa: E402

CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoint_0.2.0.pt"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A real server on a free loopback port, in a thread of this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = build_settings(model=CHECKPOINT, device="cpu")
    app = create_app(ServedModel.load(CHECKPOINT, "cpu"), settings)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_page_scores_an_image_picked_by_keyboard(base_url: str, tmp_path: Path) -> None:
    image = tmp_path / "holiday.png"
    write_image(image, seed=3, size=96)
    expected = httpx.post(
        f"{base_url}/v1/predict", files=[("files", (image.name, image.read_bytes()))]
    ).json()["predictions"][0]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(base_url)
            sync_api.expect(page.locator("#model")).to_contain_text("threshold 0.500")
            for _ in range(10):  # Tab through the page until the picker has the focus
                if page.evaluate("document.activeElement.id") == "pick":
                    break
                page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "pick"
            # Enter on the focused picker opens the file chooser; headless Chromium does not
            # always emit that event under load, so the file is then given to the picker itself.
            try:
                with page.expect_file_chooser(timeout=5000) as chooser:
                    page.keyboard.press("Enter")
                chooser.value.set_files(str(image))
            except sync_api.TimeoutError:
                page.locator("#files").set_input_files(str(image))

            result = page.locator(".result").first
            sync_api.expect(result.locator(".verdict")).to_have_text(expected["verdict"])
            realness = result.locator(".realness").inner_text()
            assert f"realness {expected['realness']:.3f}" in realness
            assert result.locator(".name").inner_text() == image.name
            heatmap = result.locator("img")
            sync_api.expect(heatmap).to_have_attribute("src", re.compile("^data:image/png;base64,"))
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
