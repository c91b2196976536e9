"""Robust input handling: odd but valid slices are converted, bad files get one clear error.

Covers the conversions documented in :mod:`lggseg.io.images` (bit depth, grayscale, alpha,
palette, colour spaces, TIFF layouts and compressions), broken and hostile files (truncated,
corrupt, empty, non-image, DICOM, decompression bombs), stray files in a data folder, slices of
other sizes through ``lggseg predict``, and a batch ``predict`` in which one file is bad.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from lggseg.commands.cli import main
from lggseg.data.dataset import check_dataset, index_dataset, load_volume
from lggseg.errors import LggsegError
from lggseg.io.images import MAX_PIXELS, image_from_bytes, mask_from_bytes, read_image
from lggseg.model.bundle import save_weights
from lggseg.model.unet import UNet, UNetConfig

RNG = np.random.default_rng(1234)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- file makers


def _pil(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    return _pil(Image.fromarray(array), "PNG")


def _tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _rescaled(values: np.ndarray) -> np.ndarray:
    """The documented rescale: own finite min..max -> 0..255, rounded."""
    values = values.astype(np.float64)
    lo, hi = values.min(), values.max()
    return np.round((values - lo) / (hi - lo) * 255).astype(np.uint8)


def _png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares width x height RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _tiff_declaring(width: int, height: int) -> bytes:
    """A tiny planar RGB TIFF whose tags are patched to declare width x height (x 3 planes)."""
    data = bytearray(_tiff(np.zeros((3, 16, 16), np.uint8), photometric="rgb", planarconfig="separate"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tags[name]
            struct.pack_into("<I" if int(tag.dtype) == 4 else "<H", data, tag.valueoffset, value)
    return bytes(data)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG with its SOF0 frame size patched to width x height."""
    data = bytearray(_pil(Image.fromarray(RGB), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# ----------------------------------------------------------------------------- conversions


def test_16bit_grayscale_tiff_is_rescaled_from_its_own_range():
    gray = np.linspace(1000, 4000, 24 * 32).astype(np.uint16).reshape(24, 32)
    image = image_from_bytes(_tiff(gray))
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], _rescaled(gray))
    assert image.min() == 0 and image.max() == 255
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])


def test_16bit_rgb_tiff_is_rescaled_over_all_channels():
    rgb = RNG.integers(0, 65535, (24, 32, 3), dtype=np.uint16)
    image = image_from_bytes(_tiff(rgb, photometric="rgb"))
    assert np.array_equal(image, _rescaled(rgb))


def test_16bit_grayscale_png_is_rescaled():
    gray = np.linspace(0, 60000, 24 * 32).astype(np.uint16).reshape(24, 32)
    data = _pil(Image.fromarray(gray), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    assert np.array_equal(image_from_bytes(data)[..., 1], _rescaled(gray))


def test_signed_int16_tiff_with_negative_values():
    gray = np.linspace(-1024, 3071, 24 * 32).astype(np.int16).reshape(24, 32)
    image = image_from_bytes(_tiff(gray))
    assert np.array_equal(image[..., 0], _rescaled(gray))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_tiff_is_rescaled(dtype):
    gray = np.linspace(-0.5, 2.5, 24 * 32).astype(dtype).reshape(24, 32)
    image = image_from_bytes(_tiff(gray))
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    assert np.array_equal(image[..., 0], _rescaled(gray))


def test_float_tiff_with_nan_and_infinities_uses_the_finite_range():
    gray = np.linspace(0.0, 1.0, 24 * 32, dtype=np.float32).reshape(24, 32)
    gray[0, 0], gray[0, 1], gray[0, 2] = np.nan, np.inf, -np.inf
    image = image_from_bytes(_tiff(gray))
    assert image[0, :3, 0].tolist() == [0, 0, 0]  # non-finite -> the minimum
    assert image[-1, -1, 0] == 255


def test_float64_near_the_limits_does_not_overflow():
    gray = np.array([[-1.7e308, 0.0], [1.0, 1.7e308]])
    with np.errstate(all="raise"):  # no overflow or invalid-cast warnings either
        image = image_from_bytes(_tiff(gray))
    assert image[..., 0].tolist() == [[0, 128], [128, 255]]


def test_constant_16bit_image_becomes_zeros():
    assert image_from_bytes(_tiff(np.full((8, 8), 777, np.uint16))).max() == 0


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_grayscale_is_repeated_to_three_channels(fmt):
    gray = np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))
    image = image_from_bytes(_pil(Image.fromarray(gray), fmt))
    assert image.shape == (24, 32, 3)
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    if fmt != "JPEG":
        assert np.array_equal(image[..., 1], gray)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_rgba_drops_alpha(fmt):
    rgba = np.dstack([RGB, RNG.integers(0, 256, RGB.shape[:2], dtype=np.uint8)])
    assert np.array_equal(image_from_bytes(_pil(Image.fromarray(rgba), fmt)), RGB)


