"""Property-based fuzzing (Hypothesis) with a bounded number of examples, so it runs in CI.

* The image reader: any bytes, mutated or truncated real images, and random valid images of
  random dtype, shape, mode and format give an ``(H, W, 3)`` uint8 array or an
  :class:`LggsegError`, never any other exception; valid images always decode, to the right size.
* The dataset indexer: random folder trees and file names give a valid index (slices sorted
  numerically, masks paired by number, nothing hidden) or an :class:`LggsegError`; checking and
  loading what it found raises nothing else either.
* The upload endpoint: random bytes, random zips and random images get 200, or a 4xx with a
  JSON ``{"detail": "..."}``, never a 5xx.

Every test is derandomised (a fixed seed per test), so a CI run is reproducible.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from lggseg.data.dataset import SLICE_NAME, check_dataset, index_dataset, load_volume
from lggseg.errors import LggsegError
from lggseg.io.images import image_from_bytes, mask_from_bytes

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SLOW_FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ============================================================================ the image reader


def _decode_or_refuse(data: bytes) -> None:
    """The reader's contract on arbitrary bytes."""
    for reader in (image_from_bytes, mask_from_bytes):
        try:
            out = reader(data, "fuzz.img")
        except LggsegError as exc:
            assert str(exc).startswith("fuzz.img: ") and "\n" not in str(exc)
            continue
        if reader is image_from_bytes:
            assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8 and min(out.shape[:2]) >= 1
        else:
            assert out.ndim == 2 and out.dtype == bool


