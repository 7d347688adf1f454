"""Every supported file format ends as one 8-bit gray channel in the right orientation."""
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from stages.lib.formats import BadImage, load_gray

ROWS, COLS = 40, 60  # not square, so a transpose would show


def gradient(maximum: int, dtype) -> np.ndarray:
    """Dark top row to bright bottom row, with a bright mark in the top-left corner."""
    img = np.repeat(np.linspace(0, maximum, ROWS), COLS).reshape(ROWS, COLS).astype(dtype)
    img[:4, :4] = maximum
    return img


def write_dicom(path, pixels: np.ndarray, photometric: str, bits_stored: int, **extra) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "P-0042"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.dtype.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("bits,dtype,maximum", [(8, np.uint8, 255), (12, np.uint16, 4095), (16, np.uint16, 65535)])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_decodes_upright_to_full_8bit_range_with_monochrome1_inverted(tmp_path, bits, dtype, maximum, photometric):
    path = tmp_path / "film.dcm"
    write_dicom(path, gradient(maximum, dtype), photometric, bits)
    gray, facts = load_gray(path)
    assert gray.shape == (ROWS, COLS) and gray.dtype == np.uint8
    column, mark = gray[4:, 30].astype(int), int(gray[0, 0])
    if photometric == "MONOCHROME2":
        assert (gray.min(), column[-1], mark) == (0, 255, 255) and np.all(np.diff(column) >= 0)
    else:  # stored dark bone -> shown bright: the stored maximum (bottom row, mark) becomes black
        assert (gray.max(), column[-1], mark) == (255, 0, 0) and np.all(np.diff(column) <= 0)
    assert facts == {"format": "DICOM", "width": COLS, "height": ROWS, "channels": 1, "bit_depth": bits,
                     "patient_id": "P-0042", "file_bytes": path.stat().st_size}


def test_dicom_window_and_rescale_are_applied(tmp_path):
    path = tmp_path / "windowed.dcm"
    # stored 0..4095, rescaled to -1024..3071; the window shows -1024..1024, the rest saturates
    write_dicom(path, gradient(4095, np.uint16), "MONOCHROME2", 12, RescaleSlope=1, RescaleIntercept=-1024,
                WindowCenter=0, WindowWidth=2048)
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


@pytest.mark.parametrize("suffix,pixels,expected", [
    (".png", np.full((6, 9), 300 * 200, np.uint16), ("PNG", 1, 16, 234)),                # 16-bit gray
    (".png", np.dstack([np.full((6, 9), 40000, np.uint16)] * 3), ("PNG", 3, 16, 156)),  # 16-bit RGB
    (".bmp", np.dstack([np.full((6, 9), 90, np.uint8)] * 3), ("BMP", 3, 8, 90)),
    (".tif", np.full((6, 9), 17, np.uint8), ("TIFF", 1, 8, 17)),
    (".jpg", np.full((6, 9), 128, np.uint8), ("JPEG", 1, 8, 128)),
])
def test_raster_formats_decode_to_gray_with_their_facts(tmp_path, suffix, pixels, expected):
    path = tmp_path / f"img{suffix}"
    cv2.imwrite(str(path), pixels)
    gray, facts = load_gray(path)
    fmt, channels, bits, value = expected
    assert gray.shape == (6, 9) and gray.dtype == np.uint8 and abs(int(gray[3, 4]) - value) <= 1
    assert (facts["format"], facts["channels"], facts["bit_depth"], facts["width"], facts["height"]) == (fmt, channels, bits, 9, 6)


def test_raster_over_the_pixel_limit_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    cv2.imwrite(str(path), np.zeros((100, 100), np.uint8))
    with pytest.raises(BadImage, match=r"bomb.png: 100x100 = 10000 pixels exceeds data.max_pixels \(5000\); downscale"):
        load_gray(path, max_pixels=5000)


@pytest.mark.parametrize("content,message", [
    (b"just some notes, not a picture", "not a readable image"),
    (b"", "empty file"),
])
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
