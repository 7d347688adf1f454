"""Image file formats -> one 8-bit grayscale channel, plus the file facts the data report needs.

Every file's size is read from its header before any pixel is decoded (decompression bombs, films
too small to be X-rays); a file whose header cannot be read is refused rather than decoded to find out.
JPEG, PNG (8/16-bit, gray/RGB/RGBA), BMP and TIFF headers are read by Pillow and decoded by
OpenCV, turned upright by their EXIF orientation as every viewer shows them. A 16-bit film is
scaled by its true bit depth: the PNG sBIT chunk where present, else the smallest of 8, 10, 12, 14
or 16 bits that holds its maximum, so a 12-bit export is not left nearly black. A MinIsWhite TIFF is
inverted at every depth (OpenCV does it for 8 bits only). DICOM is read by pydicom (python-gdcm
decodes JPEG Lossless, JPEG-LS and 12-bit JPEG): modality LUT (rescale slope/intercept), then the
VOI LUT or window, scaled by that output range (without one, by BitsStored), MONOCHROME1 inverted
so bone is bright in every image; other photometrics (RGB, YBR, PALETTE COLOR) are refused.
A multi-frame DICOM or multi-page TIFF gives its first frame, and `frames` says how many it had.
No image is ever stretched to its own min/max: equal stored values give equal cached pixels.
"""
from __future__ import annotations

import contextlib
import os
import struct
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stages.lib.core.errors import UserError



def _silence_opencv() -> None:
    """A bad file gets our one-line message instead of OpenCV's log; 5.x moved the switch."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and hasattr(logging, "setLogLevel"):  # OpenCV 5
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    else:  # OpenCV 4: 0 is LOG_LEVEL_SILENT
        cv2.setLogLevel(0)


_silence_opencv()
Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with a message that says which param
DICOM_SUFFIXES = {".dcm", ".dicom"}
RASTER_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")  # Pillow's names (MPO: a phone's JPEG) OpenCV decodes
MAX_PIXELS = 100_000_000  # params.yaml's data.max_pixels default; predict's --max-pixels default
MIN_SIDE = 32  # a smaller "film" is a thumbnail, an icon or a placeholder, not a radiograph
DEPTHS = (8, 10, 12, 14, 16)  # what detectors and DICOM BitsStored use
EXIF_ORIENTATION = 0x0112
TIFF_PHOTOMETRIC, MIN_IS_WHITE = 262, 0
GRAY_DICOM = ("MONOCHROME1", "MONOCHROME2")


class BadImage(UserError):
    """A file that cannot become a training image; data.on_bad_image decides whether it is fatal."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or head[128:132] == b"DICM"


def load_gray(path: str | os.PathLike, max_pixels: int = MAX_PIXELS,
              limit_name: str = "data.max_pixels") -> tuple[np.ndarray, dict]:
    """Decode `path` to uint8 [H, W]; also return its facts: format, width, height, channels,
    bit_depth, scaled_by (where the depth came from), frames (the first one is used), file_bytes
    and, for DICOM, patient_id.
    `limit_name` is what the refusal of a larger image tells the user to raise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        size = path.stat().st_size
    except OSError as err:
        raise BadImage(f"{path}: cannot be read ({err.strerror}); check it exists and is readable", path) from err
    if size == 0:
        raise BadImage(f"{path}: empty file; replace or remove it", path)
    limit = (max_pixels, limit_name)
    gray, facts = _load_dicom(path, limit) if is_dicom(path, head) else _load_raster(path, limit)
    facts["file_bytes"] = size
    return gray, facts


def read_gray_uint8(path: str | os.PathLike) -> np.ndarray:
    return load_gray(path)[0]


def _check_size(path: Path, width: int, height: int, limit: tuple[int, str]) -> None:
    max_pixels, name = limit
    if width * height > max_pixels:
        raise BadImage(f"{path}: {width}x{height} = {width * height} pixels exceeds {name} "
                       f"({max_pixels}); downscale the image or raise {name} if it is genuine", path)
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"{path}: {width}x{height} pixels, smaller than {MIN_SIDE} px on a side, is not a "
                       "radiograph; replace or remove it", path)


def _load_raster(path: Path, limit: tuple[int, str]) -> tuple[np.ndarray, dict]:
    try:  # Pillow reads the header only: size and orientation are known before decoding
        with Image.open(path) as im:
            fmt, (width, height), orientation = im.format, im.size, _orientation(im)
            frames = getattr(im, "n_frames", 1)  # TIFF pages: headers only
            min_is_white = fmt == "TIFF" and im.tag_v2.get(TIFF_PHOTOMETRIC) == MIN_IS_WHITE
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"{path}: not a readable image (PNG, JPEG, BMP, TIFF or DICOM); replace or remove it",
                       path) from err
    if fmt not in RASTER_FORMATS:
        raise BadImage(f"{path}: a {fmt} file, which is not read here; convert it to PNG", path)
    _check_size(path, width, height, limit)
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.shape[:2] != (height, width):
        raise BadImage(f"{path}: a {fmt} file that cannot be decoded (corrupt or truncated); replace or remove it", path)
    channels = 1 if img.ndim == 2 else int(img.shape[2])
    gray = upright(_to_gray(img, path), orientation)
    wide = gray.dtype == np.uint16
    gray, bits, scaled_by = to_uint8(gray, png_sbit(path) if fmt == "PNG" else None)
    if min_is_white and wide:  # OpenCV inverts an 8-bit MinIsWhite TIFF but hands 16 bits over raw
        gray = 255 - gray
    facts = {"format": "JPEG" if fmt == "MPO" else fmt, "width": int(gray.shape[1]), "height": int(gray.shape[0]),
             "channels": channels, "bit_depth": bits, "scaled_by": scaled_by,
             "frames": frames if fmt == "TIFF" else 1}
    return gray, facts


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 = as stored). A PNG's eXIf is read from the header chunks only,
    since Pillow's PNG getexif() would decode the whole image to look behind the pixels."""
    if im.format == "PNG":
        exif = Image.Exif()
        if "exif" in im.info:
            exif.load(im.info["exif"])
    else:
        exif = im.getexif()
    value = exif.get(EXIF_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation as viewers do (Pillow's ImageOps.exif_transpose, in numpy)."""
    if orientation in (5, 7):  # transposed: 5 = transpose, 7 = transverse (transpose + 180)
        img = np.swapaxes(img, 0, 1)
        return np.ascontiguousarray(img if orientation == 5 else img[::-1, ::-1])
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](img)) if orientation in ops else img


