"""The HTTP API (lggseg.serve.app) on real sample slices and on every kind of bad input."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import subprocess
import sys
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

import nibabel as nib  # noqa: E402

with warnings.catch_warnings():  # starlette's notice about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from lggseg.evaluation import metrics  # noqa: E402
from lggseg.infer.segmenter import Segmenter  # noqa: E402
from lggseg.io import nifti  # noqa: E402
from lggseg.io.images import read_image, read_mask  # noqa: E402
from lggseg.model.bundle import shipped_sha256  # noqa: E402
from lggseg.serve.app import create_app, is_loopback  # noqa: E402
from lggseg.serve.limits import ServerLimits  # noqa: E402
from lggseg.serve.uploads import clean_label, safe_name  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_leftovers"),  # tests/serve/conftest.py
]

SEGMENT = "/api/v1/segment"
BASE = "http://127.0.0.1:8000"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_weights(None)


@pytest.fixture(scope="module")
def temp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-temp")


@pytest.fixture(scope="module")
def make_client(segmenter: Segmenter, temp_root: Path) -> Any:
    """Build a client on an app with some limits changed; all apps share one model."""

    def make(**changes: Any) -> TestClient:
        limits = ServerLimits(temp_dir=str(temp_root), **changes)
        return TestClient(create_app(limits=limits, segmenter=segmenter), base_url=BASE)

    return make


@pytest.fixture(scope="module")
def patient(sample_patient: Path) -> Path:
    return sample_patient


def slice_path(patient: Path, n: int, mask: bool = False) -> Path:
    return patient / f"{patient.name}_{n}{'_mask' if mask else ''}.tif"


def upload(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def refused(response: Any, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for word in words:
        assert word in detail, detail
    return detail


def make_zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data (a bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def nifti_bytes(volume: np.ndarray, affine: np.ndarray, compress: bool = True) -> bytes:
    image = nib.Nifti1Image(nifti.to_nifti_axes(volume), affine)
    image.header.set_xyzt_units("mm")
    raw = image.to_bytes()
    return gzip.compress(raw) if compress else raw


# ------------------------------------------------------------------------------------ model, page, docs


def test_healthz_reports_the_model(client: TestClient, segmenter: Segmenter) -> None:
    health = client.get("/healthz").json()
    assert health["ready"] is True and health["status"] == "ok"
    assert health["model"]["sha256"] == segmenter.bundle.sha256 == shipped_sha256()
    assert health["model"]["networks"] == 1
    (member,) = health["model"]["members"]
    assert member["sha256"] == shipped_sha256() and member["config"]["base_width"] == 12
    assert health["runtime"] == "torch"
    assert health["limits"]["max_upload_bytes"] == 50 * 2**20


def test_healthz_lists_every_member_of_an_ensemble() -> None:
    from lggseg.infer.ensemble import accurate_path

    accurate = Segmenter.from_weights(accurate_path())
    health = TestClient(create_app(segmenter=accurate), base_url=BASE).get("/healthz").json()
    members = health["model"]["members"]
    assert health["model"]["networks"] == len(members) == 4
    assert [m["sha256"] for m in members] == [b.sha256 for b, _ in accurate.members]
    assert len({m["sha256"] for m in members}) == 4 and {m["config"]["base_width"] for m in members} == {12, 16}


def test_page_assets_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file-input"' in page.text and "default-src 'none'" in page.headers["content-security-policy"]
    texts = [page.text]
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        texts.append(asset.text)
    for text in texts:  # nothing from a CDN: the machine may be offline
        assert "http" not in text.replace("http://www.w3.org/2000/svg", "")
    assert client.get("/static/server.py").status_code == 404
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/segment"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert {"/api/v1/results/{result_id}/mask.nii.gz", "/api/v1/results/{result_id}/mask.zip", "/healthz"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------------------------ real samples


def test_one_slice_matches_the_library(client: TestClient, segmenter: Segmenter, patient: Path) -> None:
    path = slice_path(patient, 12)
    expected = segmenter.segment(read_image(path)[None])[0]
    # named .dat: the type comes from the content, not the name
    response = client.post(SEGMENT, files=upload(("upload.dat", path.read_bytes())))
    assert response.status_code == 200, response.text
    result = response.json()
    (case,) = result["cases"]
    assert case["kind"] == "slice" and case["shape"] == [1, 256, 256]
    (item,) = case["slices"]
    assert item["tumor_area_px"] == int(expected.sum()) == case["tumor_volume_voxels"]
    assert case["slices_with_tumor"] == int(expected.any())
    assert np.array_equal(decode_png(item["mask_png"]) > 0, expected)
    assert decode_png(item["overlay_png"]).shape == (256, 256, 3)
    assert decode_png(item["flair_png"]).shape == (256, 256)
    assert result["model_sha256"] == segmenter.bundle.sha256

    archive = zipfile.ZipFile(io.BytesIO(client.get(case["downloads"]["png_zip"]).content))
    (name,) = archive.namelist()
    assert name == "upload/upload_mask.png"
    assert np.array_equal(np.asarray(Image.open(archive.open(name))) > 0, expected)

    lean = client.post(SEGMENT + "?images=false", files=upload(("a.tif", path.read_bytes()))).json()
    assert lean["cases"][0]["slices"][0]["overlay_png"] is None
    assert lean["cases"][0]["slices"][0]["tumor_area_px"] == item["tumor_area_px"]


def test_slices_of_one_patient_are_one_volume(
    client: TestClient, segmenter: Segmenter, patient: Path, tmp_path: Path
) -> None:
    numbers = [11, 12, 13]
    images = np.stack([read_image(slice_path(patient, n)) for n in numbers])
    truth = np.stack([read_mask(slice_path(patient, n, mask=True)) for n in numbers])
    expected = segmenter.segment(images)  # normalised together, 3D post-processing
    files = [slice_path(patient, n, mask) for n in (13, 11, 12) for mask in (False, True)]  # any order
    response = client.post(SEGMENT, files=upload(*[(p.name, p.read_bytes()) for p in files]))
    assert response.status_code == 200, response.text
    (case,) = response.json()["cases"]
    assert case["kind"] == "slices" and case["name"] == patient.name
    assert [s["name"] for s in case["slices"]] == [f"{patient.name}_{n}" for n in numbers]
    assert [s["tumor_area_px"] for s in case["slices"]] == expected.reshape(3, -1).sum(1).tolist()
    assert [s["truth_area_px"] for s in case["slices"]] == truth.reshape(3, -1).sum(1).tolist()
    assert case["tumor_volume_voxels"] == int(expected.sum())
    assert case["dice"] == pytest.approx(metrics.dice(expected, truth), abs=1e-6)

    (tmp_path / "mask.nii.gz").write_bytes(client.get(case["downloads"]["nifti"]).content)
    data = nifti.from_nifti_axes(np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj))
    assert np.array_equal(data > 0, expected)


def test_zip_of_a_patient_folder(client: TestClient, patient: Path) -> None:
    entries = {
        f"{patient.name}/{slice_path(patient, n, m).name}": slice_path(patient, n, m).read_bytes()
        for n in (10, 11, 12)
        for m in (False, True)
    }
    entries["__MACOSX/._junk"] = b"x"
    entries[f"{patient.name}/notes.txt"] = b"ignored"
    response = client.post(SEGMENT, files=upload(("patient.zip", make_zip(entries))))
    assert response.status_code == 200, response.text
    (case,) = response.json()["cases"]
    assert case["kind"] == "patient" and case["name"] == patient.name and case["shape"] == [3, 256, 256]
    assert case["dice"] is not None and 0.0 <= case["dice"] <= 1.0
    assert case["tumor_volume_voxels"] == sum(s["tumor_area_px"] for s in case["slices"])


def test_nifti_volume_keeps_its_affine(client: TestClient, patient: Path, tmp_path: Path) -> None:
    volume = np.stack([read_image(slice_path(patient, n))[..., 1] for n in (11, 12, 13)])
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    affine[:3, 3] = (-60, -70, 10)
    response = client.post(SEGMENT, files=upload(("scan.bin", nifti_bytes(volume, affine))))
    assert response.status_code == 200, response.text
    (case,) = response.json()["cases"]
    assert case["kind"] == "nifti" and case["shape"] == [3, 256, 256]
    assert case["voxel_size_mm"] == [0.5, 0.5, 3.0]
    assert case["tumor_volume_ml"] == pytest.approx(case["tumor_volume_voxels"] * 0.75 / 1000, abs=1e-3)
    download = client.get(case["downloads"]["nifti"])
    assert (
        download.status_code == 200
        and download.headers["content-disposition"] == 'attachment; filename="scan_mask.nii.gz"'
    )
    (tmp_path / "mask.nii.gz").write_bytes(download.content)
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert np.allclose(mask.affine, affine)
    data = nifti.from_nifti_axes(np.asarray(mask.dataobj))
    assert data.shape == (3, 256, 256)
    assert [int(s.sum()) for s in data] == [s["tumor_area_px"] for s in case["slices"]]


def test_unknown_results_are_404(client: TestClient, patient: Path) -> None:
    refused(client.get("/api/v1/results/nope/mask.nii.gz"), 404, "no result")
    result = client.post(SEGMENT + "?images=false", files=upload(("a.tif", slice_path(patient, 2).read_bytes()))).json()
    refused(client.get(f"/api/v1/results/{result['result_id']}/mask.zip?case=5"), 404, "cases 0..0")


def test_results_are_evicted_least_recently_used(make_client: Any, patient: Path) -> None:
    small = make_client(max_results=1)
    data = slice_path(patient, 1).read_bytes()
    first = small.post(SEGMENT + "?images=false", files=upload(("a.tif", data))).json()
    second = small.post(SEGMENT + "?images=false", files=upload(("b.tif", data))).json()
    assert small.get(second["png_zip"]).status_code == 200
    refused(small.get(first["png_zip"]), 404, "evicted")


# ------------------------------------------------------------------------------------ refusals


def test_upload_size_is_enforced_while_reading(make_client: Any, patient: Path) -> None:
    small = make_client(max_upload_bytes=100_000)
    big = slice_path(patient, 12).read_bytes() * 2
    refused(small.post(SEGMENT, files=upload(("a.tif", big))), 413, "larger than")

    boundary = "lggsegtest"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the body is counted as it arrives
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.tif"\r\n\r\n'.encode()
        for _ in range(50):
            yield b"\0" * 10_000

    response = small.post(
        SEGMENT, content=chunked(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    refused(response, 413, "larger than")


def test_request_shape_errors(client: TestClient, make_client: Any, patient: Path) -> None:
    refused(client.post(SEGMENT, content=b"hello", headers={"content-type": "text/plain"}), 415, "multipart")
    refused(client.post(SEGMENT, content=b"x", headers={"content-type": "multipart/form-data"}), 400, "boundary")
    response = client.post(
        SEGMENT,
        content=b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    refused(response, 400, "no files")
    refused(client.post(SEGMENT, files=upload(("empty.tif", b""))), 400, "empty.tif: empty file")
    refused(
        client.post(SEGMENT, content=b"--b\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=b"}),
        400,
    )
    few = make_client(max_files=2)
    data = slice_path(patient, 1).read_bytes()
    refused(few.post(SEGMENT, files=upload(("a.tif", data), ("b.tif", data), ("c.tif", data))), 413, "too many files")


def test_type_is_judged_by_content(client: TestClient) -> None:
    refused(client.post(SEGMENT, files=upload(("slice.tif", b"this is not an image"))), 415, "slice.tif", "by content")
    refused(client.post(SEGMENT, files=upload(("scan.nii.gz", gzip.compress(b"not a nifti" * 100)))), 415)
    refused(client.post(SEGMENT, files=upload(("evil.png", b"<script>alert(1)</script>"))), 415)


def test_truncated_images_are_422(client: TestClient, patient: Path) -> None:
    tiff = slice_path(patient, 12).read_bytes()
    refused(client.post(SEGMENT, files=upload(("cut.tif", tiff[: len(tiff) // 2]))), 422, "cut.tif")
    buffer = io.BytesIO()
    Image.fromarray(read_image(slice_path(patient, 12))).save(buffer, format="PNG")
    refused(client.post(SEGMENT, files=upload(("cut.png", buffer.getvalue()[:3000]))), 422, "cut.png")


def test_decompression_bombs_and_huge_images_are_413(client: TestClient, make_client: Any, patient: Path) -> None:
    refused(client.post(SEGMENT, files=upload(("bomb.png", png_header_only(100_000, 100_000)))), 413, "bomb.png")
    refused(client.post(SEGMENT, files=upload(("wide.png", png_header_only(5000, 300)))), 413, "5000x300", "2048x2048")
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, format="PNG")  # 9 MB of pixels in a few kB
    refused(client.post(SEGMENT, files=upload(("zeros.png", buffer.getvalue()))), 413, "3000x3000")
    tiny = make_client(max_image_side=128)
    refused(tiny.post(SEGMENT, files=upload(("a.tif", slice_path(patient, 1).read_bytes()))), 413, "256x256", "128x128")
    few_voxels = make_client(max_voxels=100_000)
    data = slice_path(patient, 1).read_bytes()
    refused(few_voxels.post(SEGMENT, files=upload(("a.tif", data), ("b.tif", data))), 413, "voxels")


@pytest.mark.parametrize(
    "name", ["../evil.tif", "a/../../evil.tif", "..\\evil.tif", "/etc/evil.tif", "\\evil.tif", "C:/evil.tif"]
)
def test_zip_entries_outside_the_archive_are_refused(
    client: TestClient, patient: Path, temp_root: Path, name: str
) -> None:
    data = make_zip({f"{patient.name}/{patient.name}_1.tif": slice_path(patient, 1).read_bytes(), name: b"II*\x00evil"})
    refused(client.post(SEGMENT, files=upload(("p.zip", data))), 400, "evil.tif")
    assert not (temp_root.parent / "evil.tif").exists() and not Path("/etc/evil.tif").exists()


def test_zip_symlinks_are_refused(client: TestClient) -> None:
    info = zipfile.ZipInfo("link.tif")
    info.external_attr = 0o120777 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, "/etc/passwd")
    refused(client.post(SEGMENT, files=upload(("p.zip", buffer.getvalue()))), 400, "symbolic link")


def test_zip_bombs_are_413(client: TestClient, make_client: Any) -> None:
    bomb = make_zip({"P/P_1.tif": b"\0" * (20 * 2**20)})  # 20 MB that deflate to ~20 kB
    assert len(bomb) < 100_000
    refused(client.post(SEGMENT, files=upload(("bomb.zip", bomb))), 413, "zip bomb")
    small_total = make_client(max_unzipped_bytes=2**20)
    rng = np.random.default_rng(0)
    entries = {f"P/P_{i}.tif": rng.bytes(400_000) for i in range(1, 4)}
    refused(
        small_total.post(SEGMENT, files=upload(("big.zip", make_zip(entries, zipfile.ZIP_STORED)))), 413, "uncompressed"
    )
    few_entries = make_client(max_zip_entries=5)
    refused(
        few_entries.post(SEGMENT, files=upload(("many.zip", make_zip({f"P/P_{i}.tif": b"x" for i in range(6)})))),
        413,
        "entries",
    )


def test_corrupt_zip_and_empty_patient_zip(client: TestClient) -> None:
    refused(client.post(SEGMENT, files=upload(("bad.zip", b"PK\x03\x04" + b"\x00" * 200))), 422, "bad.zip")
    refused(
        client.post(SEGMENT, files=upload(("empty.zip", make_zip({"P/readme.md": b"hi"})))), 422, "no patient folders"
    )


def test_corrupt_and_huge_nifti(client: TestClient, patient: Path) -> None:
    volume = np.stack([read_image(slice_path(patient, n))[..., 1] for n in (11, 12)])
    whole = nifti_bytes(volume, np.eye(4), compress=False)
    refused(client.post(SEGMENT, files=upload(("cut.nii", whole[: len(whole) // 2]))), 422, "cut.nii")
    refused(client.post(SEGMENT, files=upload(("cut.nii.gz", gzip.compress(whole)[:4000]))), 422, "cut.nii.gz")
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((10_000, 10_000, 10_000))
    header["vox_offset"] = 352
    claim = gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1000)
    refused(client.post(SEGMENT, files=upload(("huge.nii.gz", claim))), 413, "huge.nii.gz")


def test_requests_queue_and_overflow_is_503(segmenter: Segmenter, temp_root: Path, patient: Path) -> None:
    release = threading.Event()

    def slow_backend(batch: np.ndarray) -> np.ndarray:
        release.wait(30)
        return np.zeros((batch.shape[0], 1, *batch.shape[2:]), np.float32)

    limits = ServerLimits(workers=1, queue=1, temp_dir=str(temp_root))
    app = create_app(limits=limits, segmenter=Segmenter(segmenter.bundle, slow_backend))
    gate = app.state.service.gate
    data = slice_path(patient, 1).read_bytes()
    answers: list[int] = []
    with TestClient(app, base_url=BASE) as client:
        post = lambda: answers.append(client.post(SEGMENT, files=upload(("a.tif", data))).status_code)  # noqa: E731
        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while not (gate.admitted == 2 and gate.running == 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (gate.admitted, gate.running) == (2, 1)  # one segmenting, one waiting
        refused(client.post(SEGMENT, files=upload(("a.tif", data))), 503, "busy")
        release.set()
        for thread in threads:
            thread.join(30)
    assert answers == [200, 200] and gate.admitted == 0


def test_foreign_hosts_and_cross_site_posts_are_refused(client: TestClient, patient: Path) -> None:
    refused(client.get("/healthz", headers={"host": "evil.example"}), 400, "not served here")
    assert client.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
    data = slice_path(patient, 1).read_bytes()
    refused(
        client.post(SEGMENT, files=upload(("a.tif", data)), headers={"origin": "http://evil.example"}),
        403,
        "cross-origin",
    )


# ------------------------------------------------------------------------------------ helpers and CLI


def test_helpers() -> None:
    assert (
        clean_label("C:\\scans\\a.tif", 0) == "a.tif"
        and clean_label("../../x\n.tif", 0) == "x.tif"
        and clean_label("", 2) == "file3"
    )
    assert safe_name("../a b/ü.nii") == "a_b_.nii" and safe_name("...") == "case"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(Exception, match="max_upload_bytes"):
        ServerLimits(max_upload_bytes=0)


def test_cli_stays_light_and_refuses_a_bad_port() -> None:
    code = "import sys, lggseg.commands.cli; assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "lggseg", "serve", "--port", "70000"], capture_output=True, text=True, timeout=120
    )
    assert (
        result.returncode == 2
        and result.stderr.startswith("error: ")
        and "--port" in result.stderr
        and "65535" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_api_docs_page_works_offline(client: TestClient) -> None:
    """/docs is served from local Swagger UI files, with no CDN reference."""
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "/docs-assets/swagger-ui-bundle.js" in page.text
    asset = client.get("/docs-assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert client.get("/docs-assets/../server.py").status_code == 404
    assert "/api/v1/segment" in client.get("/openapi.json").json()["paths"]
