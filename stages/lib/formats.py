"""Image file formats -> one 8-bit grayscale channel, plus the file facts the data report needs.

JPEG, PNG (8/16-bit, gray/RGB/RGBA), BMP and TIFF are decoded by OpenCV; DICOM by pydicom, read
the way torchxrayvision and MONAI read chest films: modality LUT (rescale slope/intercept), VOI
LUT or window, min-max to 8 bits, MONOCHROME1 inverted so bone is bright in every image.
The pixel limit is checked from the header before any pixel is decoded (decompression bombs).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stages.lib.errors import UserError

cv2.setLogLevel(0)  # a bad file gets our one-line message instead
Image.MAX_IMAGE_PIXELS = None  # our own limit (data.max_pixels) applies, with a message that says which param
DICOM_SUFFIXES = {".dcm", ".dicom"}


class BadImage(UserError):
    """A file that cannot become a training image; data.on_bad_image decides whether it is fatal."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or head[128:132] == b"DICM"


def load_gray(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[np.ndarray, dict]:
    """Decode `path` to uint8 [H, W]; also return its facts: format, width, height, channels,
    bit_depth, file_bytes and, for DICOM, patient_id."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        size = path.stat().st_size
    except OSError as err:
        raise BadImage(f"{path}: cannot be read ({err.strerror}); check it exists and is readable") from err
    if size == 0:
        raise BadImage(f"{path}: empty file; replace or remove it")
    if is_dicom(path, head):
        gray, facts = _load_dicom(path, max_pixels)
    else:
        gray, facts = _load_raster(path, max_pixels)
    facts["file_bytes"] = size
    return gray, facts


def read_gray_uint8(path: str | os.PathLike) -> np.ndarray:
    return load_gray(path)[0]


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage(f"{path}: {width}x{height} = {width * height} pixels exceeds data.max_pixels "
                       f"({max_pixels}); downscale the image or raise data.max_pixels if it is genuine")


def _load_raster(path: Path, max_pixels: int | None) -> tuple[np.ndarray, dict]:
    fmt = None
    try:  # Pillow reads the header only, so the limit is checked before decoding
        with Image.open(path) as im:
            fmt = im.format
            _check_pixels(path, *im.size, max_pixels)
    except (OSError, SyntaxError, ValueError):
        pass  # OpenCV may still read what Pillow cannot identify; decoding below decides
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        what = f"a {fmt} file that cannot be decoded (corrupt or truncated)" if fmt else "not a readable image"
        raise BadImage(f"{path}: {what}; replace or remove it")
    _check_pixels(path, img.shape[1], img.shape[0], max_pixels)
    facts = {"format": fmt or path.suffix.lstrip(".").upper(), "width": int(img.shape[1]),
             "height": int(img.shape[0]), "channels": 1 if img.ndim == 2 else int(img.shape[2]),
             "bit_depth": int(img.dtype.itemsize * 8)}
    return to_gray_uint8(img, path), facts


def to_gray_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)  # keep the full 16-bit range, drop the low byte
    if img.dtype != np.uint8:
        raise BadImage(f"{path}: unsupported pixel type {img.dtype}; convert to 8- or 16-bit PNG/JPEG")
    return img


def _load_dicom(path: Path, max_pixels: int | None) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (InvalidDicomError, AttributeError, OSError, ValueError, TypeError) as err:
        raise BadImage(f"{path}: not a readable DICOM image ({err.__class__.__name__}); replace or remove it") from err
    _check_pixels(path, cols, rows, max_pixels)
    try:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array
    except Exception as err:  # pydicom raises many types, e.g. for a missing JPEG2000 decoder
        raise BadImage(f"{path}: DICOM pixel data cannot be decoded ({str(err).splitlines()[0][:120]}); "
                       "convert it to uncompressed DICOM or PNG") from err
    if raw.ndim == 3 and raw.shape[-1] not in (3, 4):
        raw = raw[0]  # multi-frame: a radiograph's first frame
    if raw.ndim == 3:
        raise BadImage(f"{path}: colour DICOM ({ds.PhotometricInterpretation}); export it as grayscale")
    values = apply_voi_lut(apply_modality_lut(raw, ds), ds).astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    gray = np.zeros(values.shape, np.uint8) if hi <= lo else np.round((values - lo) * (255 / (hi - lo))).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; flip so every film shows bone bright
    facts = {"format": "DICOM", "width": cols, "height": rows, "channels": 1,
             "bit_depth": int(ds.get("BitsStored", raw.dtype.itemsize * 8)),
             "patient_id": str(ds.get("PatientID", "")).strip() or None}
    return gray, facts
