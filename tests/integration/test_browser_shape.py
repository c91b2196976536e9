"""The Shape panel in Chromium: BEVR, MF and ASD of the sample patient as markers on the cohort's box plots.

The fixtures (real server, Chromium, a page that fails on any script or CSP error) are in
``conftest.py`` beside this file.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.integration.browser_support import save_screenshot, wait_for_result

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FEATURES = ("bevr", "margin_fluctuation", "angular_sd")

ROWS = """
() => Array.from(document.querySelectorAll('#shape-list > li')).map(li => {
  const svg = li.querySelector('svg.shape-plot');
  const attr = (sel, name) => {
    const e = svg && svg.querySelector(sel);
    return e ? Number(e.getAttribute(name)) : null;
  };
  const whiskers = svg ? Array.from(svg.querySelectorAll('line.whisker')) : [];
  return {
    feature: li.dataset.feature, value: li.dataset.value, percentile: li.dataset.percentile,
    text: li.innerText, label: svg && svg.getAttribute('aria-label'), role: svg && svg.getAttribute('role'),
    markers: svg ? svg.querySelectorAll('circle.shape-marker').length : 0,
    marker: attr('circle.shape-marker', 'cx'), median: attr('line.median', 'x1'),
    boxLeft: attr('rect.box', 'x'), boxRight: attr('rect.box', 'x') + attr('rect.box', 'width'),
    low: whiskers.length ? Number(whiskers[0].getAttribute('x1')) : null,
    high: whiskers.length ? Number(whiskers[0].getAttribute('x2')) : null,
  };
})
"""


def test_shape_panel_shows_three_features_as_markers_on_the_cohort(page: Any) -> None:
    with page.expect_response("**/api/v1/sample*") as answer:
        page.click("#sample")
    wait_for_result(page)
    shape = answer.value.json()["cases"][0]["shape_features"]
    assert shape["dimensions"] == 3
    assert page.locator("#shape-card").is_visible()
    rows = page.evaluate(ROWS)
    assert [r["feature"] for r in rows] == list(FEATURES)
    for row in rows:
        feature = shape[row["feature"]]
        value, percentile, box = feature["value"], feature["percentile"], feature["cohort"]
        assert float(row["value"]) == value and float(row["percentile"]) == percentile
        assert f"{value:.3g}" in row["text"]  # the number is text, read by screen readers
        assert f"{round(percentile)}" in row["text"] and "percentile" in row["text"]
        assert row["role"] == "img" and f"cohort of {box['n']}" in row["label"] and "this case" in row["label"]
        assert row["markers"] == 1
        # the marker sits where the value falls against the cohort's quartiles and range
        assert row["low"] <= row["boxLeft"] <= row["median"] <= row["boxRight"] <= row["high"]
        assert (row["marker"] > row["median"]) == (value > box["median"])
        assert (row["marker"] > row["boxRight"]) == (value > box["q3"])
        assert (row["marker"] < row["boxLeft"]) == (value < box["q1"])
        assert box["min"] <= value <= box["max"]  # the sample lies inside the cohort's range: whiskers = axis ends
        span = (box["max"] - box["min"]) / (row["high"] - row["low"])  # value units per SVG unit
        assert math.isclose(box["min"] + (row["marker"] - row["low"]) * span, value, rel_tol=1e-6, abs_tol=1e-9)
    note = page.text_content("#shape-note")
    assert f"slice {shape['largest_slice']}" in note
    page.click("#shape-note button")  # jumps to the slice MF and ASD are measured on
    page.wait_for_selector(f"#slice-canvas[data-slice='{shape['largest_slice']}']")
    assert "docs/radiogenomics.md" in page.text_content("#shape-card")
    save_screenshot(page, "viewer-shape.png")


def test_shape_panel_on_one_slice_has_no_bevr_marker(page: Any, sample_patient: Any) -> None:
    path = sample_patient / f"{sample_patient.name}_12.tif"
    with page.expect_response("**/api/v1/segment*") as answer:
        page.set_input_files("#file-input", str(path))
    wait_for_result(page)
    shape = answer.value.json()["cases"][0]["shape_features"]
    assert shape is not None and shape["dimensions"] == 2 and shape["bevr"]["value"] is None
    rows = {r["feature"]: r for r in page.evaluate(ROWS)}
    assert rows["bevr"]["markers"] == 0 and "needs a 3D volume" in rows["bevr"]["text"]
    assert rows["margin_fluctuation"]["markers"] == 1 and rows["angular_sd"]["markers"] == 1
    assert "One slice" in page.text_content("#shape-note")
