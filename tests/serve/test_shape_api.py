"""The case result's ``shape_features``: the Shape panel's numbers, checked against the library."""

from __future__ import annotations

import base64
import csv
import io
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

with warnings.catch_warnings():  # starlette's notice about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from lggseg.infer.segmenter import Segmenter  # noqa: E402
from lggseg.serve.app import create_app  # noqa: E402
from lggseg.shape.cohort import load_cohort, percentile_of  # noqa: E402
from lggseg.shape.features import shape_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FEATURES = ("volume_voxels", "bevr", "margin_fluctuation", "angular_sd")


@pytest.fixture(scope="module")
def client(shipped_segmenter: Segmenter) -> TestClient:
    return TestClient(create_app(segmenter=shipped_segmenter), base_url="http://127.0.0.1:8000")


def returned_mask(case: dict) -> np.ndarray:
    """The case's predicted ``(Z, H, W)`` mask, decoded from its PNG slices."""
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask_png"])))) > 0 for s in case["slices"]])


def test_sample_case_carries_its_shape_against_the_cohort(client: TestClient) -> None:
    response = client.post("/api/v1/sample?images=false")
    assert response.status_code == 200, response.text
    (case,) = response.json()["cases"]
    shape = case["shape_features"]
    mask = returned_mask(case)
    expected = shape_features(case["name"], mask)
    cohort = load_cohort()
    assert shape["dimensions"] == 3
    assert shape["largest_slice"] == int(np.argmax(mask.sum(axis=(1, 2)))) + 1
    assert shape["volume_voxels"]["value"] == expected.volume_voxels == case["tumor_volume_voxels"]
    for name in FEATURES:
        item = shape[name]
        assert item["value"] == pytest.approx(getattr(expected, name), rel=1e-12)
        assert item["percentile"] == percentile_of(cohort.values[name], item["value"])
        assert 0 < item["percentile"] < 100
        values = cohort.values[name]
        box = item["cohort"]
        assert box["n"] == len(values) == 100
        assert (box["min"], box["max"]) == (values.min(), values.max())
        assert [box["q1"], box["median"], box["q3"]] == pytest.approx(list(np.percentile(values, [25, 50, 75])))
    # the model's mask of this patient (Dice about 0.9) gives a BEVR near that of its manual mask,
    # whose row is in the cohort table (0.462): 0.410 with the shipped final model (cohort IQR 0.32-0.43)
    table = (resources.files("lggseg.shape") / "cohort_features.csv").read_text().splitlines()
    manual = next(float(row["bevr"]) for row in csv.DictReader(table) if row["patient"] == case["name"])
    assert manual == pytest.approx(0.462, abs=1e-3)
    assert shape["bevr"]["value"] == pytest.approx(manual, abs=0.06)


def test_one_slice_has_mf_and_asd_but_no_bevr_and_an_empty_slice_no_shape(
    client: TestClient, sample_patient: Path
) -> None:
    # names without <patient>_<n>: two cases of one slice each, not one volume
    files = [
        ("files", (f"slice{n}.tif", (sample_patient / f"{sample_patient.name}_{n}.tif").read_bytes())) for n in (1, 12)
    ]
    response = client.post("/api/v1/segment?images=false", files=files)
    assert response.status_code == 200, response.text
    empty, tumor = response.json()["cases"]
    assert empty["tumor_volume_voxels"] == 0 and empty["shape_features"] is None
    shape = tumor["shape_features"]
    assert tumor["tumor_volume_voxels"] > 0 and shape["dimensions"] == 2 and shape["largest_slice"] == 1
    expected = shape_features(tumor["name"], returned_mask(tumor))
    assert shape["bevr"]["value"] is None and shape["bevr"]["percentile"] is None
    assert shape["volume_voxels"]["percentile"] is None
    cohort = load_cohort()
    for name in ("margin_fluctuation", "angular_sd"):
        assert shape[name]["value"] == pytest.approx(getattr(expected, name), rel=1e-12)
        assert shape[name]["percentile"] == percentile_of(cohort.values[name], shape[name]["value"])


def test_openapi_documents_the_shape_panel(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "shape_features" in schemas["CaseOut"]["properties"]
    assert set(FEATURES) <= set(schemas["ShapeOut"]["properties"])
    page = client.get("/")
    assert 'id="shape-card"' in page.text and "/static/shape.js" in page.text
    script = client.get("/static/shape.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "http" not in script.text.replace("http://www.w3.org/2000/svg", "")
    assert "innerHTML" not in script.text  # text and SVG nodes only


def test_a_failing_shape_computation_keeps_the_case_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from lggseg.serve import service

    warnings: list[str] = []
    mask = np.zeros((3, 16, 16), bool)
    assert service.shape_out(mask, "empty", warnings) is None and warnings == []  # no tumor, no panel
    mask[1, 4:9, 5:11] = True
    shape = service.shape_out(mask, "box", warnings)
    assert shape is not None and shape.volume_voxels.value == 30 and shape.largest_slice == 2 and warnings == []

    def broken(_: np.ndarray) -> None:
        raise ValueError("singular matrix")

    monkeypatch.setattr(service, "case_shape", broken)
    assert service.shape_out(mask, "box", warnings) is None
    assert warnings == ["box: no shape features (ValueError: singular matrix)"]