MAGICS = [b"", b"II*\x00", b"MM\x00*", b"II+\x00", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x00" * 128 + b"DICM"]


@FUZZ
@given(prefix=st.sampled_from(MAGICS), body=st.binary(max_size=2048))
@example(prefix=b"II*\x00", body=b"\x08\x00\x00\x00")
@example(prefix=b"\x89PNG\r\n\x1a\n", body=b"")
def test_reader_on_random_bytes(prefix, body):
    _decode_or_refuse(prefix + body)


@st.composite
def encoded_images(draw) -> tuple[bytes, tuple[int, int]]:
    """A valid single-slice image file of random format, dtype, channels and size."""
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    fmt = draw(st.sampled_from(["tiff", "png", "jpeg"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if fmt == "tiff":
        dtype = draw(
            st.sampled_from(
                ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"]
            )
        )
        channels = draw(st.sampled_from([1, 2, 3, 4, 5]))
        shape = (height, width) if channels == 1 else (height, width, channels)
        if dtype == "bool":
            array = rng.random(shape) > 0.5
        elif dtype.startswith("float"):
            scale = draw(st.sampled_from([1.0, 1e4] if dtype == "float16" else [1.0, 1e4, 1e30]))
            array = (rng.standard_normal(shape) * scale).astype(dtype)
            if draw(st.booleans()):
                array.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        options: dict = {"compression": draw(st.sampled_from([None, "zlib"]))}
        if channels in (3, 4) and dtype in ("uint8", "uint16"):
            options["photometric"] = "rgb"
            if draw(st.booleans()):
                array = np.moveaxis(array, -1, 0)
                options["planarconfig"] = "separate"
        elif channels > 1:
            options.update(photometric="minisblack", planarconfig="contig")
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, **options)
        return buffer.getvalue(), (height, width)
    modes = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16", "CMYK"] if fmt == "png" else ["L", "RGB", "CMYK"]
    mode = draw(st.sampled_from(modes))
    if fmt == "png" and mode == "CMYK":
        mode = "RGB"
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    elif mode == "P":
        image = base.quantize(draw(st.integers(2, 64)))
    else:
        image = base.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper())
    return buffer.getvalue(), (height, width)


@FUZZ
@given(encoded_images())
def test_reader_decodes_every_valid_image(case):
    data, (height, width) = case
    image = image_from_bytes(data, "valid.img")
    assert image.shape == (height, width, 3) and image.dtype == np.uint8


@FUZZ
@given(
    encoded_images(),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_reader_on_mutated_and_truncated_images(case, flips, keep):
    data = bytearray(case[0])
    for position, value in flips:
        data[position % len(data)] = value
    if keep is not None:
        data = data[: int(len(data) * keep)]
    _decode_or_refuse(bytes(data))


@FUZZ
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.sampled_from([(0, 255), (0, 1)]),
    st.sampled_from(["png", "tiff"]),
    st.integers(0, 2**32 - 1),
)
def test_masks_round_trip(height, width, values, fmt, seed):
    truth = np.random.default_rng(seed).random((height, width)) > 0.5
    array = np.where(truth, values[1], values[0]).astype(np.uint8)
    buffer = io.BytesIO()
    if fmt == "png":
        Image.fromarray(array).save(buffer, format="PNG")
    else:
        tifffile.imwrite(buffer, array)
    assert np.array_equal(mask_from_bytes(buffer.getvalue()), truth)


# ============================================================================ the dataset indexer

NAME_PARTS = st.one_of(
    st.sampled_from(
        ["TCGA_CS_4941_19960909", "P", "p", "a_b", "x y", "üñï", "kaggle_3m", "__MACOSX", ".hidden", "README", "data"]
    ),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12),
)


@st.composite
def file_names(draw) -> str:
    if draw(st.booleans()):  # slice-like
        prefix = draw(NAME_PARTS)
        number = draw(
            st.one_of(st.integers(0, 120).map(str), st.sampled_from(["01", "007", "١٢", "99999999999999999999"]))
        )
        mask = draw(st.sampled_from(["", "", "_mask", "_MASK"]))
        ext = draw(st.sampled_from([".tif", ".tiff", ".png", ".TIF", ".jpg", ".tif\n", ""]))
        name = f"{draw(st.sampled_from(['', '', '._']))}{prefix}_{number}{mask}{ext}"
    else:
        name = draw(
            st.one_of(
                NAME_PARTS,
                st.sampled_from([".DS_Store", "Thumbs.db", "desktop.ini", "data.csv", "notes.txt", "README.md"]),
            )
        )
    assume(name not in (".", "..") and len(name.encode("utf-8")) <= 200)
    return name


def _valid_png(mask: bool) -> bytes:
    array = (
        (np.arange(16 * 16).reshape(16, 16) % 2 * 255).astype(np.uint8) if mask else np.full((16, 16, 3), 90, np.uint8)
    )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


CONTENTS = st.sampled_from(["empty", "junk", "image", "mask", "folder"])
TREES = st.lists(st.tuples(st.lists(NAME_PARTS, max_size=2), file_names(), CONTENTS), min_size=0, max_size=14)


def _build(root: Path, tree) -> None:
    for folders, name, content in tree:
        parent = root.joinpath(*folders)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            target = parent / name
            if content == "folder":
                target.mkdir(exist_ok=True)
            elif not target.exists():
                data = {"empty": b"", "junk": os.urandom(40), "image": _valid_png(False), "mask": _valid_png(True)}[
                    content
                ]
                target.write_bytes(data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a file where a folder was wanted, or the reverse: the tree just differs


@SLOW_FUZZ
@given(TREES)
@example(
    [
        (["P"], "P_1.png", "image"),
        (["P"], "P_2.tif\n", "junk"),
        (["P"], "P_10.png", "image"),
        (["P"], "P_10_mask.png", "mask"),
    ]
)
@example(
    [(["kaggle_3m", "P"], "P_1.png", "image"), (["__MACOSX", "P"], "._P_1.png", "junk"), ([], ".DS_Store", "junk")]
)
def test_indexer_on_random_folder_trees(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        _build(root, tree)
        try:
            index = index_dataset(root)
        except LggsegError:
            return
        assert index.patients
        for patient in index.patients:
            numbers = [s.number for s in patient.slices]
            assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
            assert not patient.folder.name.startswith(".") and patient.folder.name != "__MACOSX"
            for item in patient.slices:
                match = SLICE_NAME.fullmatch(item.image.name)
                assert match and not match["mask"] and int(match["number"]) == item.number
                assert item.image.parent == patient.folder and not item.image.name.startswith(".")
                if item.mask is not None:
                    mask_match = SLICE_NAME.fullmatch(item.mask.name)
                    assert mask_match and mask_match["mask"] and int(mask_match["number"]) == item.number
                    assert item.mask.parent == patient.folder
        assert all("\n" not in problem for problem in index.problems)
        report = check_dataset(root)
        assert report.n_slices <= sum(len(p.slices) for p in index.patients)
        for patient in index.patients:
            try:
                volume = load_volume(patient)
            except LggsegError:
                continue
            assert volume.images.shape == (len(patient.slices), 256, 256, 3)


# ============================================================================ the upload endpoint


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("lggseg.serve.app")
    import torch

    from lggseg.infer.segmenter import Segmenter
    from lggseg.model.bundle import save_weights
    from lggseg.model.unet import UNet, UNetConfig
    from lggseg.serve.app import create_app
    from lggseg.serve.limits import ServerLimits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp("fuzz-weights") / "tiny.safetensors"
    save_weights(weights, UNet(UNetConfig(base_width=4, depth=2)).eval())
    temp = tmp_path_factory.mktemp("fuzz-server")
    limits = ServerLimits(temp_dir=str(temp), max_upload_bytes=4 << 20, max_image_side=512)
    app = create_app(limits=limits, segmenter=Segmenter.from_weights(weights))
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as test_client:
        yield test_client
    assert list(temp.iterdir()) == [], "request temporary folders were left behind"


def _post(client, files: list[tuple[str, bytes, str]], images: bool = False):
    parts = [("files", (name, data, content_type)) for name, data, content_type in files]
    return client.post("/api/v1/segment", params={"images": str(images).lower()}, files=parts)


def _assert_answer(response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code == 200:
        body = response.json()
        assert isinstance(body["cases"], list) and isinstance(body["result_id"], str)
    else:
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"].startswith("application/json")
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail


UPLOAD_NAMES = st.one_of(
    st.sampled_from(
        [
            "slice.png",
            "P_1.tif",
            "P_2.tif",
            "P_1_mask.tif",
            "scan.nii.gz",
            "case.zip",
            "",
            "../../etc/passwd",
            "a\\b.png",
            "x" * 300,
        ]
    ),
    st.text(max_size=30),
)
CONTENT_TYPES = st.sampled_from(["application/octet-stream", "image/png", "application/zip", "text/plain", ""])


@SLOW_FUZZ
@given(
    st.lists(
        st.tuples(
            UPLOAD_NAMES,
            st.tuples(st.sampled_from(MAGICS + [b"PK\x03\x04", b"\x1f\x8b"]), st.binary(min_size=1, max_size=600)).map(
                lambda t: t[0] + t[1]
            ),
            CONTENT_TYPES,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_upload_of_random_bytes(client, files):
    _assert_answer(_post(client, files))


@st.composite
def zips(draw) -> bytes:
    buffer = io.BytesIO()
    entries = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(
                        [
                            "TCGA_CS_1_2000/TCGA_CS_1_2000_1.tif",
                            "TCGA_CS_1_2000/TCGA_CS_1_2000_1_mask.tif",
                            "P/P_2.png",
                            "kaggle_3m/P/P_1.png",
                            "__MACOSX/._x",
                            ".DS_Store",
                            "../evil.tif",
                            "/abs/P_1.png",
                            "a/../../b.png",
                            "dir/",
                        ]
                    ),
                    st.text(
                        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        min_size=1,
                        max_size=20,
                    ),
                ),
                st.sampled_from(["image", "mask", "junk", "empty"]),
            ),
            max_size=6,
        )
    )
    with zipfile.ZipFile(
        buffer, "w", compression=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    ) as archive:
        for name, content in entries:
            data = {
                "image": _valid_png(False),
                "mask": _valid_png(True),
                "junk": draw(st.binary(max_size=64)),
                "empty": b"",
            }[content]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # duplicate names are part of the fuzz
                archive.writestr(name, data)
    data = buffer.getvalue()
    if draw(st.booleans()):  # damage it
        position = draw(st.integers(0, max(0, len(data) - 1)))
        data = data[:position] + draw(st.binary(max_size=8)) + data[position + 1 :]
    return data


@SLOW_FUZZ
@given(zips())
def test_upload_of_random_zips(client, data):
    _assert_answer(_post(client, [("case.zip", data, "application/zip")]))


@SLOW_FUZZ
@given(
    st.lists(encoded_images(), min_size=1, max_size=3),
    st.lists(st.sampled_from(["P_1.tif", "P_2.tif", "P_1_mask.tif", "odd.png", "x.jpg"]), min_size=3, max_size=3),
)
def test_upload_of_random_valid_images(client, images, names):
    files = [(name, data, "application/octet-stream") for (data, _), name in zip(images, names)]
    response = _post(client, files, images=True)
    _assert_answer(response)
