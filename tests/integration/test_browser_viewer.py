"""The slice viewer in Chromium: window/level, zoom and pan, overlays, layout widths, keyboard use.

Each test runs the bundled sample patient (it has ground truth) through the "Try the sample
patient" button. ``LGGSEG_UPDATE_SCREENSHOTS=1`` also rewrites ``docs/screenshots/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.browser_support import canvas_stats, save_screenshot, wait_for_result

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PRED = (213, 94, 0)  # Okabe-Ito vermillion: prediction, false positives
TRUTH = (86, 180, 233)  # sky blue: ground truth, false negatives
AGREE = (240, 228, 66)  # yellow: true positives


def run_sample(page: Any) -> None:
    page.click("#sample")
    wait_for_result(page)


def canvas_center(page: Any) -> tuple[float, float]:
    box = page.locator("#slice-canvas").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag(page: Any, dx: float, dy: float, shift: bool = False) -> None:
    x, y = canvas_center(page)
    page.mouse.move(x, y)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


@pytest.mark.parametrize("width", [390, 768, 1440])
def test_no_horizontal_scroll_and_a_visible_image(open_page: Any, width: int) -> None:
    page = open_page(width=width, height=860)
    run_sample(page)
    scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client == width
    box = page.locator("#slice-canvas").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    assert min(box["width"], box["height"]) >= min(300, width - 60)
    stats = canvas_stats(page)
    assert stats["lit"] > 0.15  # the brain is drawn, not a black box
    overflowing = page.evaluate(
        "Array.from(document.querySelectorAll('body *')).filter(e => e.offsetParent && "
        "e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && "
        "!e.closest('#thumbs')).map(e => e.id || e.className)"
    )
    assert overflowing == []
    if width == 390:
        save_screenshot(page, "viewer-phone.png")


def test_window_level_changes_the_pixels(page: Any) -> None:
    run_sample(page)
    full = canvas_stats(page)
    assert page.text_content("#wl-readout") == "W 255 · L 128"
    drag(page, -120, -60)  # narrower window (more contrast), lower level (brighter)
    narrow = canvas_stats(page)
    assert page.text_content("#wl-readout") == "W 135 · L 68"
    assert narrow["digest"] != full["digest"] and narrow["mean"] > full["mean"] + 5
    assert page.get_attribute("[data-preset=full]", "aria-pressed") == "false"
    page.click("[data-preset=full]")
    assert canvas_stats(page)["digest"] == full["digest"]  # the preset restores the image exactly
    page.click("[data-preset=auto]")
    auto = canvas_stats(page)
    assert auto["digest"] != full["digest"] and page.get_attribute("[data-preset=auto]", "aria-pressed") == "true"


def test_zoom_and_pan(page: Any) -> None:
    run_sample(page)
    fitted = canvas_stats(page)
    page.click("#zoom-in")
    page.click("#zoom-in")
    assert page.text_content("#zoom-level") == "156%"
    zoomed = canvas_stats(page)
    assert zoomed["digest"] != fitted["digest"] and zoomed["lit"] > fitted["lit"]
    page.click("[data-tool=pan]")
    drag(page, 150, 0)
    panned = canvas_stats(page)
    assert panned["digest"] != zoomed["digest"]
    assert page.text_content("#wl-readout") == "W 255 · L 128"  # panning left the window alone
    page.click("#zoom-fit")
    assert page.text_content("#zoom-level") == "100%" and canvas_stats(page)["digest"] == fitted["digest"]


def test_error_colours_and_heat_map_with_ground_truth(page: Any) -> None:
    run_sample(page)
    page.fill("#opacity", "100")
    page.dispatch_event("#opacity", "input")
    page.check("input[name=overlay][value=errors]", force=True)
    stats = canvas_stats(page, [AGREE, PRED, TRUTH])
    counts = page.eval_on_selector("#slice-errors", "e => [e.dataset.tp, e.dataset.fp, e.dataset.fn]")
    tp, fp, fn = (int(v) for v in counts)
    assert fp > 0 and fn > 0 and tp > 0
    agree, false_pos, false_neg = stats["counts"]
    scale = min(stats["width"], stats["height"]) / 256  # canvas pixels per image pixel (fitted)
    assert agree == pytest.approx(tp * scale**2, rel=0.1)
    assert false_pos == pytest.approx(fp * scale**2, rel=0.1) and false_neg == pytest.approx(fn * scale**2, rel=0.1)
    legend = page.text_content("#legend")
    assert "TP: both" in legend and "FP: predicted only" in legend and "FN: missed" in legend

    page.fill("#opacity", "50")
    page.dispatch_event("#opacity", "input")
    half = canvas_stats(page, [AGREE, PRED, TRUTH])
    assert half["counts"] == [0, 0, 0] and half["digest"] != stats["digest"]  # blended with the image now
    page.click("[data-preset=auto]")
    save_screenshot(page, "viewer-errors.png", full_page=True)

    page.check("input[name=overlay][value=off]", force=True)
    plain = canvas_stats(page, [AGREE, PRED, TRUTH])
    assert plain["counts"] == [0, 0, 0]
    page.check("#heat-toggle")
    heat = canvas_stats(page)
    assert heat["digest"] != plain["digest"] and "probability" in page.text_content("#legend")
    assert float(page.text_content("#slice-peak")) > 0.9


def test_orientation_markers_and_spacing(page: Any) -> None:
    run_sample(page)
    marks = [page.text_content(f"#orient-{side}") for side in ("top", "bottom", "left", "right")]
    assert marks == ["A", "P", "R", "L"]  # Kaggle slices: radiological, patient right on the image's left
    assert page.text_content("#case-spacing") == "unknown" and page.text_content("#case-ml") == ""
    page.click("#spacing-box summary")
    for field, value in (("#sp-x", "0.5"), ("#sp-y", "0.5"), ("#sp-z", "4")):
        page.fill(field, value)
    voxels = int(page.get_attribute("#case-volume", "data-value"))
    assert float(page.get_attribute("#case-ml", "data-value")) == pytest.approx(voxels * 0.5 * 0.5 * 4 / 1000)
    assert "cm²" in page.text_content("#slice-area-unit")


def test_keyboard_skip_link_tabs_and_strip(open_page: Any, sample_patient: Path) -> None:
    page = open_page(width=900)
    run_sample(page)
    strip = page.eval_on_selector(
        "#thumbs",
        "s => { const t = s.querySelector('[aria-current=true]'); const a = s.getBoundingClientRect(), "
        "b = t.getBoundingClientRect(); return [s.scrollLeft, b.left >= a.left && b.right <= a.right]; }",
    )
    assert strip[0] > 0 and strip[1]  # scrolled to the shown slice on first display
    assert page.locator("#thumbs .thumb[tabindex='0']").count() == 1  # one tab stop, not twenty
    slider_text = page.get_attribute("#slice-slider", "aria-valuetext")
    assert slider_text.startswith(f"slice {page.input_value('#slice-slider')} of 20, ")
    page.focus("#thumbs .thumb[tabindex='0']")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "skip-thumbs"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("!!document.activeElement.closest('#side')")  # past the thumbnails
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # visible focus

    # two cases: the tabs follow the WAI-ARIA pattern
    files = [str(sample_patient / f"{sample_patient.name}_{n}.tif") for n in (10, 12)]
    renamed = [Path(f) for f in files]
    page.set_input_files(
        "#file-input",
        [{"name": f"scan{i}.tif", "mimeType": "image/tiff", "buffer": p.read_bytes()} for i, p in enumerate(renamed)],
    )
    page.wait_for_selector("#case-tab-1")
    wait_for_result(page, 1)
    assert page.get_attribute("#case-panel", "role") == "tabpanel"
    assert page.get_attribute("#case-panel", "aria-labelledby") == "case-tab-0"
    page.focus("#case-tab-0")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "case-tab-1"
    assert page.get_attribute("#case-tab-1", "aria-selected") == "true"
    assert page.get_attribute("#case-tab-0", "tabindex") == "-1"
    assert page.text_content("#slice-name") == "scan1"
    page.keyboard.press("Home")
    assert page.text_content("#slice-name") == "scan0"
