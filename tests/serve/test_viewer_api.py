"""What the web viewer needs from the API: the sample endpoint, per-file skips, the truth and
probability layers, orientation, and the OpenAPI 3.0 copy behind ``/docs``."""

from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

with warnings.catch_warnings():  # starlette's notice about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from lggseg.infer.segmenter import Segmenter  # noqa: E402
from lggseg.io.images import read_image, read_mask  # noqa: E402
from lggseg.serve.app import create_app  # noqa: E402
from lggseg.serve.cases import nifti_orientation  # noqa: E402
from lggseg.serve.docs import openapi_30  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_weights(None)


@pytest.fixture(scope="module")
def client(segmenter: Segmenter) -> TestClient:
    return TestClient(create_app(segmenter=segmenter), base_url="http://127.0.0.1:8000")


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def test_sample_endpoint_segments_the_bundled_patient(
    client: TestClient, segmenter: Segmenter, sample_patient: Path
) -> None:
    response = client.post("/api/v1/sample")
    assert response.status_code == 200, response.text
    result = response.json()
    (case,) = result["cases"]
    assert case["name"] == sample_patient.name and case["shape"] == [20, 256, 256]
    assert case["orientation"] == ["P", "L"] and result["skipped"] == []
    assert case["dice"] >= 0.85  # 0.90 when written
    assert case["dice_note"] == "held out: this model never saw the patient"  # a held-out demo patient
    images = np.stack([read_image(sample_patient / f"{sample_patient.name}_{n}.tif") for n in range(1, 21)])
    prob = segmenter.probabilities(images)
    expected = segmenter.segment(images)
    for z, item in enumerate(case["slices"]):
        truth = read_mask(sample_patient / f"{sample_patient.name}_{z + 1}_mask.tif")
        assert np.array_equal(decode(item["truth_png"]) > 0, truth)
        assert np.array_equal(decode(item["mask_png"]) > 0, expected[z])
        shown = decode(item["probability_png"]).astype(int)
        assert np.abs(shown - np.round(prob[z] * 255)).max() <= 1
    refused = client.post("/api/v1/sample?patient=TCGA_XX_0000")
    assert refused.status_code == 404 and "TCGA_XX_0000" in refused.json()["detail"]
    lean = client.post(f"/api/v1/sample?images=false&patient={sample_patient.name}").json()
    assert lean["cases"][0]["slices"][0]["probability_png"] is None
    assert lean["cases"][0]["slices"][0]["truth_png"] is not None


