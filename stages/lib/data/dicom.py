"""DICOM films to one 8-bit gray channel (formats.load_gray calls load_dicom): pydicom, with GDCM for what it
cannot decode, the VOI LUT or window (without one, the robust range of the values present), padding shown
as background, MONOCHROME1 inverted; one-line refusals naming what a file lacks."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

from stages.lib.data.formats import GRAY_DICOM, BadImage, check_size


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