def test_gray_alpha_png_keeps_the_gray():
    gray = RGB[..., 0]
    data = _pil(Image.fromarray(np.dstack([gray, np.full_like(gray, 9)]), "LA"), "PNG")
    assert np.array_equal(image_from_bytes(data)[..., 2], gray)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_palette_image_is_converted_to_its_colours(fmt):
    palette_image = Image.fromarray(RGB).quantize(16)
    expected = np.asarray(palette_image.convert("RGB"))
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 2  # the colours matter, not the indices
    assert np.array_equal(image_from_bytes(_pil(palette_image, fmt)), expected)


def test_palette_png_with_transparency():
    palette_image = Image.fromarray(RGB).quantize(8)
    palette_image.info["transparency"] = 0
    expected = np.asarray(palette_image.convert("RGBA"))[..., :3]
    assert np.array_equal(image_from_bytes(_pil(palette_image, "PNG", transparency=0)), expected)


def test_bilevel_png_is_0_or_255():
    bits = Image.fromarray(RGB[..., 0] > 127).convert("1")
    image = image_from_bytes(_pil(bits, "PNG"))
    assert set(np.unique(image).tolist()) == {0, 255}


@pytest.mark.parametrize("mode, fmt", [("CMYK", "TIFF"), ("CMYK", "JPEG"), ("YCbCr", "TIFF"), ("LAB", "TIFF")])
def test_other_colour_spaces_are_converted_to_rgb(mode, fmt):
    source = Image.fromarray(RGB).convert(mode)
    expected = np.asarray(source.convert("RGB")).astype(int)
    image = image_from_bytes(_pil(source, fmt)).astype(int)
    assert np.abs(image - expected).max() <= (40 if fmt == "JPEG" else 0)


def test_min_is_white_tiff_is_inverted():
    gray = np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))
    image = image_from_bytes(_tiff(255 - gray, photometric="miniswhite"))
    assert np.array_equal(image[..., 0], gray)


def test_planar_rgb_tiff():
    data = _tiff(np.moveaxis(RGB, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(image_from_bytes(data), RGB)


@pytest.mark.parametrize("compression", ["tiff_lzw", "packbits", "tiff_adobe_deflate", "jpeg"])
def test_common_tiff_compressions(compression):
    image = image_from_bytes(_pil(Image.fromarray(RGB), "TIFF", compression=compression))
    tolerance = 40 if compression == "jpeg" else 0
    assert image.shape == RGB.shape and np.abs(image.astype(int) - RGB).max() <= tolerance


def test_multi_page_tiff_stack_is_refused():
    with pytest.raises(LggsegError, match=r"stack\.tif: TIFF holds 5 images \(a stack\)"):
        image_from_bytes(_tiff(np.zeros((5, 16, 16), np.uint8)), "stack.tif")


def test_extra_channels_beyond_three_are_dropped():
    five = RNG.integers(0, 256, (8, 8, 5), dtype=np.uint8)
    assert np.array_equal(image_from_bytes(_tiff(five, photometric="minisblack", planarconfig="contig")), five[..., :3])


def test_one_pixel_high_image():
    assert image_from_bytes(_tiff(np.arange(10, dtype=np.uint16)[None])).shape == (1, 10, 3)


def test_name_does_not_decide_the_format(tmp_path):
    path = tmp_path / "slice.png"
    path.write_bytes(_tiff(RGB, photometric="rgb"))
    assert np.array_equal(read_image(path), RGB)


# ----------------------------------------------------------------------------- masks


def test_mask_formats_that_are_accepted():
    truth = RGB[..., 0] > 127
    assert np.array_equal(mask_from_bytes(_tiff(truth)), truth)  # 1-bit TIFF
    assert np.array_equal(mask_from_bytes(_png(truth.astype(np.uint8) * 255)), truth)
    assert np.array_equal(mask_from_bytes(_png(np.dstack([truth.astype(np.uint8) * 255] * 3))), truth)
    assert np.array_equal(mask_from_bytes(_pil(Image.fromarray(truth).convert("1"), "PNG")), truth)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([[0, 128]], np.uint8), "mask values must be"),
        (
            np.dstack([np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8), np.zeros((4, 4), np.uint8)]),
            "single-channel",
        ),
        (np.array([[0.0, np.nan]], np.float32), "found NaN"),
    ],
    ids=["grey-values", "colour", "nan"],
)
def test_bad_masks_are_refused(array, message):
    data = _tiff(array) if array.dtype == np.float32 else _png(array)
    with pytest.raises(LggsegError, match=message):
        mask_from_bytes(data, "m.tif")


