"""Every supported file format ends as one 8-bit gray channel in the right orientation."""

import struct
import zlib

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.sequence import Sequence

from helpers import COLS, ROWS, gradient, write_dicom
from stages.lib.data import formats
from stages.lib.data.formats import BadImage, load_gray


@pytest.mark.parametrize("bits,dtype,maximum", [(8, np.uint8, 255), (12, np.uint16, 4095), (16, np.uint16, 65535)])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_decodes_upright_to_full_8bit_range_with_monochrome1_inverted(
    tmp_path, bits, dtype, maximum, photometric
):
    path = tmp_path / "film.dcm"
    write_dicom(path, gradient(maximum, dtype), photometric, bits)
    gray, facts = load_gray(path)
    assert gray.shape == (ROWS, COLS) and gray.dtype == np.uint8
    column, mark = gray[4:, 30].astype(int), int(gray[0, 0])
    if photometric == "MONOCHROME2":
        assert (gray.min(), column[-1], mark) == (0, 255, 255) and np.all(np.diff(column) >= 0)
    else:  # stored dark bone -> shown bright: the stored maximum (bottom row, mark) becomes black
        assert (gray.max(), column[-1], mark) == (255, 0, 0) and np.all(np.diff(column) <= 0)
    assert facts == {
        "format": "DICOM",
        "width": COLS,
        "height": ROWS,
        "channels": 1,
        "bit_depth": bits,
        "scaled_by": "DICOM values present",
        "frames": 1,
        "patient_id": "P-0042",
        "file_bytes": path.stat().st_size,
    }


def test_dicom_window_and_rescale_are_applied(tmp_path):
    path = tmp_path / "windowed.dcm"
    # stored 0..4095, rescaled to -1024..3071; the window shows -1024..1024, the rest saturates
    write_dicom(
        path,
        gradient(4095, np.uint16),
        "MONOCHROME2",
        12,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=2048,
    )
    gray, _ = load_gray(path)
    hounsfield = np.linspace(0, 4095, ROWS).astype(np.uint16).astype(float) - 1024
    expected = np.clip((hounsfield + 1024) / 2048, 0, 1) * 255
    np.testing.assert_allclose(gray[:, 30], expected, atol=2)
    assert (gray[:, 30] == 255).sum() == (hounsfield >= 1024).sum()  # the upper half is above the window


def test_dicom_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.dcm"
    write_dicom(path, gradient(255, np.uint8), "MONOCHROME2", 8)
    with pytest.raises(BadImage, match=r"big.dcm: 60x40 = 2400 pixels exceeds data.max_pixels \(1000\)"):
        load_gray(path, max_pixels=1000)


@pytest.mark.parametrize(
    "suffix,pixels,expected",
    [
        (".png", np.full((36, 54), 300 * 200, np.uint16), ("PNG", 1, 16, 233)),  # 16-bit gray
        (".png", np.dstack([np.full((36, 54), 40000, np.uint16)] * 3), ("PNG", 3, 16, 156)),  # 16-bit RGB
        (".bmp", np.dstack([np.full((36, 54), 90, np.uint8)] * 3), ("BMP", 3, 8, 90)),
        (".tif", np.full((36, 54), 17, np.uint8), ("TIFF", 1, 8, 17)),
        (".tif", np.full((36, 54), 3000, np.uint16), ("TIFF", 1, 12, 187)),  # 12 bits in 16
        (".jpg", np.full((36, 54), 128, np.uint8), ("JPEG", 1, 8, 128)),
    ],
)
def test_raster_formats_decode_to_gray_with_their_facts(tmp_path, suffix, pixels, expected):
    path = tmp_path / f"img{suffix}"
    cv2.imwrite(str(path), pixels)
    gray, facts = load_gray(path)
    fmt, channels, bits, value = expected
    assert gray.shape == (36, 54) and gray.dtype == np.uint8 and abs(int(gray[3, 4]) - value) <= 1
    assert (facts["format"], facts["channels"], facts["bit_depth"], facts["width"], facts["height"]) == (
        fmt,
        channels,
        bits,
        54,
        36,
    )


