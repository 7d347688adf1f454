"""Image file formats -> one 8-bit grayscale channel, plus the file facts the data report needs.

Every file's size is read from its header before any pixel is decoded (decompression bombs, films
too small to be X-rays); a file whose header cannot be read is refused rather than decoded to find out.
JPEG, PNG (8/16-bit, gray/RGB/RGBA), BMP and TIFF headers are read by Pillow and decoded by
OpenCV, turned upright by their EXIF orientation as every viewer shows them; transparent pixels (an
alpha channel or a PNG tRNS value) are composited on black. A 16-bit film is
scaled by its true bit depth: the PNG sBIT chunk where present, else the smallest of 8, 10, 12, 14
or 16 bits that holds its maximum, so a 12-bit export is not left nearly black. A MinIsWhite TIFF is
inverted at every depth (OpenCV does it for 8 bits only). DICOM is read by pydicom (python-gdcm
decodes JPEG Lossless, JPEG-LS and 12-bit JPEG): modality LUT (rescale slope/intercept), then the
VOI LUT or window, scaled by that output range (without one, by the robust range of the values
present, as a viewer shows it), padding black, MONOCHROME1 inverted so bone is bright in every
image; other photometrics (RGB, YBR, PALETTE COLOR) are refused.
A multi-frame DICOM or multi-page TIFF gives its first frame, and `frames` says how many it had.
No raster image is stretched to its own min/max: equal stored values give equal cached pixels.
"""

from __future__ import annotations

import os
import struct
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


def load_gray(
    path: str | os.PathLike, max_pixels: int = MAX_PIXELS, limit_name: str = "data.max_pixels"
) -> tuple[np.ndarray, dict]:
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
    if is_dicom(path, head):
        from stages.lib.data.dicom import load_dicom  # here: dicom.py builds on this module's checks

        gray, facts = load_dicom(path, limit)
    else:
        gray, facts = _load_raster(path, limit)
    facts["file_bytes"] = size
    return gray, facts


def check_size(path: Path, width: int, height: int, limit: tuple[int, str]) -> None:
    max_pixels, name = limit
    if width * height > max_pixels:
        raise BadImage(
            f"{path}: {width}x{height} = {width * height} pixels exceeds {name} "
            f"({max_pixels}); downscale the image or raise {name} if it is genuine",
            path,
        )
    if min(width, height) < MIN_SIDE:
        raise BadImage(
            f"{path}: {width}x{height} pixels, smaller than {MIN_SIDE} px on a side, is not a "
            "radiograph; replace or remove it",
            path,
        )


def article(name: str) -> str:
    """The article before a format's name: "an" where it starts with a vowel (AVIF, ICO, EPS), else "a" (GIF, WEBP)."""
    return "an" if name[:1].upper() in "AEIOU" else "a"


def _load_raster(path: Path, limit: tuple[int, str]) -> tuple[np.ndarray, dict]:
    try:  # Pillow reads the header only: size and orientation are known before decoding
        with Image.open(path) as im:
            fmt, (width, height), orientation = im.format, im.size, _orientation(im)
            frames = getattr(im, "n_frames", 1)  # TIFF pages: headers only
            min_is_white = fmt == "TIFF" and im.tag_v2.get(TIFF_PHOTOMETRIC) == MIN_IS_WHITE
            see_through = im.has_transparency_data  # an alpha channel, or a PNG tRNS colour
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(
            f"{path}: not a readable image (PNG, JPEG, BMP, TIFF or DICOM); replace or remove it", path
        ) from err
    if fmt not in RASTER_FORMATS:
        raise BadImage(f"{path}: {article(fmt)} {fmt} file, which is not read here; convert it to PNG", path)
    check_size(path, width, height, limit)
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.shape[:2] != (height, width):
        raise BadImage(
            f"{path}: {article(fmt)} {fmt} file that cannot be decoded (corrupt or truncated); replace or remove it",
            path,
        )
    channels = 1 if img.ndim == 2 else int(img.shape[2])
    gray, alpha = _to_gray(img, path), _alpha(img, path) if see_through else None
    if alpha is not None:
        gray[alpha == 0] = 0  # what no viewer shows does not set the bit depth
    gray = upright(gray, orientation)
    wide = gray.dtype == np.uint16
    gray, bits, scaled_by = to_uint8(gray, png_sbit(path) if fmt == "PNG" else None)
    if min_is_white and wide:  # OpenCV inverts an 8-bit MinIsWhite TIFF but hands 16 bits over raw
        gray = 255 - gray
    if alpha is not None:
        gray = on_black(gray, upright(alpha, orientation))
    facts = {
        "format": "JPEG" if fmt == "MPO" else fmt,
        "width": int(gray.shape[1]),
        "height": int(gray.shape[0]),
        "channels": channels,
        "bit_depth": bits,
        "scaled_by": scaled_by,
        "frames": frames if fmt == "TIFF" else 1,
        "transparent": alpha is not None and bool((alpha < np.iinfo(alpha.dtype).max).any()),
    }
    return gray, facts


def _alpha(img: np.ndarray, path: Path) -> np.ndarray:
    """The alpha channel as stored (0 = transparent): OpenCV's fourth channel, else Pillow's for what
    OpenCV drops (a gray+alpha TIFF, a gray PNG's tRNS value)."""
    if img.ndim == 3 and img.shape[2] == 4:
        return img[..., 3]
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA").getchannel("A"))
    except (OSError, ValueError) as err:
        raise BadImage(f"{path}: its transparency cannot be read ({err}); save it without transparency", path) from err


def on_black(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite on black, the background of a film shown bone bright (air, and DICOM padding here):
    a pixel shows `alpha / max` of its gray. A viewer shows transparent pixels alike whatever they
    hold, so the network must see them alike too."""
    opacity = alpha.astype(np.float64) / np.iinfo(alpha.dtype).max
    return np.round(gray * opacity).astype(np.uint8)


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
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        6: lambda a: np.rot90(a, -1),
        8: lambda a: np.rot90(a, 1),
    }
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
    if sbit is not None and top < 2**sbit:
        bits, source = sbit, "PNG sBIT"
    elif sbit is not None:
        bits, source = 16, "file depth"
    else:
        bits, source = next(b for b in DEPTHS if top < 2**b), "image maximum"
    return cv2.convertScaleAbs(gray, alpha=255 / (2**bits - 1)), bits, source


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