def _to_gray(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype not in (np.uint8, np.uint16):
        raise BadImage(f"{path}: unsupported pixel type {img.dtype}; convert to 8- or 16-bit PNG/JPEG", path)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return img


def to_uint8(gray: np.ndarray, sbit: int | None = None) -> tuple[np.ndarray, int, str]:
    """Scale an 8/16-bit gray image to uint8 by its true bit depth; (image, bits, where they came from).

    An sBIT smaller than 16 whose samples fit it means raw samples (common in medical exports);
    samples above it were scaled to 16 bits as the PNG standard asks, so 16 bits apply.
    """
    if gray.dtype == np.uint8:
        return gray, 8, "file depth"
    top = int(gray.max())
    if sbit is not None and top < 2 ** sbit:
        bits, source = sbit, "PNG sBIT"
    elif sbit is not None:
        bits, source = 16, "file depth"
    else:
        bits, source = next(b for b in DEPTHS if top < 2 ** b), "image maximum"
    return cv2.convertScaleAbs(gray, alpha=255 / (2 ** bits - 1)), bits, source


def png_sbit(path: Path) -> int | None:
    """The significant bits of a PNG's gray or colour samples (its sBIT chunk), or None.
    Pillow does not expose sBIT, so the chunks before the first IDAT are walked here."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        color_type = 0
        while len(head := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                return None
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"IHDR" and len(data) >= 10:
                color_type = data[9]
            elif kind == b"sBIT" and data:
                significant = data[:3] if color_type in (2, 3, 6) else data[:1]  # colour: R, G, B
                return max(significant) if 0 < max(significant) <= 16 else None
    return None


def _load_dicom(path: Path, limit: tuple[int, str]) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import JPEGExtended12Bit

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (InvalidDicomError, AttributeError, OSError, ValueError, TypeError) as err:
        raise BadImage(f"{path}: not a readable DICOM image ({err.__class__.__name__}); replace or remove it", path) from err
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GRAY_DICOM:  # PALETTE COLOR's values are palette indices, not intensities
        what = f"colour DICOM ({photometric})" if photometric else "DICOM without a PhotometricInterpretation"
        raise BadImage(f"{path}: {what}; export it as grayscale (MONOCHROME2)", path)
    _check_size(path, cols, rows, limit)
    try:
        ds = pydicom.dcmread(path)
        if ds.file_meta.get("TransferSyntaxUID") == JPEGExtended12Bit and int(ds.get("BitsStored") or 8) > 8:
            raw = _gdcm_first_frame(path, rows, cols)
        else:
            ds.pixel_array_options(index=0 if frames > 1 else None)  # multi-frame: decode the first frame only
            raw = ds.pixel_array
    except Exception as err:  # pydicom raises many types, e.g. for a missing JPEG2000 decoder
        raise BadImage(_undecodable(path, ds, err), path) from err
    if raw.ndim != 2:
        raise BadImage(f"{path}: DICOM pixel data of shape {raw.shape}, not one gray frame; "
                       "export it as single-frame grayscale", path)
    try:
        values, (lo, hi), scaled_by = dicom_display(raw, ds)
    except (ValueError, TypeError, AttributeError, NotImplementedError, IndexError) as err:  # a malformed VOI module
        raise BadImage(f"{path}: DICOM values cannot be displayed ({_short(err)}); "
                       "fix its window/VOI LUT or export it as PNG", path) from err
    scale = 0.0 if hi <= lo else 255 / (hi - lo)
    gray = np.clip(np.round((values - lo) * scale), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; flip so every film shows bone bright
    facts = {"format": "DICOM", "width": cols, "height": rows, "channels": 1,
             "bit_depth": _bits_stored(ds, raw), "scaled_by": scaled_by, "frames": frames,
             "patient_id": str(ds.get("PatientID", "")).strip() or None}
    return gray, facts


def _gdcm_first_frame(path: Path, rows: int, cols: int) -> np.ndarray:
    """A 12-bit JPEG Extended image's first frame, decoded by GDCM itself: pydicom 3 refuses GDCM
    for 12-bit JPEG, and its other decoder for it (pylibjpeg-libjpeg) is GPL. GDCM first tries its
    8-bit codec and says so on the process's stderr before the 12-bit one succeeds (python-gdcm
    issue 35), so that line is silenced."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    with _quiet_stderr():
        image = reader.GetImage() if reader.Read() else None
        buffer = image.GetBuffer() if image is not None else None
    if not buffer:
        raise ValueError("GDCM cannot decode it")
    fmt = image.GetPixelFormat()
    dtype = np.dtype(f"{'i' if fmt.GetPixelRepresentation() else 'u'}{fmt.GetBitsAllocated() // 8}")
    values = np.frombuffer(buffer.encode("utf-8", "surrogateescape"), dtype=dtype.newbyteorder("<"))
    return values[:rows * cols].reshape(rows, cols)


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _short(err: Exception) -> str:
    """An error's first line, shortened at a word boundary."""
    return textwrap.shorten(str(err).splitlines()[0] if str(err) else err.__class__.__name__, 160)