def test_mask_of_another_size_than_its_image(tiny_dataset):
    patient = index_dataset(tiny_dataset).patients[0]
    patient.slices[0].mask.write_bytes(_png(np.zeros((100, 120), np.uint8)))
    with pytest.raises(LggsegError, match="mask is 120x100 but its image is 256x256"):
        load_volume(patient)


# ----------------------------------------------------------------------------- broken and hostile files


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORRUPT = [
    ("truncated.png", _truncated(_png(RGB))),
    ("truncated.tif", _truncated(_tiff(RGB, photometric="rgb"))),
    ("truncated_deflate.tif", _truncated(_pil(Image.fromarray(RGB), "TIFF", compression="tiff_adobe_deflate"))),
    ("truncated.jpg", _truncated(_pil(Image.fromarray(RGB), "JPEG"))),
    ("header_only.png", _png(RGB)[:33]),
    ("magic_only.tif", b"II*\x00"),
    ("bad_crc.png", _png(RGB)[:30] + bytes([_png(RGB)[30] ^ 0xFF]) + _png(RGB)[31:]),
    ("garbage_after_magic.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
    ("garbage_after_magic.tif", b"II*\x00" + bytes(range(256)) * 4),
    ("garbage_after_magic.jpg", b"\xff\xd8\xff" + bytes(range(256)) * 4),
]


@pytest.mark.parametrize("name, data", CORRUPT, ids=[name for name, _ in CORRUPT])
def test_truncated_and_corrupt_images_get_a_clear_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(LggsegError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "cannot decode image" in message or "empty size" in message or "no image" in message


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.png", b"just some text\n", "not a TIFF, PNG or JPEG image"),
        ("scan.bmp", None, "not a TIFF, PNG or JPEG image"),
        ("scan.gif", None, "not a TIFF, PNG or JPEG image"),
        ("empty.tif", b"", "empty file"),
        ("scan.dcm", b"\0" * 128 + b"DICM" + b"\0" * 64, "a DICOM file; convert the series to NIfTI"),
    ],
    ids=["text", "bmp", "gif", "zero-size", "dicom"],
)
def test_non_image_files_get_a_clear_error(tmp_path, name, data, message):
    if data is None:
        data = _pil(Image.fromarray(RGB), name.rsplit(".", 1)[1].replace("bmp", "BMP").replace("gif", "GIF"))
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(LggsegError, match=f"{name}: {message}"):
        read_image(path)


def test_control_characters_in_a_file_name_keep_the_error_on_one_line(tmp_path):
    path = tmp_path / "evil\nname_1.tif"
    path.write_bytes(b"junk")
    with pytest.raises(LggsegError) as info:
        read_image(path)
    assert "\n" not in str(info.value) and "evil\\nname_1.tif: not a TIFF, PNG or JPEG image" in str(info.value)
    patient = tmp_path / "P"
    patient.mkdir()
    (patient / "P_1.png").write_bytes(_png(RGB))
    (patient / "P_2.tif\n").write_bytes(b"junk")
    problems = index_dataset(patient).problems
    assert len(problems) == 1 and "\n" not in problems[0] and "P_2.tif\\n: not a slice file name" in problems[0]


def test_a_folder_where_a_file_is_expected(tmp_path):
    (tmp_path / "x_1.tif").mkdir()
    with pytest.raises(LggsegError, match="is a folder, expected an image file"):
        read_image(tmp_path / "x_1.tif")


