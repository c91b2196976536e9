"""The web page in Debian's Chromium, driven by Playwright: upload real slices, see them segmented.

Set ``LGGSEG_UPDATE_SCREENSHOT=1`` to also refresh ``docs/screenshot.png`` (shown by the README).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=(
            f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; Playwright cannot download browsers "
            "here)"
        ),
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

sync_api = pytest.importorskip("playwright.sync_api")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    from lggseg.serve.app import create_app

    app = create_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def problems() -> list[str]:
    """Script errors and console errors of the page; none are expected."""
    return []


@pytest.fixture()
def page(browser: Any, server_url: str, problems: list[str]) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(server_url + "/")
    page.wait_for_selector("#model-status[data-state=ready]")
    yield page
    page.close()
    assert problems == [], problems


def api_segment(server_url: str, paths: list[Path]) -> dict[str, Any]:
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    response = httpx.post(server_url + "/api/v1/segment", files=files, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_result(page: Any) -> None:
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    page.wait_for_function(
        "() => { const i = document.getElementById('slice-image'); return i.complete && i.naturalWidth > 0; }"
    )


def test_page_segments_an_uploaded_slice(page: Any, server_url: str, sample_patient: Path, tmp_path: Path) -> None:
    path = sample_patient / f"{sample_patient.name}_12.tif"
    expected = api_segment(server_url, [path])["cases"][0]["slices"][0]
    page.set_input_files("#file-input", str(path))
    wait_for_result(page)
    assert int(page.get_attribute("#slice-area", "data-value")) == expected["tumor_area_px"]
    assert page.text_content("#slice-area").replace(",", "") == str(expected["tumor_area_px"])
    assert page.get_attribute("#slice-image", "src") == "data:image/png;base64," + expected["overlay_png"]
    page.click("label.switch")  # outline off: the plain FLAIR image
    assert page.get_attribute("#slice-image", "src") == "data:image/png;base64," + expected["flair_png"]
    page.click("label.switch")
    assert page.get_attribute("#slice-image", "src") == "data:image/png;base64," + expected["overlay_png"]
    download = page.evaluate("async () => (await fetch(document.getElementById('dl-nifti').href)).status")
    assert download == 200
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_page_browses_a_patient_volume(page: Any, server_url: str, sample_patient: Path, tmp_path: Path) -> None:
    update_docs = os.environ.get("LGGSEG_UPDATE_SCREENSHOT") == "1"
    numbers = range(1, 100) if update_docs else range(8, 16)  # the whole patient for the README, else 8 slices
    paths = [
        p
        for n in numbers
        for p in (
            sample_patient / f"{sample_patient.name}_{n}.tif",
            sample_patient / f"{sample_patient.name}_{n}_mask.tif",
        )
        if p.exists()
    ]
    page.set_input_files("#file-input", [str(p) for p in paths])
    wait_for_result(page)
    expected = api_segment(server_url, paths)["cases"][0]
    n = len(expected["slices"])
    assert int(page.get_attribute("#case-volume", "data-value")) == expected["tumor_volume_voxels"]
    assert page.locator("#thumbs .thumb").count() == n and page.locator("#area-plot .bar").count() == n
    assert page.text_content("#case-dice") == f"{expected['dice']:.3f}"
    peak = max(range(n), key=lambda z: expected["slices"][z]["tumor_area_px"])
    assert page.input_value("#slice-slider") == str(peak + 1)  # opens on the largest tumor section
    page.locator("#thumbs .thumb").nth(0).click()
    assert page.get_attribute("#slice-area", "data-value") == str(expected["slices"][0]["tumor_area_px"])
    page.keyboard.press("ArrowRight")
    assert page.text_content("#slice-label") == f"slice 2 of {n}"
    page.locator("#thumbs .thumb").nth(peak).click()
    shot = tmp_path / "volume.png"
    page.screenshot(path=str(shot), full_page=True)
    if update_docs:
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_page_shows_the_servers_refusal(page: Any, problems: list[str], tmp_path: Path) -> None:
    bogus = tmp_path / "notes.tif"
    bogus.write_text("not an image")
    page.set_input_files("#file-input", str(bogus))
    page.wait_for_selector("body[data-state=error]")
    assert "notes.tif: not a TIFF, PNG or JPEG slice" in page.text_content("#error")
    assert all("status of 415" in p for p in problems)  # Chromium logs the refused request
    problems.clear()