def test_raster_over_the_pixel_limit_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    cv2.imwrite(str(path), np.zeros((100, 100), np.uint8))
    with pytest.raises(BadImage, match=r"bomb.png: 100x100 = 10000 pixels exceeds data.max_pixels \(5000\); downscale"):
        load_gray(path, max_pixels=5000)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"just some notes, not a picture", "not a readable image"),
        (b"", "empty file"),
    ],
)
def test_non_images_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=f"notes.png: {message}"):
        load_gray(path)


def test_truncated_jpeg_is_refused(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(BadImage, match="cut.jpg: a JPEG file that cannot be decoded"):
        load_gray(path)


# --- true bit depth: never a per-image stretch -------------------------------------------------


def write_png(path, pixels: np.ndarray, sbit: int | None = None):
    """A PNG as OpenCV writes it, with an sBIT chunk spliced in after IHDR when `sbit` is given."""
    data = cv2.imencode(".png", pixels)[1].tobytes()
    if sbit is not None:
        body = b"sBIT" + bytes([sbit])
        data = data[:33] + struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body)) + data[33:]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "top,stored,sbit,bits,scaled_by",
    [
        (4095, lambda v: v, None, 12, "image maximum"),  # 12-bit export, no sBIT: the nearly black film
        (3000, lambda v: v, None, 12, "image maximum"),  # a darker 12-bit film: same depth, no stretch
        (1000, lambda v: v, None, 10, "image maximum"),
        (1000, lambda v: v, 12, 12, "PNG sBIT"),  # sBIT wins over the maximum's 10 bits
        (4095, lambda v: v << 4, 12, 16, "file depth"),  # sBIT 12, samples scaled to 16 bits as the PNG standard asks
    ],
)
def test_16bit_png_is_scaled_by_its_true_bit_depth(tmp_path, top, stored, sbit, bits, scaled_by):
    values = np.linspace(0, top, ROWS * COLS).round().astype(np.uint16).reshape(ROWS, COLS)
    gray, facts = load_gray(write_png(tmp_path / "film.png", stored(values), sbit))
    expected = np.round(stored(values).astype(float) * 255 / (2**bits - 1))
    np.testing.assert_allclose(gray, expected, atol=0.51)
    assert (facts["bit_depth"], facts["scaled_by"]) == (bits, scaled_by)


def test_one_stored_value_gives_one_cached_value_whatever_the_film_holds(tmp_path):
    bright, dark = np.full((ROWS, COLS), 4000, np.uint16), np.full((ROWS, COLS), 2500, np.uint16)
    bright[0, 0] = dark[0, 0] = 1000
    a, _ = load_gray(write_png(tmp_path / "a.png", bright))
    b, _ = load_gray(write_png(tmp_path / "b.png", dark))
    assert a[0, 0] == b[0, 0] == round(1000 * 255 / 4095) and (a[1, 1], b[1, 1]) == (249, 156)


def test_dicom_voi_lut_sequence_is_applied_and_scaled_by_its_output_range(tmp_path):
    item = pydicom.Dataset()
    lut = np.round(4095 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)  # a gamma curve
    item.add_new(0x00283002, "US", [4096, 0, 12])  # LUT Descriptor: entries, first value, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    path = tmp_path / "lut.dcm"
    write_dicom(path, gradient(4095, np.uint16), "MONOCHROME2", 12, VOILUTSequence=Sequence([item]))
    gray, facts = load_gray(path)
    stored = gradient(4095, np.uint16)[:, 30]
    np.testing.assert_allclose(gray[:, 30], np.round(lut[stored].astype(float) * 255 / 4095), atol=0.51)
    assert facts["scaled_by"] == "DICOM VOI LUT"


