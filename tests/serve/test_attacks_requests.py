"""Hostile requests: names, origins, tokens, hosts, parameters, zips, full disks and work caps.

Each test is an attack that used to succeed (issue 12) and the refusal or behaviour that replaced it.
"""

from __future__ import annotations

import gzip
import io
import json
import resource
import subprocess
import sys
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from lggseg.errors import LggsegError  # noqa: E402
from lggseg.io import nifti  # noqa: E402
from lggseg.io.images import read_image  # noqa: E402
from lggseg.serve.app import create_app, host_names  # noqa: E402
from lggseg.serve.cases import Case  # noqa: E402
from lggseg.serve.limits import ServerLimits  # noqa: E402
from tests.serve.conftest import connect, multipart, read_response, request_bytes, running_server  # noqa: E402

SEGMENT = "/api/v1/segment?images=false"
BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests-0123456789"

pytestmark = pytest.mark.usefixtures("no_leftovers")  # tests/serve/conftest.py


@pytest.fixture(scope="module")
def temp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attack-temp")


@pytest.fixture(scope="module")
def make_client(shipped_segmenter: Any, temp_root: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(token: str | None = None, allowed_hosts: Any = ("127.0.0.1", "localhost", "::1"), **changes: Any) -> Any:
        limits = ServerLimits(temp_dir=str(temp_root), **changes)
        app = create_app(limits=limits, segmenter=shipped_segmenter, token=token, allowed_hosts=allowed_hosts)
        client = TestClient(app, base_url=BASE)
        client.__enter__()  # runs the lifespan, as uvicorn does
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def slice_bytes(sample_patient: Path) -> bytes:
    return (sample_patient / f"{sample_patient.name}_12.tif").read_bytes()


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def detail(response: Any, status: int, *words: str) -> str:
    assert response.status_code == status, response.text[:500]
    text = response.json()["detail"]
    assert isinstance(text, str)
    for word in words:
        assert word in text, text
    return text


def png(size: tuple[int, int] = (8, 8), value: int = 7) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ names, origins, parameters


def test_utf8_file_names_round_trip(client: Any, shipped_segmenter: Any, slice_bytes: bytes, tmp_path: Path) -> None:
    response = client.post(SEGMENT, files=files(("脑.tif", slice_bytes), ("Müller.tif", slice_bytes)))
    assert response.status_code == 200, response.text[:300]
    names = sorted(case["name"] for case in response.json()["cases"])
    assert names == ["Müller", "脑"]
    assert sorted(s for c in response.json()["cases"] for s in c["sources"]) == ["Müller.tif", "脑.tif"]
    limits = ServerLimits(temp_dir=str(tmp_path))
    with running_server(create_app(limits=limits, segmenter=shipped_segmenter), limits) as address:
        body, content_type = multipart([("Ärger 脑 scan.tif", slice_bytes)])  # raw UTF-8 bytes, as browsers send
        with connect(address, 60) as sock:
            sock.sendall(request_bytes("POST", SEGMENT, body, {"Content-Type": content_type}))
            status, _, answer = read_response(sock, 60)
    assert status == 200 and json.loads(answer)["cases"][0]["name"] == "Ärger 脑 scan"


def test_opaque_and_cross_site_origins_are_refused(client: Any, slice_bytes: bytes) -> None:
    detail(client.post(SEGMENT, files=files(("a.tif", slice_bytes)), headers={"origin": "null"}), 403, "Origin: null")
    detail(client.post(SEGMENT, files=files(("a.tif", slice_bytes)), headers={"sec-fetch-site": "cross-site"}), 403)
    same = client.post(SEGMENT, files=files(("a.tif", slice_bytes)), headers={"origin": BASE})
    assert same.status_code == 200


def test_invalid_parameters_get_a_string_detail(client: Any) -> None:
    text = detail(client.get("/api/v1/results/x/mask.zip?case=abc"), 422, "case")
    assert "integer" in text
    text = detail(client.post(SEGMENT.replace("false", "maybe"), files=files(("a.png", png()))), 422, "images")


def test_a_request_of_masks_only_is_400(client: Any, sample_patient: Path) -> None:
    mask = (sample_patient / f"{sample_patient.name}_12_mask.tif").read_bytes()
    text = detail(client.post(SEGMENT, files=files((f"{sample_patient.name}_12_mask.tif", mask))), 400)
    assert text.startswith("nothing to segment") and "mask ignored" in text


def test_a_nan_sform_still_gives_a_mask_download(client: Any, sample_patient: Path, tmp_path: Path) -> None:
    volume = np.stack([read_image(sample_patient / f"{sample_patient.name}_{n}.tif")[..., 1] for n in (11, 12)])
    image = nib.Nifti1Image(nifti.to_nifti_axes(volume), np.eye(4))
    image.header["sform_code"] = 1
    for row in ("srow_x", "srow_y", "srow_z"):
        image.header[row] = [np.nan] * 4
    response = client.post(SEGMENT, files=files(("nan.nii.gz", gzip.compress(image.to_bytes()))))
    assert response.status_code == 200, response.text[:300]
    download = client.get(response.json()["cases"][0]["downloads"]["nifti"])
    assert download.status_code == 200
    (tmp_path / "mask.nii.gz").write_bytes(download.content)
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert np.isfinite(mask.affine).all() and mask.shape[2] == 2


# ------------------------------------------------------------------------------------ token and hosts


def test_api_token_guards_the_api_but_not_health_or_the_page(make_client: Any, slice_bytes: bytes) -> None:
    client = make_client(token=TOKEN)
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    refused = client.post(SEGMENT, files=files(("a.tif", slice_bytes)))
    detail(refused, 401, "Authorization: Bearer")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    detail(client.post(SEGMENT, files=files(("a.tif", slice_bytes)), headers={"authorization": "Bearer nope"}), 401)
    ok = client.post(SEGMENT, files=files(("a.tif", slice_bytes)), headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    detail(client.get(ok.json()["png_zip"]), 401)  # downloads too
    # the web page: /?token= once sets an HttpOnly SameSite=Strict cookie, which the page's requests carry
    detail(client.get("/?token=wrong", follow_redirects=False), 401)
    page = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/"
    cookie = page.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and TOKEN not in cookie
    assert client.get(ok.json()["png_zip"]).status_code == 200  # the client kept the cookie
    client.cookies.clear()
    detail(client.get(ok.json()["png_zip"]), 401)


def test_short_or_blank_tokens_are_refused_at_start(shipped_segmenter: Any) -> None:
    for bad in ("short", "has spaces in the middle of it", "é" * 20):
        with pytest.raises(LggsegError, match="API token"):
            create_app(segmenter=shipped_segmenter, token=bad)


def test_allowed_hosts_for_a_lan_bind(make_client: Any, slice_bytes: bytes) -> None:
    names = host_names("0.0.0.0", ["scanner.lan", "10.1.2.3"])
    assert names is not None and {"scanner.lan", "10.1.2.3", "127.0.0.1", "localhost"} <= set(names)
    assert host_names("0.0.0.0", ["*"]) is None and host_names("127.0.0.1") == ["127.0.0.1", "::1", "localhost"]
    assert "192.168.7.9" in (host_names("192.168.7.9") or [])
    client = make_client(allowed_hosts=names)
    assert client.get("/healthz", headers={"host": "scanner.lan:8000"}).status_code == 200
    detail(client.get("/healthz", headers={"host": "evil.example"}), 400, "not served here")


@pytest.mark.slow  # three CLI start-ups
def test_serve_refuses_bad_options_with_one_line() -> None:
    for args in (["--max-upload-mb", "nan"], ["--max-upload-mb", "-1"], ["--token", "short"]):
        result = subprocess.run(
            [sys.executable, "-m", "lggseg", "serve", "--port", "1", *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr


# ------------------------------------------------------------------------------------ zips and full disks


def test_a_small_zip_of_many_1mb_entries_is_refused_before_writing(client: Any) -> None:
    bomb = make_zip({f"P/P_{i}.tif": b"\0" * (1 << 20) for i in range(1, 467)})
    assert len(bomb) < 800_000  # 749 KB in the report
    began = time.perf_counter()
    detail(client.post(SEGMENT, files=files(("many.zip", bomb))), 413, "in all", "zip bomb guard")
    assert time.perf_counter() - began < 5


@pytest.mark.parametrize("where", ["zip extraction", "upload"])
def test_a_full_disk_is_507_not_the_clients_fault(client: Any, where: str, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    if where == "zip extraction":  # 3 MB of 0/1 bytes: deflates ~6x, under the ratio guard
        payload, limit = make_zip({"P/P_1.tif": rng.integers(0, 2, 3 << 20, dtype=np.uint8).tobytes()}), 1 << 20
    else:
        payload, limit = rng.bytes(600_000), 256 << 10
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # the disk "fills" at `limit` bytes per file
    try:
        response = client.post(SEGMENT, files=files(("p.zip", payload)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    detail(response, 507, "disk space")
    assert any("disk full" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------ work caps


def test_five_hundred_tiny_pngs_are_refused_before_decoding(client: Any) -> None:
    loose = files(*[(f"scan{i}.png", png()) for i in range(500)])
    began = time.perf_counter()
    detail(client.post(SEGMENT, files=loose), 413, "500 slices")
    named = files(*[(f"P_{i}.png", png()) for i in range(1, 501)])
    detail(client.post(SEGMENT, files=named), 413, "500 slices")
    detail(client.post(SEGMENT, files=files(*[(f"s{i}.png", png()) for i in range(65)])), 413, "65 separate cases")
    assert time.perf_counter() - began < 10


@pytest.fixture(scope="module")
def float64_zeros_nifti() -> bytes:
    """A ~250 KB .nii.gz of 256 x 256 x 500 float64 zeros (262 MB once decoded)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape((256, 256, 500))
    header["vox_offset"] = 352
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(header.binaryblock + b"\0" * 4)]
    zeros = b"\0" * (256 * 256 * 8)
    parts += [compressor.compress(zeros) for _ in range(500)]
    return b"".join(parts) + compressor.flush()


def test_a_small_float64_nifti_of_zeros_cannot_hold_the_worker(client: Any, float64_zeros_nifti: bytes) -> None:
    assert len(float64_zeros_nifti) < 300_000
    began = time.perf_counter()
    text = detail(client.post(SEGMENT, files=files(("zeros.nii.gz", float64_zeros_nifti))), 413, "zeros.nii.gz")
    assert "to decode" in text or "slices" in text
    assert time.perf_counter() - began < 3


# ------------------------------------------------------------------------------------ downloads


@pytest.mark.slow  # 40 downloads of a 500-slice result, built one at a time
def test_forty_concurrent_downloads_run_one_at_a_time(client: Any) -> None:
    service = client.app.state.service
    mask = np.zeros((500, 256, 256), bool)
    mask[200:300, 100:140, 90:150] = True
    images = np.zeros((1, 1, 1, 3), np.uint8)
    result = service.store.put([Case("big", "slices", images, [f"big_{i}" for i in range(500)], [], mask=mask)])
    seen: list[int] = []
    statuses: list[int] = []
    original = service._zip_bytes

    def watched(*args: Any) -> Any:
        seen.append(service.downloads.running)
        return original(*args)

    service._zip_bytes = watched
    try:
        urls = [f"/api/v1/results/{result}/mask.zip", f"/api/v1/results/{result}/mask.nii.gz?case=0"] * 20
        threads = [threading.Thread(target=lambda u=u: statuses.append(client.get(u).status_code)) for u in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        del service._zip_bytes
    assert statuses == [200] * 40
    assert seen and max(seen) == 1  # one download built at a time
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/results/{result}/mask.zip").content))
    assert len(archive.namelist()) == 500
    middle = np.asarray(Image.open(archive.open("big/big_250_mask.png"))) > 0
    assert np.array_equal(middle, mask[250])
