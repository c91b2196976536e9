"""Memory under attack: small hostile inputs against a real server process (issue 12, "done when").

A server process (the app ``lggseg serve`` runs, with the shipped model and a 500-slice result
ready for download) receives inputs of under 1 MB each that used to make it allocate gigabytes,
and 40 concurrent downloads; its peak resident memory (``VmHWM``) must stay under 1.5 GiB.
"""

from __future__ import annotations

import gzip
import io
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

LIMIT_KB = int(1.5 * 2**20)  # 1.5 GiB

SERVER = r"""
import sys
import numpy as np
from lggseg.serve.app import create_app, setup_logging
from lggseg.serve.cases import Case
from lggseg.serve.limits import ServerLimits
from lggseg.serve.transport import build_server

port, temp = int(sys.argv[1]), sys.argv[2]
limits = ServerLimits(temp_dir=temp)
app = create_app(limits=limits)
mask = np.zeros((500, 256, 256), bool)
mask[200:300, 100:140, 90:150] = True
case = Case("big", "slices", np.zeros((1, 1, 1, 3), np.uint8), [f"big_{i}" for i in range(500)], [], mask=mask)
print(app.state.service.store.put([case]), flush=True)
setup_logging()
build_server(app, "127.0.0.1", port, limits).run()
"""


def _reset_peak(pid: int) -> None:
    """Start ``VmHWM`` again from the current resident size (Linux >= 4.0), so each attack gets its own peak."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # the peaks then accumulate; the bound still holds for the largest


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, int]]:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tmp_path_factory.mktemp("memory-server")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(temp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        result = process.stdout.readline().strip()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield base, result, process.pid
    finally:
        process.terminate()
        process.wait(30)


def _post(base: str, name: str, data: bytes | list[tuple[str, bytes]]) -> int:
    items = data if isinstance(data, list) else [(name, data)]
    parts = [("files", (n, d, "application/octet-stream")) for n, d in items]
    return httpx.post(base + "/api/v1/segment?images=false", files=parts, timeout=120).status_code


def _nifti_claiming_2048_cubed() -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((2048, 2048, 2048))
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4)


def _float64_zeros_nifti() -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape((256, 256, 500))
    header["vox_offset"] = 352
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (256 * 256 * 8)
    body = [packer.compress(header.binaryblock + b"\0" * 4)] + [packer.compress(zeros) for _ in range(500)]
    return b"".join(body) + packer.flush()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _lying_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"\xff\xc0")
    data[start + 5 : start + 9] = struct.pack(">HH", 2048, 2048)
    return bytes(data)


def _float64_tiff(side: int, samples: int) -> bytes:
    import tifffile

    tile = zlib.compress(np.zeros((256, 256, samples), np.float64).tobytes(), 9)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        (tile for _ in range((side // 256) ** 2)),
        shape=(side, side, samples),
        dtype=np.float64,
        tile=(256, 256),
        compression="zlib",
        photometric="rgb",
        extrasamples=[0] * (samples - 3),
    )
    return buffer.getvalue()


def _strip_bomb() -> bytes:
    """A 64 x 64 TIFF whose one deflate strip inflates to 512 MB (520 KB)."""
    import tifffile

    packer = zlib.compressobj(9)
    zeros = b"\0" * (1 << 24)
    strip = b"".join(packer.compress(zeros) for _ in range(32)) + packer.flush()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, iter([strip]), shape=(64, 64), dtype=np.uint8, compression="zlib", rowsperstrip=64)
    return buffer.getvalue()


def _png(size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_hostile_inputs_and_concurrent_downloads_stay_under_1_5_gib(server: tuple[str, str, int]) -> None:
    base, result, pid = server
    attacks: list[tuple[str, Any, set[int]]] = [
        ("53-byte .nii.gz claiming 2048^3 int16", _nifti_claiming_2048_cubed(), {413, 422}),
        ("250 KB .nii.gz of 256x256x500 float64 zeros", _float64_zeros_nifti(), {413}),
        (
            "749 KB zip of 466 entries of 1 MB zeros",
            _zip({f"P/P_{i}.tif": b"\0" * (1 << 20) for i in range(1, 467)}),
            {413},
        ),
        ("2048x2048 JPEG header on 64x64 data", _lying_jpeg(), {422}),
        ("2048x2048x4 float64 TIFF (128 MB decoded)", _float64_tiff(2048, 4), {200}),
        ("4096x4096x4 float64 TIFF", _float64_tiff(4096, 4), {413}),
        ("520 KB TIFF of 64x64 whose strip inflates to 512 MB", _strip_bomb(), {422}),
        ("2048x2048 PNG of zeros", _png(2048), {200}),
        ("500 tiny PNGs", [(f"s{i}.png", _png(8)) for i in range(500)], {413}),
    ]
    peaks = {"start": _status_kb(pid, "VmHWM")}
    for name, data, expected in attacks:
        size = sum(len(d) for _, d in data) if isinstance(data, list) else len(data)
        assert size < 1 << 20 or "TIFF" in name, (name, size)
        _reset_peak(pid)
        status = _post(base, name.split()[0] + ".bin", data)
        assert status in expected, (name, status)
        peaks[name] = _status_kb(pid, "VmHWM")
    statuses: list[int] = []
    _reset_peak(pid)
    urls = [f"{base}/api/v1/results/{result}/mask.zip", f"{base}/api/v1/results/{result}/mask.nii.gz?case=0"] * 20
    threads = [
        threading.Thread(target=lambda u=u: statuses.append(httpx.get(u, timeout=300).status_code)) for u in urls
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert statuses == [200] * 40
    peaks["40 concurrent downloads of a 500-slice result"] = _status_kb(pid, "VmHWM")
    assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    report = "\n".join(f"  {name}: peak {kb / 1024:.0f} MB" for name, kb in peaks.items())
    print("server peak resident memory after each attack:\n" + report)
    assert max(peaks.values()) < LIMIT_KB, report