# --- EXIF orientation, as viewers show it ---------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied_as_viewers_show_it(tmp_path, suffix):
    stored = Image.fromarray(gradient(255, np.uint8))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}{suffix}"
        stored.save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
        gray, facts = load_gray(path)
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L"))
        assert gray.shape == shown.shape == ((ROWS, COLS) if orientation < 5 else (COLS, ROWS))
        assert np.abs(gray.astype(int) - shown).max() <= (3 if suffix == ".jpg" else 0), orientation
        assert (facts["width"], facts["height"]) == shown.shape[::-1]


# --- sizes from the header, before decoding ---------------------------------------------------


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel is decoded."""

    def refuse(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(formats.cv2, "imdecode", refuse)


@pytest.mark.parametrize("shape", [(1, 1), (31, 400), (400, 31)])
def test_a_film_under_32_px_a_side_is_refused_before_decoding(tmp_path, no_decoding, shape):
    path = tmp_path / "tiny.jpg"
    Image.fromarray(np.full(shape, 255, np.uint8)).save(path)
    with pytest.raises(BadImage, match=rf"tiny.jpg: {shape[1]}x{shape[0]} pixels, smaller than 32 px on a side"):
        load_gray(path)


def test_32_px_a_side_is_enough(tmp_path):
    cv2.imwrite(str(tmp_path / "small.png"), np.full((32, 32), 9, np.uint8))
    assert load_gray(tmp_path / "small.png")[0].shape == (32, 32)


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, no_decoding):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(path)
    with pytest.raises(BadImage, match=r"big.png: 400x300 = 120000 pixels exceeds --max-pixels \(100000\)"):
        load_gray(path, max_pixels=100_000, limit_name="--max-pixels")


def test_formats_without_a_readable_header_are_refused_without_decoding(tmp_path, no_decoding):
    hdr = tmp_path / "claims_big.hdr"  # Radiance HDR: OpenCV reads it, but only by decoding it
    hdr.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10000 +X 11000\n" + b"\x00" * 64)
    with pytest.raises(BadImage, match="claims_big.hdr: not a readable image .PNG, JPEG, BMP, TIFF or DICOM.; replace"):
        load_gray(hdr)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "anim.gif")
    with pytest.raises(BadImage, match="anim.gif: a GIF file, which is not read here; convert it to PNG"):
        load_gray(tmp_path / "anim.gif")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "film.avif")
    with pytest.raises(BadImage, match="film.avif: an AVIF file, which is not read here; convert it to PNG"):
        load_gray(tmp_path / "film.avif")


def load_npy(path, limit: tuple[int, str]) -> tuple[np.ndarray, dict]:
    """A format the project does not read: a uint8 film saved by numpy."""
    gray = np.load(path)
    formats.check_size(path, gray.shape[1], gray.shape[0], limit)
    facts = {"format": "NPY", "width": gray.shape[1], "height": gray.shape[0], "channels": 1, "bit_depth": 8}
    return gray, {**facts, "scaled_by": "file depth", "frames": 1}


def test_an_input_format_added_as_one_record_is_decoded_and_named_in_the_refusals(tmp_path, monkeypatch):
    """docs/design.md: an input format is one record in FORMATS (stages/lib/data/formats.py)."""
    npy = formats.InputFormat(("NPY",), lambda path, head: head.startswith(b"\x93NUMPY"), load_npy)
    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, npy))
    film = np.arange(40 * 60, dtype=np.uint8).reshape(40, 60)
    with open(tmp_path / "film.bin", "wb") as f:  # its name says nothing: the first bytes choose the decoder
        np.save(f, film)
    gray, facts = load_gray(tmp_path / "film.bin")
    assert np.array_equal(gray, film) and facts["format"] == "NPY" and facts["file_bytes"] > film.size
    with pytest.raises(BadImage, match=r"small.npy: 60x8 pixels, smaller than 32 px on a side"):
        np.save(tmp_path / "small", film[:8])
        load_gray(tmp_path / "small.npy")
    (tmp_path / "notes.txt").write_text("not a film")
    with pytest.raises(BadImage, match=r"not a readable image \(PNG, JPEG, BMP, TIFF, DICOM or NPY\)"):
        load_gray(tmp_path / "notes.txt")
