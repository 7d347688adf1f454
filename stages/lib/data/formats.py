"""Image files -> one 8-bit grayscale channel, plus the file facts the data report needs: every input
format read, declared once in FORMATS (at the end: a record per format, or a Pillow name in RASTER_FORMATS).

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

import contextlib
import os
import struct
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stages.lib.core.errors import UserError
from stages.lib.params.schema import Data


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
# The raster formats Pillow reads the header of and OpenCV decodes, by Pillow's name -> the name a film's
# facts and the messages give (MPO: a phone's JPEG).
RASTER_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "TIFF": "TIFF"}
MAX_PIXELS = Data.model_fields["max_pixels"].default  # params.yaml's data.max_pixels default; predict's --max-pixels
HEAD = 132  # bytes read before choosing a decoder: a DICOM file's "DICM" ends there
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


@dataclass(frozen=True)
class InputFormat:
    """One kind of image file read here: the names it goes by (in the facts' `format` and the messages), which
    files it claims (from the path and the first HEAD bytes; None: every file no other format claims), and its
    decoder: (path, (max pixels, the param that sets it)) -> (uint8 gray [H, W], the file's facts)."""

    names: tuple[str, ...]
    claims: Callable[[Path, bytes], bool] | None
    load: Callable[[Path, tuple[int, str]], tuple[np.ndarray, dict]]


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
            head = f.read(HEAD)
        size = path.stat().st_size
    except OSError as err:
        raise BadImage(f"{path}: cannot be read ({err.strerror}); check it exists and is readable", path) from err
    if size == 0:
        raise BadImage(f"{path}: empty file; replace or remove it", path)
    gray, facts = decoder(path, head).load(path, (max_pixels, limit_name))
    facts["file_bytes"] = size
    return gray, facts


def decoder(path: Path, head: bytes) -> InputFormat:
    """The format that claims the file, else the one that takes every other file."""
    claimed = [f for f in FORMATS if f.claims is not None and f.claims(path, head)]
    return (claimed or [f for f in FORMATS if f.claims is None])[0]


def readable() -> str:
    """Every format read, in words: 'PNG, JPEG, BMP, TIFF or DICOM'."""
    names = [name for f in FORMATS for name in f.names]
    return ", ".join(names[:-1]) + " or " + names[-1]


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
        raise BadImage(f"{path}: not a readable image ({readable()}); replace or remove it", path) from err
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
        "format": RASTER_FORMATS[fmt],
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


# --- DICOM (pydicom, GDCM for what it cannot decode) -------------------------------------------------------


def load_dicom(path: Path, limit: tuple[int, str]) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import JPEGExtended12Bit

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (InvalidDicomError, AttributeError, OSError, ValueError, TypeError) as err:
        raise BadImage(
            f"{path}: not a readable DICOM image ({err.__class__.__name__}); replace or remove it", path
        ) from err
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GRAY_DICOM:  # PALETTE COLOR's values are palette indices, not intensities
        what = f"colour DICOM ({photometric})" if photometric else "DICOM without a PhotometricInterpretation"
        raise BadImage(f"{path}: {what}; export it as grayscale (MONOCHROME2)", path)
    check_size(path, cols, rows, limit)
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
        raise BadImage(
            f"{path}: DICOM pixel data of shape {raw.shape}, not one gray frame; export it as single-frame grayscale",
            path,
        )
    gray, scaled_by = _shown(path, raw, ds, photometric)
    facts = {
        "format": "DICOM",
        "width": cols,
        "height": rows,
        "channels": 1,
        "bit_depth": _bits_stored(ds, raw),
        "scaled_by": scaled_by,
        "frames": frames,
        "patient_id": str(ds.get("PatientID", "")).strip() or None,
    }
    return gray, facts


def _shown(path: Path, raw: np.ndarray, ds, photometric: str) -> tuple[np.ndarray, str]:
    """(the film as uint8 with bone bright and padding black, which range scaled it)."""
    try:
        pad = padding(raw, ds)
        if pad is not None and pad.all():
            raise BadImage(
                f"{path}: every pixel is padding (PixelPaddingValue {ds.PixelPaddingValue}), no film; "
                "replace or remove it",
                path,
            )
        values, (lo, hi), scaled_by = dicom_display(raw, ds, pad)
    except (ValueError, TypeError, AttributeError, NotImplementedError, IndexError) as err:  # a malformed module
        raise BadImage(
            f"{path}: DICOM values cannot be displayed ({_short(err)}); fix its window/VOI LUT or padding value, "
            "or export it as PNG",
            path,
        ) from err
    scale = 0.0 if hi <= lo else 255 / (hi - lo)
    gray = np.clip(np.round((values - lo) * scale), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; flip so every film shows bone bright
    if pad is not None:
        gray[pad] = 0  # background: black, as PS3.3 recommends padding be shown
    return gray, scaled_by


def padding(raw: np.ndarray, ds) -> np.ndarray | None:
    """Where the stored values are padding, not film (PS3.3 C.7.5.1.1.2): equal to Pixel Padding Value
    or, with Pixel Padding Range Limit, between the two inclusive; compared before the modality LUT.
    None without padding."""
    first = ds.get("PixelPaddingValue")
    if first is None:
        return None
    bits = _bits_stored(ds, raw)
    limit = ds.get("PixelPaddingRangeLimit", first)
    lo, hi = sorted(_as_stored(int(v), ds, bits) for v in (first, limit))
    pad = (raw >= lo) & (raw <= hi)
    return pad if pad.any() else None


def _as_stored(value: int, ds, bits: int) -> int:
    """A padding value as the pixel array holds it: in a signed image, a value a writer put as US (its
    two's complement, e.g. 63536 for -2000) is read back in the image's BitsStored."""
    if ds.get("PixelRepresentation") != 1 or value < 2 ** (bits - 1):
        return value
    value &= 2**bits - 1
    return value - 2**bits if value >= 2 ** (bits - 1) else value


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
    return values[: rows * cols].reshape(rows, cols)


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
    wanted = sorted(
        {
            req.split(" - requires ", 1)[-1].replace("gdcm>=", "python-gdcm>=").replace("numpy and ", "")
            for req in missing
            if " - requires " in req and "pylibjpeg-libjpeg" not in req
        }
    )  # pylibjpeg-libjpeg is GPL: not offered
    install = f"install {' or '.join(wanted)} (pip), or " if wanted else ""
    what = f"its {syntax.name} pixel data" if syntax else "its pixel data"
    return f"{path}: {what} cannot be decoded ({_short(err)}); {install}convert it to uncompressed DICOM or PNG"


def _bits_stored(ds, raw: np.ndarray) -> int:
    return int(ds.get("BitsStored") or raw.dtype.itemsize * 8)


ROBUST_PERCENTILES = (0.5, 99.5)  # the range of a film without a VOI: a few hot or dead pixels do not set it
VALUES_PRESENT = "DICOM values present"  # its scaled_by


def dicom_display(raw: np.ndarray, ds, pad: np.ndarray | None = None) -> tuple[np.ndarray, tuple[float, float], str]:
    """(values after the modality LUT and VOI, the range the VOI maps to, which range that is).

    With a VOI the range is its output range (VOI LUT entries, or the window's output as pydicom
    defines it), a property of the file; pydicom's rule applies: a VOI LUT before a window.
    Without one (raw detector output) it is what a viewer shows: the values present, padding
    (`pad`) left out, from the stored value at the 0.5th percentile to the one at the 99.5th (those
    nnU-Net clips CT values to), through the modality LUT. Selected among the stored integers,
    which is 4-8x faster than among the float values (0.1 s for 9 MP here).
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
    stored = np.percentile(raw if pad is None else raw[~pad], ROBUST_PERCENTILES, method="nearest")
    ends = apply_modality_lut(stored, ds)  # a rescale with a negative slope swaps them
    return values.astype(np.float64), (float(ends.min()), float(ends.max())), VALUES_PRESENT


def voi_lut(item, ds) -> tuple[np.ndarray, int]:
    """(the VOI LUT's entries as int64, the first value it maps). pydicom's apply_voi indexes the
    LUT in the entries' own dtype, so with 8-bit entries stored value 256 wraps to index 0; here
    the lookup is done by the caller with wide indices (PS3.3 C.11.2.1.1: values below the first
    take the first entry, above the last the last)."""
    entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
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


# Every input format, declared once (the decoders above): a file goes to the format that claims it, else to
# the raster one. A format OpenCV decodes is one more name in RASTER_FORMATS; any other, a record here.
FORMATS = (
    InputFormat(tuple(dict.fromkeys(RASTER_FORMATS.values())), None, _load_raster),
    InputFormat(("DICOM",), is_dicom, load_dicom),
)