def _undecodable(path: Path, ds, err: Exception) -> str:
    """Why the pixel data cannot be decoded and what to install (pydicom's missing decoder
    dependencies, with gdcm under its pip name) or convert."""
    from pydicom.pixels import get_decoder

    syntax = ds.get("file_meta", {}).get("TransferSyntaxUID")
    try:
        missing = get_decoder(syntax).missing_dependencies if syntax and syntax.is_compressed else []
    except (NotImplementedError, ValueError):  # a transfer syntax pydicom has no decoder for
        missing = []
    wanted = sorted({req.split(" - requires ", 1)[-1].replace("gdcm>=", "python-gdcm>=").replace("numpy and ", "")
                     for req in missing if " - requires " in req and "pylibjpeg-libjpeg" not in req})  # pylibjpeg-libjpeg is GPL: not offered
    install = f"install {' or '.join(wanted)} (pip), or " if wanted else ""
    what = f"its {syntax.name} pixel data" if syntax else "its pixel data"
    return (f"{path}: {what} cannot be decoded ({_short(err)}); "
            f"{install}convert it to uncompressed DICOM or PNG")


def _bits_stored(ds, raw: np.ndarray) -> int:
    return int(ds.get("BitsStored") or raw.dtype.itemsize * 8)


def dicom_display(raw: np.ndarray, ds) -> tuple[np.ndarray, tuple[float, float], str]:
    """(values after the modality LUT and VOI, the range the VOI maps to, which VOI was used).

    The range is the VOI's output range (VOI LUT entries, or the window's output as pydicom
    defines it) and without a VOI the stored bit depth through the modality LUT: a property of
    the file, never of this image's pixels. pydicom's rule applies: a VOI LUT before a window.
    """
    from pydicom.pixels import apply_modality_lut, apply_windowing

    values = apply_modality_lut(raw, ds)
    voi = ds.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        lut, first = voi_lut(voi[0], ds)
        index = np.clip(np.floor(values).astype(np.int64) - first, 0, len(lut) - 1)
        return lut[index].astype(np.float64), (float(lut.min()), float(lut.max())), "DICOM VOI LUT"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        ends = apply_windowing(np.array([-np.inf, np.inf]), ds)
        return apply_windowing(values, ds), (float(ends.min()), float(ends.max())), "DICOM window"
    bits = _bits_stored(ds, raw)
    stored = [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if ds.get("PixelRepresentation") == 1 else [0, 2 ** bits - 1]
    ends = apply_modality_lut(np.array(stored), ds)
    return values.astype(np.float64), (float(ends.min()), float(ends.max())), "DICOM BitsStored"


def voi_lut(item, ds) -> tuple[np.ndarray, int]:
    """(the VOI LUT's entries as int64, the first value it maps). pydicom's apply_voi indexes the
    LUT in the entries' own dtype, so with 8-bit entries stored value 256 wraps to index 0; here
    the lookup is done by the caller with wide indices (PS3.3 C.11.2.1.1: values below the first
    take the first entry, above the last the last)."""
    entries, first = int(item.LUTDescriptor[0]) or 2 ** 16, int(item.LUTDescriptor[1])
    data = item.LUTData
    if isinstance(data, bytes):  # OW: 16-bit words in the dataset's byte order, as pydicom reads them
        little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
        lut = np.frombuffer(data, dtype="<u2" if little else ">u2")
    else:  # US: a list of ints, or one int for a one-entry LUT
        lut = np.atleast_1d(np.asarray(data))
    lut = lut.astype(np.int64)[:entries]
    if len(lut) == 0:
        raise ValueError("VOI LUT Sequence has no LUT Data entries")
    return lut, first