@pytest.mark.parametrize(
    "maker, width, height",
    [
        (_png_declaring, 8193, 8192),  # just over lggseg's limit, below Pillow's own
        (_png_declaring, 100_000, 100_000),  # over Pillow's bomb limit
        (_png_declaring, 2**31 - 1, 2**31 - 1),
        (_tiff_declaring, 60_000, 60_000),  # planar: 3 x 60000 x 60000 declared in a 200-byte file
        (_jpeg_declaring, 65_000, 65_000),
    ],
    ids=["png-just-over-limit", "png-over-pillow-limit", "png-2^31", "planar-tiff", "jpeg"],
)
def test_huge_declared_dimensions_are_refused_before_decoding(maker, width, height):
    data = maker(width, height)
    assert len(data) < 20_000 and width * height > MAX_PIXELS
    with pytest.raises(LggsegError, match=r"bomb\.img: image (of \d+x\d+ pixels )?is too large"):
        image_from_bytes(data, "bomb.img")


def test_zero_width_png_is_refused():
    with pytest.raises(LggsegError, match="bomb.png: "):
        image_from_bytes(_png_declaring(0, 10), "bomb.png")


# ----------------------------------------------------------------------------- data folders with stray files


def test_stray_files_in_a_data_folder(tiny_dataset: Path):
    patient = sorted(p for p in tiny_dataset.iterdir() if p.is_dir())[0]
    first = patient / f"{patient.name}_1.tif"
    (tiny_dataset / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (patient / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (patient / f"._{first.name}").write_bytes(b"\0\5\26\7AppleDouble")  # macOS resource fork
    (tiny_dataset / "__MACOSX" / patient.name).mkdir(parents=True)
    (tiny_dataset / "__MACOSX" / patient.name / f"._{first.name}").write_bytes(b"\0\5\26\7")
    (tiny_dataset / ".git").mkdir()
    (tiny_dataset / "data.csv").write_text("Patient,cluster\n")
    (tiny_dataset / "README.md").write_text("notes")
    (patient / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (patient / "desktop.ini").write_text("[.ShellClassInfo]")
    (patient / "notes.txt").write_text("ignored")
    (patient / "extra").mkdir()
    (tiny_dataset / "empty_patient").mkdir()

    index = index_dataset(tiny_dataset)
    assert sorted(p.name for p in index.patients) == sorted(
        p.name for p in (tiny_dataset.iterdir()) if p.name.startswith("TCGA")
    )
    text = "\n".join(index.problems)
    assert "Thumbs.db" in text and "desktop.ini" in text and "empty_patient: no slice images" in text
    assert ".DS_Store" not in text and "._" not in text and "__MACOSX" not in text and "notes.txt" not in text
    assert [s.number for s in index.by_name()[patient.name].slices] == list(range(1, 21))
    report = check_dataset(tiny_dataset)
    assert report.n_patients == 2 and report.n_slices == 40
    assert load_volume(index.by_name()[patient.name]).images.shape == (20, 256, 256, 3)


def test_slices_are_sorted_numerically_not_by_name(tmp_path):
    patient = tmp_path / "P_1"
    patient.mkdir()
    for n in (10, 2, 1, 33, 9):
        (patient / f"P_1_{n}.png").write_bytes(_png(RGB))
    assert [s.number for s in index_dataset(patient).patients[0].slices] == [1, 2, 9, 10, 33]


def test_a_bad_slice_in_a_data_folder_is_a_problem_not_a_crash(tiny_dataset: Path):
    patient = sorted(p for p in tiny_dataset.iterdir() if p.is_dir())[0]
    (patient / f"{patient.name}_4.tif").write_bytes(_truncated((patient / f"{patient.name}_4.tif").read_bytes()))
    (patient / f"{patient.name}_5.tif").write_bytes(b"")
    (patient / f"{patient.name}_6.tif").write_bytes(_png_declaring(100_000, 100_000))
    report = check_dataset(tiny_dataset)
    text = "\n".join(report.problems)
    assert f"{patient.name}_4.tif: cannot decode image" in text
    assert f"{patient.name}_5.tif: empty file" in text
    assert f"{patient.name}_6.tif: image is too large" in text
    assert report.n_slices == 37


# ----------------------------------------------------------------------------- through lggseg predict


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, UNet(UNetConfig(base_width=4, depth=2)).eval())
    return path


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_slice_of_another_size_gets_a_mask_of_its_own_size(tmp_path, tiny_weights, capsys):
    odd = RNG.integers(0, 65535, (200, 300), dtype=np.uint16)  # 16-bit grayscale, 300 wide x 200 high
    (tmp_path / "odd.tif").write_bytes(_tiff(odd))
    code, _, err = _cli(
        ["predict", str(tmp_path / "odd.tif"), "--weights", str(tiny_weights), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 0, err
    with Image.open(tmp_path / "out" / "slices" / "masks" / "odd_mask.png") as mask:
        assert mask.size == (300, 200)
    with Image.open(tmp_path / "out" / "slices" / "overlays" / "odd_overlay.png") as overlay:
        assert overlay.size == (300, 200)


def test_patient_folder_of_another_size_gets_masks_of_its_own_size(tmp_path, tiny_weights, capsys, sample_patient):
    import nibabel as nib

    patient = tmp_path / "TCGA_XX_0001_20000101"
    patient.mkdir()
    for n in range(1, 5):
        image = Image.open(sample_patient / f"{sample_patient.name}_{n + 9}.tif").resize((192, 160))
        image.save(patient / f"{patient.name}_{n}.png")
    code, _, err = _cli(
        ["predict", str(patient), "--weights", str(tiny_weights), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 0, err
    case = tmp_path / "out" / patient.name
    for n in range(1, 5):
        with Image.open(case / "masks" / f"{patient.name}_{n}_mask.png") as mask:
            assert mask.size == (192, 160)
    assert nib.load(str(case / f"{patient.name}_mask.nii.gz")).shape == (192, 160, 4)


def test_batch_predict_skips_the_bad_files_and_exits_2(tmp_path, tiny_weights, capsys):
    batch = tmp_path / "exports"
    batch.mkdir()
    (batch / "scan_a.png").write_bytes(_png(RGB))
    (batch / "scan_b.tif").write_bytes(_tiff(RNG.integers(0, 4096, (64, 64), dtype=np.uint16)))
    (batch / "scan_c.png").write_bytes(_truncated(_png(RGB)))
    (batch / "scan_d.jpg").write_bytes(b"")
    (batch / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (batch / "._scan_a.png").write_bytes(b"\0\5\26\7")
    code, out, err = _cli(
        ["predict", str(batch), "--weights", str(tiny_weights), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2
    assert "scan_c.png: cannot decode image" in err and "scan_d.jpg: empty file" in err
    assert "error: 2 input(s) failed, 2 succeeded" in err
    assert ".DS_Store" not in err and "._scan_a" not in err
    for name in ("scan_a", "scan_b"):
        assert (tmp_path / "out" / "slices" / "masks" / f"{name}_mask.png").exists()
        assert f"{name}: tumor area" in out
    summary = (tmp_path / "out" / "summary.csv").read_text()
    assert "scan_a.png" in summary and "scan_b.tif" in summary and "scan_c" not in summary


def test_batch_of_patients_with_one_broken_patient(tmp_path, tiny_weights, capsys, sample_dir):
    data = tmp_path / "kaggle_3m"
    shutil.copytree(sample_dir, data)
    broken, good = sorted(p for p in data.iterdir() if p.is_dir())
    (broken / f"{broken.name}_3.tif").write_bytes(b"II*\x00garbage")
    (data / "not_a_volume.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    code, out, err = _cli(
        ["predict", str(data), "--weights", str(tiny_weights), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2
    assert (
        f"{broken.name}_3.tif: TIFF holds no image (skipped)" in err and "not_a_volume.nii.gz: cannot read NIfTI" in err
    )
    assert f"{good.name}: tumor volume" in out and f"{broken.name}:" not in out
    assert (tmp_path / "out" / good.name / f"{good.name}_mask.nii.gz").exists()


def test_mixed_explicit_inputs(tmp_path, tiny_weights, capsys):
    (tmp_path / "ok.png").write_bytes(_png(RGB))
    (tmp_path / "notes.txt").write_text("hello")
    args = [str(tmp_path / "ok.png"), str(tmp_path / "missing.tif"), str(tmp_path / "notes.txt")]
    code, out, err = _cli(["predict", *args, "--weights", str(tiny_weights), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "missing.tif: no such file or folder" in err and "notes.txt: not a slice image" in err
    assert "ok: tumor area" in out
