"""Helpers of the browser tests: Chromium's path and flags, canvas statistics, screenshots."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--force-color-profile=srgb",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("LGGSEG_UPDATE_SCREENSHOTS") == "1"

CANVAS_STATS = """
(rgbList) => {
  const canvas = document.getElementById('slice-canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, lit = 0;
  const counts = rgbList.map(() => 0);
  for (let i = 0; i < data.length; i += 4) {
    sum += data[i] + data[i + 1] + data[i + 2];
    if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
    rgbList.forEach((c, k) => { if (data[i] === c[0] && data[i + 1] === c[1] && data[i + 2] === c[2]) counts[k]++; });
  }
  return {mean: sum / (3 * data.length / 4), lit: lit / (data.length / 4), counts, width: canvas.width,
          height: canvas.height, pixels: Array.from(data.filter((_, i) => i % 97 === 0)).join(',')};
}
"""


def wait_for_result(page: Any, slice_number: int | None = None) -> None:
    """Until the answer is shown and the canvas holds a slice (``slice_number`` if given)."""
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    selector = "#slice-canvas[data-slice]" if slice_number is None else f"#slice-canvas[data-slice='{slice_number}']"
    page.wait_for_selector(selector, timeout=30_000)


def canvas_stats(page: Any, colors: list[tuple[int, int, int]] | None = None) -> dict[str, Any]:
    """Mean grey level, share of lit pixels, counts of exact ``colors`` and a digest of the canvas."""
    stats = page.evaluate(CANVAS_STATS, [list(c) for c in colors or []])
    stats["digest"] = hashlib.sha256(stats.pop("pixels").encode()).hexdigest()
    return stats


def save_screenshot(page: Any, name: str, full_page: bool = False) -> None:
    """Write ``docs/screenshots/<name>`` when LGGSEG_UPDATE_SCREENSHOTS=1 (CI leaves the tree clean)."""
    if UPDATE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.emulate_media(reduced_motion="reduce")  # no button mid-transition in the picture
        page.wait_for_timeout(200)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)