def test_bad_files_are_skipped_one_by_one(client: TestClient, sample_patient: Path) -> None:
    good = (sample_patient / f"{sample_patient.name}_12.tif").read_bytes()
    png = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(png, format="PNG")
    wrong_size_mask = png.getvalue()
    response = client.post(
        "/api/v1/segment",
        files=files(
            ("notes.tif", b"not an image"),
            (f"{sample_patient.name}_12.tif", good),
            (f"{sample_patient.name}_12_mask.png", wrong_size_mask),
            ("cut.tif", good[: len(good) // 3]),
        ),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert [c["name"] for c in result["cases"]] == [f"{sample_patient.name}_12"]
    assert result["cases"][0]["dice"] is None  # the only mask did not fit its image
    skipped = {s["file"]: s for s in result["skipped"]}
    assert set(skipped) == {"notes.tif", "cut.tif", f"{sample_patient.name}_12_mask.png"}
    assert skipped["notes.tif"]["status"] == 415 and "judged by content" in skipped["notes.tif"]["detail"]
    assert skipped["cut.tif"]["status"] == 422 and skipped["cut.tif"]["detail"].startswith("cut.tif: ")
    assert "mask is 64x64 but its image is 256x256" in skipped[f"{sample_patient.name}_12_mask.png"]["detail"]


def test_only_bad_files_are_refused_with_every_reason(client: TestClient) -> None:
    response = client.post(
        "/api/v1/segment", files=files(("a.tif", b"junk"), ("b.png", b"\x89PNG\r\n\x1a\n" + b"0" * 40))
    )
    assert response.status_code == 415  # the first file's status
    detail = response.json()["detail"]
    assert detail.startswith("a.tif: not a TIFF") and "; b.png: " in detail


def test_nifti_orientation_is_canonical_when_the_header_declares_one() -> None:
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    image.set_qform(np.eye(4), code=1)
    assert nifti_orientation(image.header, image.affine) == ("P", "L")  # reoriented to (S, P, L) when read
    image.set_qform(np.eye(4), code=0)
    image.set_sform(np.eye(4), code=0)
    assert nifti_orientation(image.header, image.affine) is None  # no orientation declared: only assumed
    image.set_sform(np.eye(4), code=1)
    assert nifti_orientation(image.header, np.full((4, 4), np.nan)) is None
    assert nifti_orientation(image.header, np.zeros((4, 4))) is None


def test_nifti_case_gets_markers_and_the_canonical_voxel_size(client: TestClient, sample_patient: Path) -> None:
    import gzip

    import nibabel as nib

    volume = np.stack([read_image(sample_patient / f"{sample_patient.name}_{n}.tif")[..., 1] for n in range(8, 14)])
    affine = np.diag([0.5, 0.7, 4.0, 1.0])  # RAS+: i runs to the right, j anterior, k superior
    image = nib.Nifti1Image(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    response = client.post("/api/v1/segment", files=files(("scan.nii.gz", gzip.compress(image.to_bytes()))))
    assert response.status_code == 200, response.text
    (case,) = response.json()["cases"]
    assert case["orientation"] == ["P", "L"] and case["voxel_size_mm"] == pytest.approx([0.5, 0.7, 4.0])
    assert case["tumor_volume_ml"] == pytest.approx(case["tumor_volume_voxels"] * 0.5 * 0.7 * 4.0 / 1000, rel=1e-3)


def test_openapi_30_rewrites_what_swagger_ui_4_cannot_read() -> None:
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "t", "summary": "short", "version": "1", "license": {"name": "MIT", "identifier": "MIT"}},
        "webhooks": {},
        "paths": {
            "/x": {
                "get": {
                    "parameters": [
                        {"name": "case", "in": "query", "schema": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}
                    ],
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "A": {
                    "type": "object",
                    "properties": {
                        "ref": {"anyOf": [{"$ref": "#/components/schemas/B"}, {"type": "null"}], "description": "d"},
                        "both": {"type": ["string", "null"], "examples": ["x", "y"]},
                        "fixed": {"const": "k"},
                        "positive": {"type": "number", "exclusiveMinimum": 0},
                        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                        "type": {"type": "string"},  # a property named "type" is not a schema keyword
                        "list": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    },
                },
                "B": {"type": "object"},
            }
        },
    }
    before = json.dumps(document, sort_keys=True)
    out = openapi_30(document)
    assert json.dumps(document, sort_keys=True) == before  # the input is left alone
    assert out["openapi"] == "3.0.3" and "webhooks" not in out
    assert out["info"]["description"] == "short" and "summary" not in out["info"]
    assert "identifier" not in out["info"]["license"]
    assert out["paths"]["/x"]["get"]["parameters"][0]["schema"] == {"type": "integer", "nullable": True}
    props = out["components"]["schemas"]["A"]["properties"]
    assert props["ref"] == {"allOf": [{"$ref": "#/components/schemas/B"}], "nullable": True, "description": "d"}
    assert props["both"] == {"type": "string", "nullable": True, "example": "x"}
    assert props["fixed"] == {"enum": ["k"]}
    assert props["positive"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert props["file"] == {"type": "string", "format": "binary"}
    assert props["type"] == {"type": "string"}
    assert props["list"]["items"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}


def test_docs_page_reads_a_30_copy_of_the_apps_document(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "/static/docs.js" in page.text and "http" not in page.text
    assert "/docs/openapi-3.0.json" in client.get("/static/docs.js").text
    original = client.get("/openapi.json").json()
    copy = client.get("/docs/openapi-3.0.json").json()
    assert original["openapi"].startswith("3.1") and copy["openapi"] == "3.0.3"
    assert set(copy["paths"]) == set(original["paths"]) and "/api/v1/sample" in copy["paths"]
    text = json.dumps(copy)
    assert '"type": "null"' not in text and '"const"' not in text and '"examples": [' not in text
    slice_out = copy["components"]["schemas"]["SliceOut"]["properties"]
    assert slice_out["probability_png"]["nullable"] is True and slice_out["probability_png"]["type"] == "string"
