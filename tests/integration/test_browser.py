"""The web page in Debian's Chromium, driven by Playwright: uploads, the sample, refusals and /docs.

The viewer itself (window/level, zoom, overlays, layout, keyboard) is tested in
``test_browser_viewer.py``; the fixtures are in ``conftest.py`` beside this file.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.browser_support import save_screenshot, wait_for_result

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def api_post(server_url: str, path: str, paths: list[Path] | None = None) -> dict[str, Any]:
    import httpx

    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths or []]
    response = httpx.post(server_url + path, files=files or None, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def decode(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_docs_page_renders_the_segment_operation(open_page: Any) -> None:
    """The bundled Swagger UI 4 reads the OpenAPI 3.0 copy and shows every operation, under a strict CSP."""
    page = open_page(path="/docs")
    segment = page.locator("#operations-default-segment_api_v1_segment_post")
    segment.wait_for(timeout=30_000)
    assert "/api/v1/segment" in segment.locator(".opblock-summary-path").text_content()
    assert "Segment slices, a zipped patient folder" in segment.text_content()
    assert page.locator("#operations-default-segment_sample_api_v1_sample_post").count() == 1
    assert "Unable to render" not in page.text_content("body")
    segment.locator(".opblock-summary").click()
    page.wait_for_selector("#operations-default-segment_api_v1_segment_post .opblock-body")
    assert "multipart/form-data" in segment.text_content()
    save_screenshot(page, "api-docs.png")
    health = page.locator("#operations-default-healthz_healthz_get")  # "Try it out" works under the CSP
    health.locator(".opblock-summary").click()
    health.locator("button.try-out__btn").click()
    health.locator("button.execute").click()
    health.locator(".responses-table .response .microlight").first.wait_for(timeout=30_000)
    assert '"ready": true' in health.locator(".live-responses-table").text_content()


def test_page_segments_an_uploaded_slice(page: Any, server_url: str, sample_patient: Path) -> None:
    path = sample_patient / f"{sample_patient.name}_12.tif"
    expected = api_post(server_url, "/api/v1/segment", [path])["cases"][0]["slices"][0]
    page.set_input_files("#file-input", str(path))
    wait_for_result(page, 1)
    assert int(page.get_attribute("#slice-area", "data-value")) == expected["tumor_area_px"]
    assert page.text_content("#slice-area").replace(",", "") == str(expected["tumor_area_px"])
    assert page.is_hidden("#slider-row") and page.is_hidden("#thumbs")  # one slice: nothing to browse
    assert page.is_hidden("#slice-dice") and page.is_disabled("#mode-errors")  # no ground truth uploaded
    download = page.evaluate("async () => (await fetch(document.getElementById('dl-nifti').href)).status")
    assert download == 200


def test_sample_button_runs_the_bundled_patient(page: Any, server_url: str, sample_dir: Path) -> None:
    expected = api_post(server_url, "/api/v1/sample")["cases"][0]
    first = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())[0]
    page.click("#sample")
    wait_for_result(page)
    n = len(expected["slices"])
    assert expected["name"] == first and n == 20
    assert int(page.get_attribute("#case-volume", "data-value")) == expected["tumor_volume_voxels"]
    assert page.text_content("#case-dice") == f"{expected['dice']:.3f}"
    assert page.text_content("#case-dice-note") == f" ({expected['dice_note']})" and "held out" in expected["dice_note"]
    assert page.locator("#thumbs .thumb").count() == n and page.locator("#area-plot .bar").count() == n
    peak = max(range(n), key=lambda z: expected["slices"][z]["tumor_area_px"])
    assert page.input_value("#slice-slider") == str(peak + 1)  # opens on the largest tumor section
    page.locator("#thumbs .thumb").nth(0).click()
    wait_for_result(page, 1)
    assert page.get_attribute("#slice-area", "data-value") == str(expected["slices"][0]["tumor_area_px"])
    page.keyboard.press("ArrowRight")
    wait_for_result(page, 2)
    assert page.text_content("#slice-label") == f"slice 2 of {n}"


def test_a_bad_file_beside_a_good_one_still_gives_a_result(
    page: Any, problems: list[str], sample_patient: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.tif"
    bogus.write_text("not an image")
    good = sample_patient / f"{sample_patient.name}_11.tif"
    page.set_input_files("#file-input", [str(bogus), str(good)])
    wait_for_result(page, 1)
    assert page.is_visible("#results") and page.text_content("#slice-name") == good.stem
    assert page.is_visible("#skipped-box")
    assert page.locator("#skipped li").all_text_contents() == [
        "notes.tif: not a TIFF, PNG or JPEG slice, a zip of a patient folder, or a NIfTI volume (judged by content)"
    ]
    assert "1 file was skipped" in page.text_content("#skipped-title")

    page.set_input_files("#file-input", str(bogus))  # only a bad file: refused, and the old result goes
    page.wait_for_selector("body[data-state=error]")
    assert "notes.tif: not a TIFF, PNG or JPEG slice" in page.text_content("#error")
    assert page.is_hidden("#results") and page.is_hidden("#skipped-box")
    assert all("status of 415" in p for p in problems)  # Chromium logs the refused request
    problems.clear()


def test_ground_truth_uploaded_with_slices_gives_per_slice_dice(
    page: Any, server_url: str, sample_patient: Path
) -> None:
    numbers = range(8, 14)
    paths = [sample_patient / f"{sample_patient.name}_{n}{suffix}.tif" for n in numbers for suffix in ("", "_mask")]
    expected = api_post(server_url, "/api/v1/segment", paths)["cases"][0]
    page.set_input_files("#file-input", [str(p) for p in paths])
    wait_for_result(page)
    page.locator("#thumbs .thumb").nth(2).click()
    wait_for_result(page, 3)
    item = expected["slices"][2]
    pred, truth = decode(item["mask_png"]) > 0, decode(item["truth_png"]) > 0
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    shown = page.eval_on_selector("#slice-errors", "e => [e.dataset.tp, e.dataset.fp, e.dataset.fn].map(Number)")
    assert shown == [tp, fp, fn] and fp > 0 and fn > 0
    assert page.text_content("#slice-dice") == f"{2 * tp / (2 * tp + fp + fn):.3f}"
    assert page.text_content("#slice-truth") == f"{truth.sum():,} px"
